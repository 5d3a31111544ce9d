"""`python -m bench [--smoke] [--out DIR] [--profile SECONDS]`: run every scenario.

Starts Postgres, Redis, a Ray head and one `fission serve`, plus the mall baseline and the
raw echo/broadcast server; drives them from two load-generator processes; prints the
tables, writes `results.json` and `latency.png` into the out dir. Exits non-zero when an
invariant breaks (an over-full group, oversold stock, a cut below a bargain's floor, a
bargain's price not its list price less its cuts, a helper twice in a bargain, a lottery
prize won more often than its stock, a paid member without exactly one order, a held seat
never released, an ack not in Postgres, a leaderboard whose scores are not its orders'
sums, a ledger the pipeline mix's refunds left unsound) or nothing worked; speed is
reported, never asserted. The lottery, the held seats, the leaderboard and the pipeline
mix (grades and refunds while deals flow) each run on a Fission deployment of their own,
started for their scenario (see `bench.stack.LOTTERY_CAMPAIGN`, `HOLDS_CAMPAIGN`, `BOARD`
and `MIX_CAMPAIGNS`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil

from bench import boards, checks, holds, mall_baseline, mix, raw, report, scrape
from bench import profile as profiler
from bench.clients import HttpClient, fission_route, now_ms, token
from bench.loadgen import SPREAD, Generators
from bench.stack import (
    BARGAIN_CAMPAIGN,
    BARGAIN_FLOOR_PRICE,
    BARGAIN_LIST_PRICE,
    BOARD,
    BOARD_DEAL_CAMPAIGNS,
    BOARD_SELLERS,
    DEAL_CAMPAIGNS,
    DEAL_SIZE,
    FAN_CAMPAIGN,
    FAN_SIZE,
    HELPERS_TO_FLOOR,
    HOLDS_CAMPAIGN,
    LOTTERY_CAMPAIGN,
    LOTTERY_FREE_DRAWS,
    LOTTERY_PRIZES,
    LOTTERY_ZONE,
    MIX_CAMPAIGNS,
    SECRET,
    STORM_CAMPAIGN,
    STORM_SIZE,
    Process,
    Stack,
    pg,
    prepare_database,
    services,
    spawn,
    wait_http,
)
from tests.support.stack import RayHead, free_port, ray_head

TEAM_SIZE = STORM_SIZE + 2  # a leader, then S+1 racing for S-1 places
# The bargain's teams: an initiator, then H+2 helpers racing for the H helps to the floor.
BARGAIN_TEAM = HELPERS_TO_FLOOR + 3
GENERATORS = 2


@dataclass(frozen=True)
class Plan:
    mode: str
    levels: tuple[int, ...]  # teams per storm run
    duration: float  # seconds per storm run
    paced_fraction: float  # the paced run offers this share of the peak
    fan_sizes: tuple[int, ...]
    fan_groups: int  # hot groups filled per socket count
    fan_timeout: float
    insert_seconds: float
    drain_timeout: float
    deal_teams: int = 256  # pairs in the deal scenario
    deal_rate: int = 1000  # deals/s of the paced deal run (the pipeline target's rate)
    # The open-loop sweep: offered cmds/s, lowest first, by this many teams.
    sweep_rates: tuple[int, ...] = (250, 500, 1000, 2000, 3000, 4000, 5000)
    sweep_teams: int = 256
    # The bargain help storm: teams (bargains helped at once) per level, seconds per run.
    bargain_levels: tuple[int, ...] = (1, 4, 16)
    bargain_duration: float = 8.0
    # The lottery draw storm: users drawing at once per level (each its own socket or
    # client), seconds per run. At least 64: fewer users flat out against Fission could
    # use up a day's 1000 free draws each within one run.
    lottery_levels: tuple[int, ...] = (64, 256, 1024)
    lottery_duration: float = 8.0
    # The held seats: users each opening a group (a leader's seat held, never paid), the
    # opens in flight at once, each hold's length (long enough for every open to be made
    # within it, so all are pending together), and how long after the holds' end their
    # releases may take before the run gives up waiting. 60 s: 10,000 opens took 40 s on
    # the shared 2-core machine (about 250 opens/s: each creates its payment at the
    # sandbox provider), and 30 s left a sixth of them opened after the first hold ended.
    holds: int = 10_000
    holds_concurrency: int = 64
    hold_seconds: int = 60
    holds_settle: float = 120.0
    # The leaderboard: homepage sockets watching the board while deal pairs (this many
    # teams) are paced at `board_rate` deals/s for `board_seconds`; how long after the
    # deals the board may take to show their last scores before the run gives up waiting.
    board_sockets: int = 5000
    board_rate: int = 1000
    board_teams: int = 256
    board_seconds: float = 10.0
    board_settle: float = 60.0
    # The pipeline mix (the deal scenario's third run, on a deployment of its own): deal
    # pairs paced at `deal_rate` for `mix_seconds` while a share of the orders (one in
    # `mix_every` of each kind, see bench.mix) is refunded in pieces and after sales,
    # under a return window of `mix_window` s so that commissions settle (grades
    # judged) while deals flow; `mix_settle` bounds the wait for the last settlements.
    mix_seconds: float = 20.0
    mix_window: int = 5
    mix_every: int = 50
    mix_settle: float = 60.0
    scenarios: tuple[str, ...] = ("storm", "sweep", "deals", "fanout", "bargain", "lottery",
                                  "holds", "boards", "inserts")
    systems: tuple[str, ...] = ("fission_ws", "fission_http", "mall", "echo")
    gateways: int = 1  # Fission gateway processes (on 2 cores, two did worse than one)


@dataclass(frozen=True)
class Measured:
    """One measured run of the prepared teams.

    `load_1m` is the machine's 1-minute load average as it began (this bench's own
    processes included); `others_cores` the cores the machine was busy with during it
    beyond what this bench's processes used: other work on the machine, the noise.
    """

    start_at: float  # epoch s of the shared start line
    outs: list[Any]  # each generator's answer
    cpu: dict[str, float]  # cores used per role
    server: dict[str, float]  # what Fission's /metrics say happened (empty for others)
    load_1m: float
    others_cores: float


SCENARIOS = ("storm", "sweep", "deals", "mix", "fanout", "bargain", "lottery", "holds",
             "boards", "inserts")
BARGAIN_SYSTEMS = ("fission_ws", "fission_http", "mall")  # no echo: it has no bargain
LOTTERY_SYSTEMS = BARGAIN_SYSTEMS  # nor a lottery
SWEPT = ("fission_ws", "mall")  # the systems the open-loop sweep compares
SATURATED = 0.9  # a sweep point acking less than this share of its offered load
FULL = Plan("full", (4, 16, 64, 256), 8.0, 0.5, (1000, 5000), 3, 90.0, 3.0, 120.0)
SMOKE = Plan("smoke", (2, 8), 2.0, 0.5, (200,), 1, 20.0, 0.5, 30.0, deal_teams=8,
             deal_rate=40, sweep_rates=(40, 80), sweep_teams=8, bargain_levels=(1,),
             bargain_duration=0.5, lottery_levels=(8,), lottery_duration=0.5, holds=200,
             holds_concurrency=16, hold_seconds=3, holds_settle=30.0, board_sockets=100,
             board_rate=40, board_teams=8, board_seconds=2.0, board_settle=20.0,
             mix_seconds=6.0, mix_window=2, mix_every=5, mix_settle=30.0)


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": platform.python_version(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "platform": platform.platform()}


class Bench:
    """One run: the servers, the generators, and what they measured."""

    def __init__(self, stack: Stack, head: RayHead, plan: Plan, out: Path,
                 profile_seconds: int) -> None:
        self.stack = stack
        self.head = head
        self.plan = plan
        self.out = out
        self.profile_seconds = profile_seconds
        self.acked = 0  # successful opens and joins Fission acknowledged
        # Acknowledged helps as (bargain, helper, cut): Fission's (both transports), the mall's.
        self.helps_acked: dict[str, list[tuple[str, str, int]]] = {"fission": [], "mall": []}
        # Acknowledged draws as (draw, user, prize): Fission's (both transports), the mall's.
        self.draws_acked: dict[str, list[tuple[str, str, str]]] = {"fission": [], "mall": []}
        self.lottery_gateway: Process | None = None  # the lottery deployment's, while up
        self.holds_acked = 0  # opens the held-seat deployment acknowledged
        self.boards_gateway: Process | None = None  # the boards deployment's, while up
        self.mix_gateway: Process | None = None  # the pipeline mix deployment's, while up
        self.results: dict[str, Any] = {"mode": plan.mode, "machine": machine(),
                                        "load_at_start": os.getloadavg(),
                                        "team_size": TEAM_SIZE,
                                        "storm": []}

    # --- set-up ------------------------------------------------------------------------

    async def start_servers(self) -> None:
        stack = self.stack
        conn = await pg(stack.database_url)
        try:
            await mall_baseline.setup(conn, STORM_CAMPAIGN, STORM_SIZE, 10_000_000)
            await mall_baseline.setup_bargain(conn, BARGAIN_CAMPAIGN, BARGAIN_LIST_PRICE,
                                              BARGAIN_FLOOR_PRICE, HELPERS_TO_FLOOR)
            await mall_baseline.setup_lottery(conn, LOTTERY_CAMPAIGN, LOTTERY_FREE_DRAWS,
                                              LOTTERY_PRIZES, LOTTERY_ZONE)
        finally:
            await conn.close()
        self.gateways = stack.start_gateways(self.head.address, self.plan.gateways)
        self.gateway = self.gateways[0]
        mall_port = free_port()
        self.malls = []
        for n in range(2):  # two processes on one port (SO_REUSEPORT), one per core
            process = spawn(f"mall-{n}", ["-m", "bench.mall_baseline", "--dsn",
                                          stack.database_url, "--secret", SECRET,
                                          "--port", str(mall_port)], stack.tmp, mall_port)
            stack.others.append(process)
            self.malls.append(process)
        self.raw = stack.start("raw", ["-m", "bench.raw"])
        await asyncio.gather(*(wait_http(g, timeout=120) for g in self.gateways),
                             wait_http(self.raw),
                             *(wait_http(m) for m in self.malls))

    def urls(self, system: str) -> tuple[str, list[str]]:
        """(generator client kind, URLs) for a system under test.

        The mall's processes share one port (SO_REUSEPORT); Fission's gateways each have
        their own, so each can be scraped, and generator i drives gateway i mod n: the
        same share of the clients a load balancer would give each. While the lottery
        deployment (or the boards one) is up, Fission's URLs are its gateway's.
        """
        side = self.lottery_gateway or self.boards_gateway or self.mix_gateway
        if side is not None and system.startswith("fission"):
            gateway = side
            return ("ws", [gateway.ws_url]) if system == "fission_ws" else (
                "fission_http", [gateway.url])
        return {
            "fission_ws": ("ws", [g.ws_url for g in self.gateways]),
            "fission_http": ("fission_http", [g.url for g in self.gateways]),
            "mall": ("mall", [self.malls[0].url]),
            "echo": ("ws", [self.raw.ws_url]),
        }[system]

    # --- a-c: join storm ---------------------------------------------------------------

    async def storm(self, gens: Generators, system: str, teams: int, duration: float,
                    interval: float | None = None, campaigns: tuple[str, ...] = (STORM_CAMPAIGN,),
                    team_size: int = TEAM_SIZE, tag: str = "", referrals: bool = False,
                    referrers: tuple[str, ...] = ()) -> dict[str, Any]:
        """Teams loop open → joins for `duration`; generator i plays campaigns[i mod n].

        With `referrals`, every member was brought in by someone first; with `referrers`,
        by one of those (see storm_prepare). Acknowledged commands count towards the main
        deployment's checks only while no deployment of a scenario's own is up.
        """
        kind, urls = self.urls(system)
        prefix = f"{system.replace('_', '')}{tag}{teams}{'p' if interval else ''}"
        await gens.each("storm_prepare", [
            {"kind": kind, "url": urls[i % len(urls)], "secret": SECRET,
             "campaign": campaigns[i % len(campaigns)], "teams": n, "team_size": team_size,
             "prefix": prefix, "referrals": referrals, "referrers": list(referrers)}
            for i, n in enumerate(split(teams, len(gens)))])
        run = await self._measured(gens, system, "storm_run", duration, interval)
        start_at, outs = run.start_at, run.outs
        await gens.all("storm_close")
        lat = report.latencies(o["latencies"] for o in outs)
        elapsed = max(o["elapsed"] for o in outs)
        ok = sum(o["opens"] + o["joins"] for o in outs)
        codes = report.merge_counts(o["codes"] for o in outs)
        fission = system.startswith("fission")
        if fission and not (self.lottery_gateway or self.boards_gateway or self.mix_gateway):
            self.acked += ok
        return {"system": system, "teams": teams, "ops_per_s": ok / elapsed,
                "ok": ok, "rounds": sum(o["rounds"] for o in outs), "calls": len(lat),
                "p50_ms": report.percentile(lat, 0.50), "p99_ms": report.percentile(lat, 0.99),
                "codes": codes, "seconds": elapsed, "since": start_at, "cpu": run.cpu,
                "server": run.server, "load_1m": run.load_1m, "others_cores": run.others_cores,
                "until": start_at + elapsed}

    async def _measured(self, gens: Generators, system: str, command: str, duration: float,
                        interval: float | None) -> Measured:
        """Run the prepared teams' `command` on every generator from a shared start line,
        with the cores each role used, the machine's load and (for Fission) what the
        server's /metrics say it did."""
        start_at = time.time() + 0.3
        roots = {"bench driver": os.getpid()}
        marker = str(self.stack.tmp)
        fission = system.startswith("fission")
        side = self.lottery_gateway or self.boards_gateway or self.mix_gateway
        gateway_urls = [g.url for g in ([side] if side else self.gateways)]
        served = await scrape.metrics(gateway_urls) if fission else None
        redis = profiler.redis_marker(self.stack.redis_url)
        load = os.getloadavg()[0]
        busy_before = profiler.busy_seconds()
        cpu_before = profiler.cpu_seconds(roots, marker, redis)
        outs = await gens.all(command, start_at=start_at, duration=duration,
                              round_interval=interval, timeout=duration + 60)
        seconds = time.time() - start_at + 0.3
        busy = (profiler.busy_seconds() - busy_before) / seconds
        cpu = profiler.cpu_share(cpu_before, profiler.cpu_seconds(roots, marker, redis),
                                 seconds)
        server = scrape.explain(served, await scrape.metrics(gateway_urls)) if served else {}
        return Measured(start_at, outs, cpu, server, round(load, 2),
                        round(max(0.0, busy - sum(cpu.values())), 2))

    async def storms(self, gens: Generators) -> None:
        plan = self.plan
        for teams in plan.levels:
            for system in plan.systems:
                result = await self.storm(gens, system, teams, plan.duration)
                self.results["storm"].append(result)
                print(f"  storm {system:>12} {teams:>3} teams: {result['ops_per_s']:8.0f}"
                      f" cmds/s  p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms"
                      f"  {result['codes']} {_rounded(result['server'])} {_load(result)}",
                      flush=True)
        fission = [r for r in self.results["storm"] if r["system"] == "fission_ws"]
        peak = max(fission, key=lambda r: r["ops_per_s"])
        target = plan.paced_fraction * peak["ops_per_s"]
        ops_per_round = STORM_SIZE  # one open and S-1 successful joins
        interval = peak["teams"] * ops_per_round / max(target, 1.0)
        paced = await self.storm(gens, "fission_ws", peak["teams"], plan.duration, interval)
        paced.update(target_fraction=plan.paced_fraction, target_ops_per_s=target)
        self.results["storm_paced"] = paced
        print(f"  paced fission_ws at {target:.0f} cmds/s: {paced['ops_per_s']:.0f} cmds/s,"
              f" p99 {paced['p99_ms']:.1f} ms {_load(paced)}", flush=True)

    async def sweep(self, gens: Generators) -> None:
        """Ack latency against offered load (an open loop) for Fission /ws and the mall.

        Each rate is offered by `sweep_teams` teams of new users, each team starting a
        round every `interval`; a system's sweep ends at its first saturated rate (acking
        under 90% of the offer: its queue would only grow with the rate).
        """
        plan = self.plan
        teams = plan.sweep_teams
        self.results["sweep"] = []
        for system in (s for s in SWEPT if s in plan.systems):
            for rate in plan.sweep_rates:
                interval = teams * STORM_SIZE / rate  # STORM_SIZE acked commands a round
                # A prefix of its own per rate: new users, so no idempotency key repeats.
                r = await self.storm(gens, system, teams, plan.duration, interval,
                                     tag=f"sw{rate}-")
                r.update(offered_ops_per_s=rate,
                         saturated=r["ops_per_s"] < SATURATED * rate)
                self.results["sweep"].append(r)
                print(f"  sweep {system:>12} offered {rate:5d} cmds/s: acked"
                      f" {r['ops_per_s']:6.0f}  p50 {r['p50_ms']:7.1f} ms"
                      f"  p99 {r['p99_ms']:7.1f} ms{'  (saturated)' if r['saturated'] else ''}",
                      flush=True)
                if r["saturated"]:
                    break

    async def verify(self) -> None:
        conn = await pg(self.stack.database_url)
        try:
            fission = [r for r in self.results["storm"] if r["system"] == "fission_ws"]
            if fission:
                peak = max(fission, key=lambda r: r["ops_per_s"])
                self.results["pipeline"] = await self._pipeline(conn, peak, (STORM_CAMPAIGN,))
            self.results["invariants"] = await checks.invariants(conn, self.acked)
            self.results["mall_invariants"] = await mall_baseline.check(conn, STORM_CAMPAIGN)
        finally:
            await conn.close()

    async def _pipeline(self, conn: Any, run: dict[str, Any], campaigns: tuple[str, ...]
                        ) -> dict[str, Any]:
        """Once the outbox drained: the deals `run` made in `campaigns`, and their lag."""
        drain = await checks.wait_drained(conn, self.plan.drain_timeout)
        pipe = await checks.pipeline(conn, run["since"], run["until"], campaigns)
        pipe.update(drain_seconds=drain, teams=run["teams"])
        return pipe

    # --- e: deals through the pipeline ------------------------------------------------------

    async def deals(self, gens: Generators) -> None:
        """Pairs (an open, then one join) on size-2 campaigns, one per shard: every round
        is a deal. Flat out, so the pipeline sees the highest deal rate the stack can
        make; then paced at `deal_rate`, the rate the pipeline's lag target is set at."""
        plan = self.plan
        for key, interval in (("pipeline_deals", None),
                              ("pipeline_deals_paced", plan.deal_teams / plan.deal_rate)):
            result = await self.storm(gens, "fission_ws", plan.deal_teams, plan.duration,
                                      interval=interval, campaigns=DEAL_CAMPAIGNS,
                                      team_size=DEAL_SIZE, tag="deal", referrals=True)
            print(f"  deals{' paced' if interval else ''}:"
                  f" {result['rounds'] / result['seconds']:.0f} deals/s"
                  f" ({result['ops_per_s']:.0f} cmds/s, p99 {result['p99_ms']:.1f} ms)"
                  f" {_rounded(result['server'])}", flush=True)
            conn = await pg(self.stack.database_url)
            try:
                pipe = await self._pipeline(conn, result, DEAL_CAMPAIGNS)
            finally:
                await conn.close()
            pipe.update(storm=result, source="deal pairs on one campaign per shard",
                        offered_deals_per_s=plan.deal_rate if interval else None)
            self.results[key] = pipe
            print(f"  pipeline: {pipe['deals_per_s']:.0f} deals/s, {pipe['commissions']}"
                  f" commissions, lag p99 {pipe['lag_p99_ms']:.0f} ms", flush=True)

    async def pipeline_mix(self, gens: Generators) -> None:
        """The pipeline mix on its deployment (see `bench.stack.MIX_CAMPAIGNS`): deal pairs
        paced at `deal_rate` for `mix_seconds`, two levels of bound buyers, while
        `bench.mix.Refunder` refunds a share of the orders in pieces and after sales;
        then, once the outbox drained and every due commission settled, the deal →
        ledger lag, what the mix did (grade changes, refunds, debts) and the ledger's
        invariants; then the deployment's gateway stops."""
        plan = self.plan
        await prepare_database(self.stack.mix_database_url)
        gateway = self.stack.start_mix(self.head.address, plan.mix_window)
        try:
            await wait_http(gateway, timeout=120)
            self.mix_gateway = gateway
            pool = await asyncpg.create_pool(self.stack.mix_database_url, min_size=1,
                                             max_size=4)
            try:
                refunder = mix.Refunder(pool, gateway.url, SECRET, MIX_CAMPAIGNS,
                                        plan.mix_every)
                stop = asyncio.Event()
                # After the deals: a window for the last orders to settle, then slack.
                refunding = asyncio.create_task(refunder.run(
                    stop, plan.mix_window + plan.mix_settle))
                try:
                    run = await self.storm(gens, "fission_ws", plan.deal_teams,
                                           plan.mix_seconds,
                                           interval=plan.deal_teams / plan.deal_rate,
                                           campaigns=MIX_CAMPAIGNS, team_size=DEAL_SIZE,
                                           tag="mix", referrals=True)
                finally:
                    stop.set()
                    await refunding
                async with pool.acquire() as conn:
                    pipe = await self._pipeline(conn, run, MIX_CAMPAIGNS)
                    settle_wait = await mix.wait_settled(conn, plan.mix_window
                                                         + plan.mix_settle)
                    await checks.wait_drained(conn, plan.drain_timeout)
                    did = await mix.figures(conn)
                    invariants = await mix.invariants(conn)
            finally:
                await pool.close()
        finally:
            self.mix_gateway = None
            self.stack.stop_mix()
        pipe.update(storm=run, source="deal pairs with grades and refunds in the mix",
                    offered_deals_per_s=plan.deal_rate, window_seconds=plan.mix_window,
                    refund_every=plan.mix_every, refund_pieces=refunder.pieces,
                    refund_codes=dict(refunder.codes), settle_wait_seconds=settle_wait,
                    invariants=invariants, **did)
        self.results["pipeline_mix"] = pipe
        refunds = did["refunds"]
        print(f"  pipeline mix: {pipe['deals_per_s']:.0f} deals/s (offered"
              f" {plan.deal_rate}), lag p50 {pipe['lag_p50_ms']:.0f} / p99"
              f" {pipe['lag_p99_ms']:.0f} ms; {did['grade_changes']} grade changes"
              f" {did['grades_reached']}; refund pieces {refunds}; debt incurred"
              f" {did['debt_incurred_fen']} fen, {did['users_in_debt']} users owing"
              f" {did['debt_owed_fen']} fen; {did['withdrawals']} withdrawals"
              f" {_load(run)}", flush=True)
        print(f"  pipeline mix refunds: {dict(refunder.codes)}", flush=True)
        print("  pipeline mix checks: " + ", ".join(
            f"{k} {invariants[k]}" for k in mix.BROKEN), flush=True)

    # --- f: bargain help storm -------------------------------------------------------------

    async def help_storm(self, gens: Generators, system: str, teams: int, duration: float,
                         interval: float | None = None, spread: bool = False) -> dict[str, Any]:
        """Teams of BARGAIN_TEAM users loop start → every other member helps at once, for
        `duration` (one round per team every `interval` when paced; with `spread`, a
        round's helpers arrive one by one within it); generator i plays half the teams.
        Helps are counted and timed; starts only counted."""
        kind, urls = self.urls(system)
        prefix = (f"bg{system.replace('_', '')}{teams}{'p' if interval else ''}"
                  f"{'s' if spread else ''}")
        await gens.each("storm_prepare", [
            {"kind": kind, "url": urls[i % len(urls)], "secret": SECRET,
             "campaign": BARGAIN_CAMPAIGN, "teams": n, "team_size": BARGAIN_TEAM,
             "prefix": prefix} for i, n in enumerate(split(teams, len(gens)))])
        command = "bargain_run_spread" if spread else "bargain_run"
        run = await self._measured(gens, system, command, duration, interval)
        start_at, outs = run.start_at, run.outs
        await gens.all("storm_close")
        lat = report.latencies(o["latencies"] for o in outs)
        elapsed = max(o["elapsed"] for o in outs)
        helps = sum(o["helps"] for o in outs)
        for o in outs:
            self.helps_acked["mall" if system == "mall" else "fission"] += o["acked"]
        return {"system": system, "teams": teams, "sockets": teams * BARGAIN_TEAM,
                "helps_per_s": helps / elapsed, "helps": helps,
                "starts": sum(o["starts"] for o in outs),
                "rounds": sum(o["rounds"] for o in outs),
                "floors": sum(o["floors"] for o in outs),
                "below_floor_seen": sum(o["below_floor"] for o in outs), "calls": len(lat),
                "p50_ms": report.percentile(lat, 0.50), "p99_ms": report.percentile(lat, 0.99),
                "codes": report.merge_counts(o["codes"] for o in outs), "seconds": elapsed,
                "since": start_at, "until": start_at + elapsed, "cpu": run.cpu,
                "server": run.server, "load_1m": run.load_1m, "others_cores": run.others_cores}

    async def bargains(self, gens: Generators) -> None:
        """Contended helps per second at each level, Fission (/ws, HTTP) against the mall;
        then Fission /ws paced at a fraction of its peak twice, each round's helpers at
        once and then arriving spread out (the p99 target's load); then the invariants in
        Postgres."""
        plan = self.plan
        self.results["bargain"] = []
        systems = [s for s in BARGAIN_SYSTEMS if s in plan.systems]
        for teams in plan.bargain_levels:
            for system in systems:
                r = await self.help_storm(gens, system, teams, plan.bargain_duration)
                self.results["bargain"].append(r)
                print(f"  bargain {system:>12} {teams:>3} teams: {r['helps_per_s']:8.0f}"
                      f" helps/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                      f"  {r['codes']} {_rounded(r['server'])} {_load(r)}", flush=True)
        peak = max((r for r in self.results["bargain"] if r["system"] == "fission_ws"),
                   key=lambda r: r["helps_per_s"])
        target = plan.paced_fraction * peak["helps_per_s"]
        # A round's acknowledged helps are the helpers to the floor.
        interval = peak["teams"] * HELPERS_TO_FLOOR / max(target, 1.0)
        # Paced twice at the same rate: each round's helpers all at once (a burst of
        # BARGAIN_TEAM - 1 on one bargain in one instant, far above the peak while it
        # lasts), then arriving one by one within the round (the p99 target's load).
        for key, spread in (("bargain_paced", False), ("bargain_paced_spread", True)):
            paced = await self.help_storm(gens, "fission_ws", peak["teams"],
                                          plan.bargain_duration, interval, spread)
            paced.update(target_fraction=plan.paced_fraction, target_helps_per_s=target,
                         arrivals="spread" if spread else "burst",
                         **({"arrival_share": SPREAD} if spread else {}))
            self.results[key] = paced
            print(f"  bargain paced fission_ws ({paced['arrivals']}) at {target:.0f} helps/s:"
                  f" {paced['helps_per_s']:.0f} helps/s, p99 {paced['p99_ms']:.1f} ms"
                  f" {_load(paced)}", flush=True)
        conn = await pg(self.stack.database_url)
        try:
            await checks.load_acked(conn, "fission_acked", self.helps_acked["fission"])
            await checks.load_acked(conn, "mall_acked", self.helps_acked["mall"])
            self.results["bargain_invariants"] = await checks.bargains(
                conn, BARGAIN_CAMPAIGN, "fission_acked")
            self.results["mall_bargain_invariants"] = await mall_baseline.check_bargains(
                conn, BARGAIN_CAMPAIGN, "mall_acked")
        finally:
            await conn.close()
        print(f"  bargain checks: Fission {self.results['bargain_invariants']};"
              f" mall {self.results['mall_bargain_invariants']}", flush=True)

    # --- g: lottery draw storm -------------------------------------------------------------

    async def start_lottery(self) -> None:
        """The lottery deployment: its database prepared, its gateway up (see
        `bench.stack.LOTTERY_CAMPAIGN` for why it is a deployment of its own)."""
        await prepare_database(self.stack.lottery_database_url)
        gateway = self.stack.start_lottery(self.head.address)
        await wait_http(gateway, timeout=120)
        self.lottery_gateway = gateway

    async def draw_storm(self, gens: Generators, system: str, users: int, duration: float,
                         interval: float | None = None) -> dict[str, Any]:
        """`users` users, each with their own socket or client, draw in a loop on the one
        lottery campaign for `duration` (one draw each every `interval` when paced);
        generator i plays half of them. Every draw is counted and timed."""
        kind, urls = self.urls(system)
        prefix = f"lt{system.replace('_', '')}{users}{'p' if interval else ''}"
        await gens.each("storm_prepare", [
            {"kind": kind, "url": urls[i % len(urls)], "secret": SECRET,
             "campaign": LOTTERY_CAMPAIGN, "teams": n, "team_size": 1, "prefix": prefix}
            for i, n in enumerate(split(users, len(gens)))])
        run = await self._measured(gens, system, "lottery_run", duration, interval)
        start_at, outs = run.start_at, run.outs
        await gens.all("storm_close")
        lat = report.latencies(o["latencies"] for o in outs)
        elapsed = max(o["elapsed"] for o in outs)
        draws = sum(o["draws"] for o in outs)
        for o in outs:
            self.draws_acked["mall" if system == "mall" else "fission"] += o["acked"]
        return {"system": system, "users": users, "draws_per_s": draws / elapsed,
                "draws": draws, "calls": len(lat), "stopped": sum(o["stopped"] for o in outs),
                "won": report.merge_counts(o["won"] for o in outs),
                "p50_ms": report.percentile(lat, 0.50), "p99_ms": report.percentile(lat, 0.99),
                "codes": report.merge_counts(o["codes"] for o in outs), "seconds": elapsed,
                "since": start_at, "until": start_at + elapsed, "cpu": run.cpu,
                "server": run.server, "load_1m": run.load_1m, "others_cores": run.others_cores}

    async def lotteries(self, gens: Generators) -> None:
        """Acknowledged draws per second at each level, Fission (/ws, HTTP) against the
        mall; then Fission /ws paced at a fraction of its peak (the p99 target's load);
        then the invariants in both systems' Postgres tables; then the lottery
        deployment's gateway stops."""
        plan = self.plan
        await self.start_lottery()
        try:
            self.results["lottery"] = []
            systems = [s for s in LOTTERY_SYSTEMS if s in plan.systems]
            for users in plan.lottery_levels:
                for system in systems:
                    r = await self.draw_storm(gens, system, users, plan.lottery_duration)
                    self.results["lottery"].append(r)
                    print(f"  lottery {system:>12} {users:>4} users: {r['draws_per_s']:8.0f}"
                          f" draws/s  p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms"
                          f"  {r['codes']} {_rounded(r['server'])} {_load(r)}", flush=True)
            peak = max((r for r in self.results["lottery"] if r["system"] == "fission_ws"),
                       key=lambda r: r["draws_per_s"])
            target = plan.paced_fraction * peak["draws_per_s"]
            # Each user draws once per interval: the peak's users offer the target.
            interval = peak["users"] / max(target, 1.0)
            paced = await self.draw_storm(gens, "fission_ws", peak["users"],
                                          plan.lottery_duration, interval)
            paced.update(target_fraction=plan.paced_fraction, target_draws_per_s=target)
            self.results["lottery_paced"] = paced
            print(f"  lottery paced fission_ws at {target:.0f} draws/s:"
                  f" {paced['draws_per_s']:.0f} draws/s, p99 {paced['p99_ms']:.1f} ms"
                  f" {_load(paced)}", flush=True)
            await self._lottery_checks()
        finally:
            self.lottery_gateway = None
            self.stack.stop_lottery()

    async def _lottery_checks(self) -> None:
        """Both systems' lottery invariants, each in its own database."""
        conn = await pg(self.stack.lottery_database_url)
        try:
            await checks.load_draws(conn, "fission_draws", self.draws_acked["fission"])
            self.results["lottery_invariants"] = await checks.lotteries(
                conn, LOTTERY_CAMPAIGN, "fission_draws", LOTTERY_FREE_DRAWS)
        finally:
            await conn.close()
        conn = await pg(self.stack.database_url)
        try:
            await checks.load_draws(conn, "mall_draws", self.draws_acked["mall"])
            self.results["mall_lottery_invariants"] = await mall_baseline.check_lottery(
                conn, LOTTERY_CAMPAIGN, "mall_draws")
        finally:
            await conn.close()
        print(f"  lottery checks: Fission {self.results['lottery_invariants']};"
              f" mall {self.results['mall_lottery_invariants']}", flush=True)

    # --- h: held seats ---------------------------------------------------------------------

    async def held_seats(self, gens: Generators) -> None:
        """`holds` users each open a group of the holds campaign (their leader's seat held
        for payment, never paid) on the held-seat deployment, as fast as
        `holds_concurrency` opens in flight allow; then, once every group failed (its hold
        lapsed on the owner's timer, the provider said unpaid), the lateness of each
        hold's lapse and release and the invariants, from Postgres; then the deployment's
        gateway stops."""
        plan = self.plan
        await prepare_database(self.stack.holds_database_url)
        gateway = self.stack.start_holds(self.head.address, plan.hold_seconds)
        try:
            await wait_http(gateway, timeout=120)
            load = os.getloadavg()[0]
            roots, marker = {"bench driver": os.getpid()}, str(self.stack.tmp)
            redis = profiler.redis_marker(self.stack.redis_url)
            busy_before = profiler.busy_seconds()
            cpu_before = profiler.cpu_seconds(roots, marker, redis)
            began = time.time()
            outs = await gens.each("holds_open", [
                {"url": gateway.url, "secret": SECRET, "campaign": HOLDS_CAMPAIGN,
                 "prefix": "hold", "count": n, "concurrency": c}
                for n, c in zip(split(plan.holds, len(gens)),
                                split(plan.holds_concurrency, len(gens)), strict=True)],
                timeout=plan.hold_seconds + 300)
            opened = sum(o["opens"] for o in outs)
            self.holds_acked += opened
            lat = report.latencies(o["latencies"] for o in outs)
            conn = await pg(self.stack.holds_database_url)
            try:
                # Each hold ends hold_seconds after its open: wait that, then the settling.
                waited = await holds.wait_failed(conn, HOLDS_CAMPAIGN, opened,
                                                 plan.hold_seconds + plan.holds_settle)
                seconds = time.time() - began
                busy = (profiler.busy_seconds() - busy_before) / seconds
                cpu = profiler.cpu_share(cpu_before,
                                         profiler.cpu_seconds(roots, marker, redis), seconds)
                result = await holds.measure(conn, HOLDS_CAMPAIGN, self.holds_acked)
            finally:
                await conn.close()
        finally:
            self.stack.stop_holds()
        opens_seconds = max(o["elapsed"] for o in outs)
        result.update(
            opened=opened, held=sum(o["held"] for o in outs),
            codes=report.merge_counts(o["codes"] for o in outs),
            opens_seconds=opens_seconds, opens_per_s=opened / max(opens_seconds, 1e-9),
            open_p50_ms=report.percentile(lat, 0.50), open_p99_ms=report.percentile(lat, 0.99),
            hold_seconds=plan.hold_seconds, concurrency=plan.holds_concurrency,
            wait_seconds=waited, seconds=seconds, cpu=cpu, load_1m=round(load, 2),
            others_cores=round(max(0.0, busy - sum(cpu.values())), 2))
        self.results["holds"] = result
        timer, release = result["timer"], result["release"]
        print(f"  holds: {opened} opened in {opens_seconds:.1f} s ({result['opens_per_s']:.0f}/s,"
              f" ack p99 {result['open_p99_ms']:.1f} ms), {result['held']} held,"
              f" {result['pending_at_once']} pending at once; lateness p50 / p99 / max:"
              f" timer {timer['p50_ms']:.0f} / {timer['p99_ms']:.0f} / {timer['max_ms']:.0f} ms,"
              + "".join(f" {key} {result[key]['p50_ms']:.0f} / {result[key]['p99_ms']:.0f} /"
                        f" {result[key]['max_ms']:.0f} ms," for key in ("read", "answered", "told"))
              + f" release {release['p50_ms']:.0f} / {release['p99_ms']:.0f} /"
              f" {release['max_ms']:.0f} ms {_load(result)}", flush=True)
        print("  holds checks: " + ", ".join(f"{k} {result[k]}" for k in holds.BROKEN),
              flush=True)

    # --- i: leaderboard on homepage sockets ------------------------------------------------

    async def boards(self, gens: Generators) -> None:
        """`board_sockets` homepage sockets watch the board on the boards deployment (see
        `bench.stack.BOARD`) while deal pairs, every buyer bound to one of the board's
        sellers, are paced at `board_rate` deals/s for `board_seconds`; once the owner
        took every order's notice and each socket shows the final scores, the lag from
        each deal's commit to the frame that first showed it on each socket (the method:
        `bench.boards`), the frames per second per board (on the sockets and on the
        owner's clock), the notices the owner absorbed per second, and the checks; then
        the deployment's gateway stops."""
        plan = self.plan
        await prepare_database(self.stack.boards_database_url)
        gateway = self.stack.start_boards(self.head.address)
        try:
            await wait_http(gateway, timeout=120)
            self.boards_gateway = gateway
            topic = f"leaderboard:{BOARD}"
            conn = await pg(self.stack.boards_database_url)
            try:
                await boards.wait_open(conn, BOARD, 60)
            finally:
                await conn.close()
            await self._fan_connect(gens, gateway.ws_url, plan.board_sockets, "home")
            subs = await gens.all("board_subscribe", topic=topic, timeout=180)
            run = await self.storm(gens, "fission_ws", plan.board_teams, plan.board_seconds,
                                   interval=plan.board_teams / plan.board_rate,
                                   campaigns=BOARD_DEAL_CAMPAIGNS, team_size=DEAL_SIZE,
                                   tag="board", referrers=BOARD_SELLERS)
            conn = await pg(self.stack.boards_database_url)
            try:
                taken_wait = await boards.wait_taken(conn, BOARD, plan.board_settle)
                want = await boards.expected(conn, BOARD_DEAL_CAMPAIGNS)
                began = time.monotonic()
                seen = boards.merge(await gens.all("board_collect", expected=want,
                                                   wait=plan.board_settle,
                                                   timeout=plan.board_settle + 60))
                shown_wait = time.monotonic() - began
                result = await self._board_figures(conn, run, seen, want)
            finally:
                await conn.close()
            result["read_mismatch"] = boards.mismatch(want, await self._board_read(gateway))
            await gens.all("fan_close")
        finally:
            self.boards_gateway = None
            self.stack.stop_boards()
        result.update(sockets=plan.board_sockets, offered_deals_per_s=plan.board_rate,
                      subscribe_failures=sum(s["failures"] for s in subs),
                      taken_wait_seconds=taken_wait, shown_wait_seconds=shown_wait)
        self.results["boards"] = result
        lag, owner, sockets = result["lag"], result["owner"], result["on_sockets"]
        print(f"  boards: {result['sockets']} sockets, {result['deals_per_s']:.0f} deals/s"
              f" ({result['deals']} deals); lag p50 {lag['p50_ms']:.0f} / p99"
              f" {lag['p99_ms']:.0f} / max {lag['max_ms']:.0f} ms over {lag['samples']:,}"
              f" (deal, socket) pairs; frames/s per board {sockets['frames_per_s']:.2f} on"
              f" the sockets (at most {sockets['busiest_1s']} in 1 s),"
              f" {owner['frames_per_s']:.2f} on the owner's clock (closest"
              f" {owner['closest_ms']:.0f} ms); notices absorbed"
              f" {result['notices']['taken_per_s']:.0f}/s (peak"
              f" {result['notices']['peak_per_s']}/s) {_load(run)}", flush=True)
        print("  boards checks: " + ", ".join(f"{k} {result[k]}" for k in boards.BROKEN),
              flush=True)

    async def _board_figures(self, conn: Any, run: dict[str, Any], seen: dict[str, Any],
                             want: dict[str, int]) -> dict[str, Any]:
        """The boards run's figures and checks from what the sockets saw (`seen`), the
        deals' units and the board's rows in Postgres, and the scores `want`ed."""
        ledger = await boards.units(conn, BOARD_DEAL_CAMPAIGNS)
        lag = boards.lag_summary(boards.lag_groups(ledger, seen["frames"], seen["arrivals"]))
        # Frames are counted from the deals' start to the last frame, not to the deals'
        # end: a board that falls behind shows the run's scores after it, and those
        # frames are the run's too.
        since = run["since"] * 1000
        arrived = list(seen["first"].values())
        flushes = await boards.flush_times(conn, BOARD)
        until = max([run["until"] * 1000, *arrived, *flushes]) + 1.0
        per_s, busiest = boards.rate(arrived, since, until)
        owner_per_s, owner_busiest = boards.rate(flushes, since, until)
        final = seen["frames"][max(seen["frames"])] if seen["frames"] else {}
        pipe = await checks.pipeline(conn, run["since"], run["until"], BOARD_DEAL_CAMPAIGNS)
        committed = await checks.seats_taken(conn, BOARD_DEAL_CAMPAIGNS)
        return {
            "deals": pipe["deals"], "deals_per_s": pipe["deals_per_s"],
            "orders": pipe["orders"], "deals_without_orders": pipe["deals_without_orders"],
            "pipeline_lag_p50_ms": pipe["lag_p50_ms"], "pipeline_lag_p99_ms": pipe["lag_p99_ms"],
            "units": ledger.units(), "lag": lag,
            "units_unshown": ledger.units() - sum(ledger.shown(final).values()),
            "frames": len(seen["frames"]), "frames_seconds": (until - since) / 1000,
            "on_sockets": {"frames_per_s": per_s, "busiest_1s": busiest,
                           "closest_ms": seen["closest_ms"], "bursts": seen["bursts"],
                           "frames_received": seen["frames_received"], "gaps": seen["gaps"],
                           "inconsistent": seen["inconsistent"]},
            "owner": {"frames": len(flushes), "frames_per_s": owner_per_s,
                      "busiest_1s": owner_busiest, "closest_ms": boards.closest(flushes)},
            "frames_too_close": boards.too_close(flushes),
            "notices": await boards.notices(conn, BOARD),
            "notices_unsent": int(await conn.fetchval(
                "SELECT count(*) FROM game_notices WHERE campaign = $1 AND sent_at IS NULL",
                BOARD)),
            "scores_mismatch": boards.mismatch(want, await boards.board_scores(conn, BOARD)),
            # A socket that never had its snapshot shows nothing: a subscribe failure.
            "sockets_stale": seen["subscribed"] - seen["matched"],
            "sellers": len(want), "acked": run["ok"], "committed": committed,
            "lost_acks": max(0, run["ok"] - committed),
            "storm": {k: run[k] for k in ("ops_per_s", "p50_ms", "p99_ms", "codes", "rounds",
                                          "seconds", "cpu", "server")},
            "load_1m": run["load_1m"], "others_cores": run["others_cores"]}

    async def _board_read(self, gateway: Process) -> dict[str, int]:
        """The board's scores as `GET /api/leaderboards/{board}` answers them (from the
        rank cache)."""
        async with aiohttp.ClientSession() as session, session.get(
                f"{gateway.url}/api/leaderboards/{BOARD}", params={"limit": "100"},
                headers={"Authorization": f"Bearer {token(SECRET, 'home-reader')}"}) as resp:
            body = await resp.json()
        return boards.scores_of(body.get("entries", []))

    # --- d: fan-out ------------------------------------------------------------------------

    async def fan_round(self, gens: Generators, topic: str, final_seq: int, expected: int,
                        fire: Any) -> dict[str, Any]:
        subs = await gens.all("fan_subscribe", topic=topic, final_seq=final_seq, timeout=120)
        collect = asyncio.create_task(gens.all("fan_collect", timeout=self.plan.fan_timeout + 30,
                                               wait=self.plan.fan_timeout))
        sent = now_ms()
        await fire()
        outs = await collect
        last = max((o["last"] for o in outs), default=0.0)
        since_commit: list[float] = []
        if topic.startswith("groupbuy:"):
            _, campaign, group = topic.split(":")
            conn = await pg(self.stack.database_url)
            try:
                commits = await checks.committed_at(conn, campaign, group)
            finally:
                await conn.close()
            for o in outs:
                seqs, received = array("q"), array("d")
                seqs.frombytes(o["seqs"])
                received.frombytes(o["received"])
                since_commit += [r - commits[q] for q, r in zip(seqs, received, strict=True)
                                 if q in commits]
        return {"events": sum(o["events"] for o in outs), "expected": expected,
                "since_commit": array("d", since_commit).tobytes(),
                "bytes": sum(o["bytes"] for o in outs),
                "latencies": [o["latencies"] for o in outs],
                "seconds": max(1e-3, (last - sent) / 1000.0) if last else 0.0,
                "subscribe_failures": sum(s["failures"] for s in subs)}

    async def _fan_group(self, session: aiohttp.ClientSession, name: str
                         ) -> tuple[str, list[HttpClient]]:
        """A new group of the size-50 campaign: its id and 49 clients that will join it."""
        route = fission_route(self.gateway.url)
        leader = HttpClient(session, route, SECRET, f"fanlead-{name}", False)
        opened = await leader.call("groupbuy.open", {"campaign": FAN_CAMPAIGN})
        if not opened.get("ok"):
            raise RuntimeError(f"fan-out group did not open: {opened}")
        self.acked += 1
        joiners = [HttpClient(session, route, SECRET, f"fan-{name}-{i}", False)
                   for i in range(FAN_SIZE - 1)]
        return opened["result"]["group"]["id"], joiners

    async def _join_all(self, group: str, joiners: list[HttpClient],
                        interval: float = 0.0) -> None:
        """Every joiner joins: at once, or one every `interval` seconds (an open loop)."""
        async def join(n: int, client: HttpClient) -> None:
            # Pacing: join n is due n intervals after the first.
            await asyncio.sleep(max(0.0, began + n * interval - time.monotonic()))
            reply = await client.call("groupbuy.join", {"campaign": FAN_CAMPAIGN,
                                                        "group": group})
            self.acked += 1 if reply.get("ok") else 0

        began = time.monotonic()
        await asyncio.gather(*(join(n, c) for n, c in enumerate(joiners)))

    async def _fan_connect(self, gens: Generators, url: str, sockets: int, prefix: str) -> None:
        await gens.each("fan_connect", [
            {"url": url, "secret": SECRET, "count": n, "prefix": prefix}
            for n in split(sockets, len(gens))], timeout=180)

    async def _fission_fan(self, gens: Generators, sockets: int, name: str,
                           interval: float = 0.0) -> tuple[dict[str, Any], str]:
        """One Fission round on a new group: its result and the group's id."""
        async with aiohttp.ClientSession() as session:
            group, joiners = await self._fan_group(session, name)
            result = await self.fan_round(
                gens, f"groupbuy:{FAN_CAMPAIGN}:{group}", FAN_SIZE + 2, sockets * (FAN_SIZE + 1),
                lambda: self._join_all(group, joiners, interval))
        return result, group

    async def _fan_template(self, group: str) -> dict[str, Any]:
        """A member_joined frame for `group` as it ended: what raw broadcasts send."""
        viewer = f"fanview-{group}"
        async with aiohttp.ClientSession() as session, session.get(
                f"{self.gateway.url}/api/groupbuys/{FAN_CAMPAIGN}/groups/{group}",
                headers={"Authorization": f"Bearer {token(SECRET, viewer)}"}) as resp:
            view = (await resp.json())["group"]
        # A live frame carries the group's summary: G without its member list.
        summary = {k: v for k, v in view.items() if k != "members"}
        return {"type": "member_joined", "user": viewer, "campaign": FAN_CAMPAIGN,
                "group": summary}

    async def _raw_fan(self, gens: Generators, sockets: int, topic: str,
                       template: dict[str, Any], interval: float = 0.0) -> dict[str, Any]:
        """The same 51 events from the broadcast-only server: at once, or paced with the
        last 3 together (as Fission's completing join sends them)."""
        async def publish() -> None:
            async with aiohttp.ClientSession() as session, session.post(
                    self.raw.url + "/publish", json={
                        "topic": topic, "count": FAN_SIZE + 1, "data": template,
                        "interval_ms": interval * 1000, "together": 3 if interval else 1},
            ) as resp:
                await resp.read()

        return await self.fan_round(gens, topic, FAN_SIZE + 1, sockets * (FAN_SIZE + 1),
                                    publish)

    async def fanout(self, gens: Generators, sockets: int) -> dict[str, Any]:
        """Bursts on Fission, then on the raw broadcast (frames shaped like Fission's, so
        the clients parse the same JSON); then both paced at half the slower burst rate."""
        plan = self.plan
        load = os.getloadavg()[0]
        await self._fan_connect(gens, self.gateway.ws_url, sockets, f"fan{sockets}")
        rounds = []
        for g in range(plan.fan_groups):
            result, group = await self._fission_fan(gens, sockets, f"{sockets}-{g}")
            rounds.append(result)
        fission = self._fan_summary(rounds)
        template = await self._fan_template(group)
        await gens.all("fan_close")
        await self._fan_connect(gens, self.raw.ws_url, sockets, f"raw{sockets}")
        raw = self._fan_summary([await self._raw_fan(gens, sockets, f"raw:{sockets}:{g}",
                                                     template)
                                 for g in range(plan.fan_groups)])
        # A load both sustain: deliveries at a fraction of the slower burst rate.
        events_per_s = plan.paced_fraction * min(fission["per_s"], raw["per_s"]) / sockets
        interval = 1.0 / max(events_per_s, 1e-3)
        raw_paced = self._fan_summary([await self._raw_fan(
            gens, sockets, f"raw:{sockets}:paced", template, interval)])
        await gens.all("fan_close")
        await self._fan_connect(gens, self.gateway.ws_url, sockets, f"fanp{sockets}")
        paced = self._fan_summary([(await self._fission_fan(
            gens, sockets, f"{sockets}-paced", interval))[0]])
        paced["interval_ms"] = interval * 1000
        await gens.all("fan_close")
        return {"sockets": sockets, "fission": fission, "raw": raw,
                "fission_paced": paced, "raw_paced": raw_paced, "load_1m": round(load, 2)}

    async def idle_memory(self, gens: Generators) -> None:
        """The gateway's memory per idle, authenticated socket at each fan-out size.

        Measured before anything else: once storms have grown and freed the gateway's heap,
        new sockets reuse that memory and its RSS may not grow at all.
        """
        gateway = psutil.Process(self.gateway.proc.pid)
        before = gateway.memory_info().rss
        opened = 0
        self.results["idle_memory"] = []
        for sockets in sorted(self.plan.fan_sizes):
            await self._fan_connect(gens, self.gateway.ws_url, sockets - opened,
                                    f"idle{sockets}")
            opened = sockets
            await asyncio.sleep(1.0)  # let the gateway settle its buffers before reading RSS
            after = gateway.memory_info().rss
            per_socket_kb = (after - before) / sockets / 1024
            self.results["idle_memory"].append({
                "sockets": sockets, "rss_before_mb": before / 2**20,
                "rss_after_mb": after / 2**20, "rss_per_conn_kb": per_socket_kb})
            print(f"  idle memory: {sockets} sockets, {per_socket_kb:.1f} KB each", flush=True)
        await gens.all("fan_close")

    @staticmethod
    def _fan_summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
        lat = report.latencies(chunk for r in rounds for chunk in r["latencies"])
        committed = report.latencies(r["since_commit"] for r in rounds)
        events = sum(r["events"] for r in rounds)
        seconds = sum(r["seconds"] for r in rounds)
        return {"events": events, "expected": sum(r["expected"] for r in rounds),
                "per_s": events / seconds if seconds else 0.0, "seconds": seconds,
                "p50_ms": report.percentile(lat, 0.50), "p99_ms": report.percentile(lat, 0.99),
                "commit_p50_ms": report.percentile(committed, 0.50),
                "commit_p99_ms": report.percentile(committed, 0.99),
                "frame_bytes": sum(r["bytes"] for r in rounds) / events if events else 0.0,
                "subscribe_failures": sum(r["subscribe_failures"] for r in rounds)}

    # --- profile -----------------------------------------------------------------------

    async def profile(self, gens: Generators) -> None:
        """py-spy samples of the gateways and actors during a storm at the top level, and
        during a help storm at the bargain's top level when the bargain runs too."""
        runs: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        if "storm" in self.plan.scenarios or "bargain" not in self.plan.scenarios:
            teams = max(self.plan.levels)
            runs.append(("", lambda: self.storm(gens, "fission_ws", teams,
                                                self.profile_seconds)))
        if "bargain" in self.plan.scenarios:
            bargain_teams = max(self.plan.bargain_levels)
            runs.append(("bargain-", lambda: self.help_storm(gens, "fission_ws", bargain_teams,
                                                             self.profile_seconds)))
        texts = []
        for prefix, run in runs:
            pids = {f"{prefix}gateway{n}": g.proc.pid for n, g in enumerate(self.gateways)}
            for n, pid in enumerate(profiler.shard_pids(self.head.pid)):
                pids[f"{prefix}actor{n}-{pid}"] = pid
            recording = asyncio.create_task(
                profiler.record(pids, self.profile_seconds, self.out))
            await asyncio.sleep(0.5)  # py-spy has no "attached" signal: give it a head start
            await run()
            paths = await recording
            texts += [profiler.summarize(p) for p in paths.values()]
        text = "\n\n".join(texts)
        (self.out / "profile-summary.txt").write_text(text + "\n")
        print(text)

    # --- everything ----------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        print("starting servers ...", flush=True)
        started = time.monotonic()
        await self.start_servers()
        print(f"servers ready in {time.monotonic() - started:.1f} s", flush=True)
        gens = Generators(GENERATORS)
        try:
            if "fanout" in self.plan.scenarios:
                await self.idle_memory(gens)
            if "storm" in self.plan.scenarios:
                await self.storms(gens)
            if "sweep" in self.plan.scenarios:
                await self.sweep(gens)
            if "storm" in self.plan.scenarios or "sweep" in self.plan.scenarios:
                await self.verify()
            if "deals" in self.plan.scenarios:
                await self.deals(gens)
            if "deals" in self.plan.scenarios or "mix" in self.plan.scenarios:
                began = time.monotonic()
                await self.pipeline_mix(gens)
                self.results["mix_seconds"] = time.monotonic() - began
                print(f"  pipeline mix scenario: {self.results['mix_seconds']:.1f} s",
                      flush=True)
            self.results["fanout"] = []
            for sockets in self.plan.fan_sizes if "fanout" in self.plan.scenarios else ():
                result = await self.fanout(gens, sockets)
                self.results["fanout"].append(result)
                print(f"  fan-out {sockets} sockets: Fission {result['fission']['per_s']:.0f}/s"
                      f" p99 {result['fission']['p99_ms']:.0f} ms; raw"
                      f" {result['raw']['per_s']:.0f}/s", flush=True)
            if "bargain" in self.plan.scenarios:
                began = time.monotonic()
                await self.bargains(gens)
                self.results["bargain_seconds"] = time.monotonic() - began
                print(f"  bargain scenario: {self.results['bargain_seconds']:.1f} s", flush=True)
            if "lottery" in self.plan.scenarios:
                began = time.monotonic()
                await self.lotteries(gens)
                self.results["lottery_seconds"] = time.monotonic() - began
                print(f"  lottery scenario: {self.results['lottery_seconds']:.1f} s", flush=True)
            if "holds" in self.plan.scenarios:
                began = time.monotonic()
                await self.held_seats(gens)
                self.results["holds_seconds"] = time.monotonic() - began
                print(f"  holds scenario: {self.results['holds_seconds']:.1f} s", flush=True)
            if "boards" in self.plan.scenarios:
                began = time.monotonic()
                await self.boards(gens)
                self.results["boards_seconds"] = time.monotonic() - began
                print(f"  boards scenario: {self.results['boards_seconds']:.1f} s", flush=True)
            conn = await pg(self.stack.database_url)
            try:
                self.results["invariants"] = await checks.invariants(conn, self.acked)
            finally:
                await conn.close()
            if "inserts" in self.plan.scenarios:
                self.results["inserts"] = [
                    await raw.insert_rate(self.stack.database_url, self.plan.insert_seconds),
                    await raw.insert_rate(self.stack.database_url, self.plan.insert_seconds,
                                          durable=True)]
            if self.profile_seconds:
                await self.profile(gens)
        finally:
            gens.close()
        self.results["seconds"] = time.monotonic() - started
        return self.results


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 1) for k, v in values.items()}


def _load(run: dict[str, Any]) -> str:
    return f"(load {run['load_1m']:.2f}, other work {run['others_cores']:.2f} cores)"


def failures(results: dict[str, Any]) -> list[str]:
    """What makes the run fail: broken invariants, or a system that did nothing."""
    found = []
    inv = results.get("invariants", {})
    for key in ("overfull", "oversold", "lost_acks"):
        if inv.get(key, 1):
            found.append(f"Fission {key} = {inv.get(key)}")
    mall = results.get("mall_invariants", {})
    for key in ("overfull", "oversold", "stock_mismatch") if "mall_invariants" in results else ():
        if mall.get(key, 1):
            found.append(f"mall baseline {key} = {mall.get(key)}")
    for r in results.get("storm", []):
        if r["ok"] == 0:
            found.append(f"{r['system']} at {r['teams']} teams acknowledged nothing")
    for r in results.get("sweep", []):
        if r["ok"] == 0:
            found.append(f"{r['system']} offered {r['offered_ops_per_s']} cmds/s"
                         " acknowledged nothing")
    for key in ("pipeline", "pipeline_deals", "pipeline_deals_paced", "pipeline_mix"):
        pipe = results.get(key, {})
        if pipe.get("deals_without_orders", 0):
            found.append(f"{key}: {pipe['deals_without_orders']} deals have no orders after"
                         " the outbox drained")
        if pipe.get("orders_without_commission", 0):
            found.append(f"{key}: {pipe['orders_without_commission']} orders of referred"
                         " buyers earned no commission")
    if inv.get("ledger_unbalanced", 0):
        found.append(f"the ledger has {inv['ledger_unbalanced']} unbalanced transactions")
    for f in results.get("fanout", []):
        if f["fission"]["events"] == 0:
            found.append(f"fan-out to {f['sockets']} sockets delivered nothing")
    for key in PAYMENT_BROKEN if "invariants" in results else ():
        if inv.get(key, 0):
            found.append(f"Fission {key} = {inv[key]}")
    if mall.get("orders_mismatch", 0):
        found.append(f"mall baseline orders_mismatch = {mall['orders_mismatch']}")
    found += bargain_failures(results)
    found += lottery_failures(results)
    found += holds.failures(results.get("holds"))
    found += boards.failures(results.get("boards"))
    found += mix.failures(results.get("pipeline_mix"))
    return found


# Payment in the loop of the main deployment's group-buys (see checks.paid_orders).
PAYMENT_BROKEN = ("members_without_order", "orders_twice", "orders_without_member",
                  "payments_mismatch")


BARGAIN_BROKEN = ("below_floor", "price_mismatch", "helped_twice", "floor_missed",
                  "lost_acks")


def bargain_failures(results: dict[str, Any]) -> list[str]:
    """What fails a run in the bargain scenario: a broken invariant in either system, a
    cut below the floor in an answer, or a run that acknowledged no help."""
    found: list[str] = []
    if "bargain" not in results:
        return found
    for key, name in (("bargain_invariants", "Fission"), ("mall_bargain_invariants", "mall")):
        inv = results.get(key)
        if inv is None:
            found.append(f"{name} bargain invariants were not checked")
            continue
        found += [f"{name} bargain {k} = {inv.get(k)}" for k in BARGAIN_BROKEN
                  if inv.get(k, 1)]
    for r in report.bargain_runs(results):
        paced = (f" paced ({r.get('arrivals', 'burst')})" if "target_helps_per_s" in r
                 else "")
        where = f"bargain {r['system']} at {r['teams']} teams{paced}"
        if r["helps"] == 0:
            found.append(f"{where} acknowledged no help")
        if r["below_floor_seen"]:
            found.append(f"{where}: {r['below_floor_seen']} answers showed a price below"
                         " the floor")
    return found


LOTTERY_BROKEN = ("oversold", "stock_mismatch", "over_limit", "lost_acks")


def lottery_failures(results: dict[str, Any]) -> list[str]:
    """What fails a run in the lottery scenario: a broken invariant in either system
    (a prize won beyond its stock above all), Fission's read model missing, or a run that
    acknowledged no draw."""
    found: list[str] = []
    if "lottery" not in results:
        return found
    for key, name in (("lottery_invariants", "Fission"), ("mall_lottery_invariants", "mall")):
        inv = results.get(key)
        if inv is None:
            found.append(f"{name} lottery invariants were not checked")
            continue
        found += [f"{name} lottery {k} = {inv.get(k)}" for k in LOTTERY_BROKEN
                  if inv.get(k, 1)]
        if key == "lottery_invariants" and not inv.get("read_model", False):
            found.append("Fission lottery: the campaign has no row in lotteries")
    runs = [*results["lottery"], *([results["lottery_paced"]]
                                   if results.get("lottery_paced") else [])]
    for r in runs:
        if r["draws"] == 0:
            paced = " paced" if "target_draws_per_s" in r else ""
            found.append(f"lottery {r['system']} at {r['users']} users{paced}"
                         " acknowledged no draw")
    return found


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="tiny and quick: checks it works")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--profile", type=int, default=0, metavar="SECONDS",
                        help="also sample the gateway and actors with py-spy for a storm")
    parser.add_argument("--only", choices=SCENARIOS, action="append",
                        help="run only these scenarios (repeatable; default: all)")
    parser.add_argument("--teams", type=int, action="append", metavar="N",
                        help="storm concurrency levels instead of the plan's (repeatable)")
    parser.add_argument("--bargain-teams", type=int, action="append", metavar="N",
                        help="bargain help storm levels (teams of"
                             f" {BARGAIN_TEAM}) instead of the plan's (repeatable)")
    parser.add_argument("--lottery-users", type=int, action="append", metavar="N",
                        help="lottery draw storm levels (users drawing at once) instead of"
                             " the plan's (repeatable)")
    parser.add_argument("--holds", type=int, metavar="N",
                        help="held seats pending at once in the holds scenario instead of"
                             " the plan's")
    parser.add_argument("--board-sockets", type=int, metavar="N",
                        help="homepage sockets watching the board in the boards scenario"
                             " instead of the plan's")
    parser.add_argument("--board-rate", type=int, metavar="DEALS",
                        help="deals/s offered in the boards scenario instead of the plan's")
    parser.add_argument("--system", choices=Plan.systems, action="append", dest="systems",
                        help="storm only these systems (repeatable; default: all four)")
    parser.add_argument("--gateways", type=int, metavar="N",
                        help="Fission gateway processes (default 1)")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    if args.only:
        plan = replace(plan, scenarios=tuple(args.only))
    if args.systems:  # Fission /ws is the reference every ratio and the paced run need
        plan = replace(plan, systems=tuple(dict.fromkeys(["fission_ws", *args.systems])))
    if args.gateways:
        plan = replace(plan, gateways=args.gateways)
    if args.teams:
        plan = replace(plan, levels=tuple(args.teams))
    if args.bargain_teams:
        plan = replace(plan, bargain_levels=tuple(args.bargain_teams))
    if args.lottery_users:
        plan = replace(plan, lottery_levels=tuple(args.lottery_users))
    if args.holds:
        plan = replace(plan, holds=args.holds)
    if args.board_sockets:
        plan = replace(plan, board_sockets=args.board_sockets)
    if args.board_rate:
        plan = replace(plan, board_rate=args.board_rate)
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # SIGTERM unwinds like Ctrl-C, so every process group started here is stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    tmp = Path(tempfile.mkdtemp(prefix="fbench-", dir="/tmp"))
    print(f"bench ({plan.mode}): logs in {tmp}", flush=True)
    with services(tmp) as (database_url, redis_url):
        asyncio.run(prepare_database(database_url))
        with ray_head(tmp) as head:
            stack = Stack(tmp, database_url, redis_url)
            try:
                results = asyncio.run(Bench(stack, head, plan, out, args.profile).run())
            finally:
                stack.close()
    shutil.rmtree(tmp / "svc", ignore_errors=True)  # embedded data; the logs stay
    text = report.render(results)
    json_path, png_path = report.write(results, out)
    (out / "table.md").write_text(text + "\n")
    print()
    print(text)
    print()
    print(f"wrote {json_path} and {png_path} ({results['seconds']:.0f} s)")
    problems = failures(results)
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

