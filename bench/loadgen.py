"""Load-generator processes: teams racing to join groups or to help bargains, users
drawing a lottery, users each holding a seat, and fan-out subscribers (a group's topic,
or a board's as homepages watch it).

Each generator is a separate process (multiprocessing, spawn) running one asyncio loop;
the driver sends it commands over a pipe and gets plain data back. Only public contract
traffic leaves a generator: HTTP and /ws with JWTs, to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
import traceback
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from actors import gcstats, waits
from bench.boards import BoardWatch, scores_of
from bench.clients import HttpClient, WsClient, fission_route, mall_route, now_ms

CONNECT_CHUNK = 100  # sockets opened at once
MAX_ROUNDS = 10_000_000  # a bound on any team loop besides its deadline
SHARERS = 16  # sharers per generator who brought the deal scenario's leaders in


# A spread round's helpers arrive within this share of the round's interval; the rest
# of it is for the round's last helps to be answered before the team's next round (a
# round that runs over starts the next one late, never two at once).
SPREAD = 0.8

# The cyclic collector is paused while a generator times what it does: through a timed
# run, and from a subscription until its frames are collected. A generator holds up to
# ~800 sockets and parses every reply; measured in the bargain's paced runs, its
# collections paused it 7-65 ms at a time, and every help in flight in that process then
# looked that much slower (the slow helps fell in the collections' windows). Reference
# counting still frees nearly everything; what cycles a run leaves are collected when
# it ends. For every system alike.
TIMED = frozenset({"storm_run", "bargain_run", "bargain_run_spread", "lottery_run",
                   "holds_open"})
PAUSED_FROM = frozenset({"fan_subscribe", "board_subscribe"})
PAUSED_UNTIL = frozenset({"fan_collect", "board_collect"})


async def _rounds(deadline: float, interval: float | None) -> AsyncIterator[int]:
    """A team's round numbers until `deadline` (monotonic), at most MAX_ROUNDS: flat out,
    or one every `interval` seconds from a random phase (an open loop), never starting a
    round that would fall after the run (no idle tail to time)."""
    next_round = time.monotonic() + (random.random() * interval if interval else 0.0)
    for n in range(MAX_ROUNDS):
        if interval:
            if next_round >= deadline:
                return
            await asyncio.sleep(max(0.0, next_round - time.monotonic()))  # pacing
            next_round = max(next_round + interval, time.monotonic())
        if time.monotonic() >= deadline:
            return
        yield n


@dataclass
class StormStats:
    """What one generator saw during a join storm."""

    opens: int = 0
    joins: int = 0
    rounds: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))

    def record(self, reply: dict[str, Any], started: float, method: str) -> None:
        self.latencies.append((time.perf_counter() - started) * 1000.0)
        if reply.get("ok"):
            if method == "groupbuy.open":
                self.opens += 1
            else:
                self.joins += 1
        else:
            self.codes[str((reply.get("error") or {}).get("code", "unknown"))] += 1


@dataclass
class BargainStats:
    """What one generator saw during a help storm.

    `acked` holds every acknowledged help as (bargain, helper, cut), for the checks in
    Postgres afterwards; `below_floor` counts acknowledged helps whose answer showed a
    price under the floor or a cut under 1 fen (there must be none); `floors` counts the
    acknowledged helps that brought their bargain to its floor.
    """

    starts: int = 0
    helps: int = 0
    rounds: int = 0
    floors: int = 0
    below_floor: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    acked: list[tuple[str, str, int]] = field(default_factory=list)

    def refused(self, reply: dict[str, Any]) -> None:
        self.codes[str((reply.get("error") or {}).get("code", "unknown"))] += 1

    def helped(self, reply: dict[str, Any], started: float, user: str) -> None:
        """A help's reply, sent at perf_counter `started` by `user`."""
        self.latencies.append((time.perf_counter() - started) * 1000.0)
        if not reply.get("ok"):
            self.refused(reply)
            return
        result = reply["result"]
        bargain, cut = result["bargain"], int(result["cut"])
        self.helps += 1
        self.acked.append((str(bargain["id"]), user, cut))
        if bargain["price"] < bargain["floor_price"] or cut < 1:
            self.below_floor += 1
        if bargain["status"] == "floor_reached":
            self.floors += 1


@dataclass
class LotteryStats:
    """What one generator saw during a draw storm.

    `acked` holds every acknowledged draw as (draw id, user, prize id), for the checks in
    Postgres afterwards; `won` counts acknowledged draws per prize (thanks included);
    `stopped` counts users who were refused `no_draws_left` and so stopped drawing.
    """

    draws: int = 0
    stopped: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    won: Counter[str] = field(default_factory=Counter)
    latencies: array[float] = field(default_factory=lambda: array("d"))
    acked: list[tuple[str, str, str]] = field(default_factory=list)

    def drew(self, reply: dict[str, Any], started: float, user: str) -> str | None:
        """A draw's reply, sent at perf_counter `started` by `user`: None when it was
        acknowledged, else the refusal's code."""
        self.latencies.append((time.perf_counter() - started) * 1000.0)
        if not reply.get("ok"):
            code = str((reply.get("error") or {}).get("code", "unknown"))
            self.codes[code] += 1
            return code
        draw = reply["result"]["draw"]
        prize = str(draw["prize"]["id"])
        self.draws += 1
        self.won[prize] += 1
        self.acked.append((str(draw["id"]), user, prize))
        return None


class Generator:
    """The state of one load-generator process between driver commands."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.session: aiohttp.ClientSession | None = None
        self.teams: list[list[Any]] = []
        self.campaign = ""
        self.fans: list[WsClient] = []
        self.fan_topic = ""
        self.fan_final = 0
        self.fan_done = 0
        self.fan_latencies: array[float] = array("d")
        # Each delivery's seq and receive time, to measure from the commit afterwards.
        self.fan_seqs: array[int] = array("q")
        self.fan_received: array[float] = array("d")
        self.fan_events = 0
        self.fan_bytes = 0
        self.fan_first = 0.0
        self.fan_last = 0.0
        self.fan_all_done = asyncio.Event()
        self.board = BoardWatch(0)
        self.board_topic = ""
        self.board_frames = 0
        self.board_done = asyncio.Event()

    async def _session(self) -> aiohttp.ClientSession:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=False))
        return self.session

    # --- join storm ---------------------------------------------------------------------

    async def storm_prepare(self, kind: str, url: str, secret: str, campaign: str,
                            teams: int, team_size: int, prefix: str,
                            referrals: bool = False,
                            referrers: list[str] | None = None) -> int:
        """Open `teams` teams of `team_size` clients; kind is ws, fission_http or mall.

        With `referrals` (ws only), each team's friends were brought in by its leader and
        each leader by one of a few sharers, so every order earns two levels of commission.
        With `referrers` (ws only) instead, every member of a team was brought in by one
        of them, the teams taking them in turn: each deal of the team scores that seller
        on a sales board.
        """
        session = await self._session()
        self.campaign = campaign
        self.teams = []
        users = [[f"{prefix}-g{self.index}-t{t}-u{u}" for u in range(team_size)]
                 for t in range(teams)]
        if kind == "ws":
            flat = [user for team in users for user in team]
            clients: list[Any] = []
            for start in range(0, len(flat), CONNECT_CHUNK):
                chunk = flat[start:start + CONNECT_CHUNK]
                clients += await asyncio.gather(
                    *(WsClient.connect(session, url, secret, user) for user in chunk))
            self.teams = [clients[t * team_size:(t + 1) * team_size] for t in range(teams)]
            if referrers:
                # Generator i's teams start i*teams sellers on: each generator's first
                # teams are not all the same sellers', so a small run still moves many.
                first = self.index * teams
                await self._bind([(client, referrers[(first + t) % len(referrers)])
                                  for t, team in enumerate(self.teams) for client in team])
            elif referrals:
                await self._bind_referrals(prefix)
        else:
            route = fission_route(url) if kind == "fission_http" else mall_route(url)
            self.teams = [[HttpClient(session, route, secret, user, kind == "mall")
                           for user in team] for team in users]
        return sum(len(team) for team in self.teams)

    async def _bind_referrals(self, prefix: str) -> None:
        binds = [(team[0], f"{prefix}-g{self.index}-sharer{t % SHARERS}")
                 for t, team in enumerate(self.teams)]
        binds += [(friend, team[0].user) for team in self.teams for friend in team[1:]]
        await self._bind(binds)

    @staticmethod
    async def _bind(binds: list[tuple[Any, str]]) -> None:
        """Each (client, referrer): the client's user was brought in by the referrer."""
        for start in range(0, len(binds), CONNECT_CHUNK):
            replies = await asyncio.gather(*(
                client.call("referrals.bind", {"referrer": referrer})
                for client, referrer in binds[start:start + CONNECT_CHUNK]))
            refused = [r for r in replies if not r.get("ok")]
            if refused:
                raise RuntimeError(f"referral binds refused: {refused[0]}")

    async def storm_run(self, start_at: float, duration: float,
                        round_interval: float | None) -> dict[str, Any]:
        """Every team loops open → race of joins until `duration` after `start_at`.

        `round_interval` paces each team to one round per that many seconds (an open
        loop at a chosen rate); None runs the teams flat out (a closed loop).
        """
        await asyncio.sleep(max(0.0, start_at - time.time()))  # the shared start line
        stats = StormStats()
        began = time.perf_counter()
        deadline = time.monotonic() + duration
        await asyncio.gather(*(self._team(team, deadline, stats, round_interval)
                               for team in self.teams))
        return {"opens": stats.opens, "joins": stats.joins, "rounds": stats.rounds,
                "codes": dict(stats.codes), "latencies": stats.latencies.tobytes(),
                "elapsed": time.perf_counter() - began}

    async def _team(self, team: list[Any], deadline: float, stats: StormStats,
                    interval: float | None) -> None:
        leader, joiners = team[0], team[1:]
        campaign = self.campaign
        async for _ in _rounds(deadline, interval):
            started = time.perf_counter()
            reply = await leader.call("groupbuy.open", {"campaign": campaign})
            stats.record(reply, started, "groupbuy.open")
            if not reply.get("ok"):
                await asyncio.sleep(0.05)  # back off after a refusal
                continue
            group = reply["result"]["group"]["id"]
            await asyncio.gather(*(self._join(j, campaign, group, stats) for j in joiners))
            stats.rounds += 1

    @staticmethod
    async def _join(client: Any, campaign: str, group: str, stats: StormStats) -> None:
        started = time.perf_counter()
        reply = await client.call("groupbuy.join", {"campaign": campaign, "group": group})
        stats.record(reply, started, "groupbuy.join")

    # --- bargain help storm ---------------------------------------------------------------

    async def bargain_run(self, start_at: float, duration: float,
                          round_interval: float | None) -> dict[str, Any]:
        """Every team (prepared by `storm_prepare`) loops: one of its users starts a
        bargain, every other helps it at once, until `duration` after `start_at`.

        `round_interval` paces each team to one round per that many seconds (an open
        loop); None runs the teams flat out (a closed loop).
        """
        return await self._bargain_run(start_at, duration, round_interval, spread=False)

    async def bargain_run_spread(self, start_at: float, duration: float,
                                 round_interval: float) -> dict[str, Any]:
        """As `bargain_run` paced, but a round's helpers arrive one by one: each at its
        own uniformly random moment within the first SPREAD of the round's interval (as
        friends opening a shared link do), rather than all in the same instant."""
        return await self._bargain_run(start_at, duration, round_interval, spread=True)

    async def _bargain_run(self, start_at: float, duration: float,
                           round_interval: float | None, spread: bool) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start_at - time.time()))  # the shared start line
        stats = BargainStats()
        began = time.perf_counter()
        deadline = time.monotonic() + duration
        arrivals = SPREAD * round_interval if spread and round_interval else 0.0
        await asyncio.gather(*(self._bargain_team(team, deadline, stats, round_interval,
                                                  arrivals)
                               for team in self.teams))
        return {"starts": stats.starts, "helps": stats.helps, "rounds": stats.rounds,
                "floors": stats.floors, "below_floor": stats.below_floor,
                "codes": dict(stats.codes), "latencies": stats.latencies.tobytes(),
                "acked": stats.acked, "elapsed": time.perf_counter() - began}

    async def _bargain_team(self, team: list[Any], deadline: float, stats: BargainStats,
                            interval: float | None, arrivals: float) -> None:
        """Round r: the team's user r (mod its size) starts a bargain, a fresh one for
        each round, and all the others help it, at once or (`arrivals` > 0) each after
        its own random wait of up to `arrivals` seconds from the start's answer; the
        helpers the floor leaves out are refused (bargain_closed), then they all move to
        the next round's."""
        campaign = self.campaign
        async for n in _rounds(deadline, interval):
            initiator = team[n % len(team)]
            reply = await initiator.call("bargain.start", {"campaign": campaign})
            if not reply.get("ok"):
                stats.refused(reply)
                await asyncio.sleep(0.05)  # back off after a refusal
                continue
            stats.starts += 1
            params = {"campaign": campaign, "bargain": reply["result"]["bargain"]["id"]}
            await asyncio.gather(*(self._help(h, params, stats, random.random() * arrivals)
                                   for h in team if h is not initiator))
            stats.rounds += 1

    @staticmethod
    async def _help(client: Any, params: dict[str, Any], stats: BargainStats,
                    wait: float = 0.0) -> None:
        if wait:
            await asyncio.sleep(wait)  # the helper's arrival (open loop), not timed
        started = time.perf_counter()
        reply = await client.call("bargain.help", params)
        stats.helped(reply, started, client.user)

    # --- lottery draw storm ---------------------------------------------------------------

    async def lottery_run(self, start_at: float, duration: float,
                          round_interval: float | None) -> dict[str, Any]:
        """Every user (teams of one, prepared by `storm_prepare`) draws in a loop until
        `duration` after `start_at`: again as soon as the answer comes (a closed loop), or
        once every `round_interval` seconds (an open loop). A user refused `no_draws_left`
        stops, as a real one would."""
        await asyncio.sleep(max(0.0, start_at - time.time()))  # the shared start line
        stats = LotteryStats()
        began = time.perf_counter()
        deadline = time.monotonic() + duration
        await asyncio.gather(*(self._drawer(client, deadline, stats, round_interval)
                               for team in self.teams for client in team))
        return {"draws": stats.draws, "stopped": stats.stopped, "codes": dict(stats.codes),
                "won": dict(stats.won), "latencies": stats.latencies.tobytes(),
                "acked": stats.acked, "elapsed": time.perf_counter() - began}

    async def _drawer(self, client: Any, deadline: float, stats: LotteryStats,
                      interval: float | None) -> None:
        params = {"campaign": self.campaign}
        async for _ in _rounds(deadline, interval):
            started = time.perf_counter()
            code = stats.drew(await client.call("lottery.draw", params), started, client.user)
            if code == "no_draws_left":
                stats.stopped += 1
                return
            if code is not None:
                await asyncio.sleep(0.05)  # back off after another refusal

    # --- held seats -------------------------------------------------------------------------

    async def holds_open(self, url: str, secret: str, campaign: str, prefix: str, count: int,
                         concurrency: int) -> dict[str, Any]:
        """`count` new users each open a group of `campaign` over Fission's HTTP API, at
        most `concurrency` at a time; the opens acked and the seats they held (answers
        whose payment is pending), ack latencies, and the epoch ms of the last ack."""
        session = await self._session()
        route = fission_route(url)
        stats = StormStats()
        held = 0
        last_ack = 0.0
        users = iter(range(count))  # shared: each worker takes the next user

        async def worker() -> None:
            nonlocal held, last_ack
            for n in users:
                client = HttpClient(session, route, secret, f"{prefix}-g{self.index}-u{n}",
                                    False)
                started = time.perf_counter()
                reply = await client.call("groupbuy.open", {"campaign": campaign})
                stats.record(reply, started, "groupbuy.open")
                if reply.get("ok"):
                    last_ack = now_ms()
                    payment = reply["result"].get("payment") or {}
                    held += payment.get("status") == "pending"

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        return {"opens": stats.opens, "held": held, "codes": dict(stats.codes),
                "latencies": stats.latencies.tobytes(), "last_ack": last_ack,
                "elapsed": time.perf_counter() - began}

    async def storm_close(self) -> int:
        closed = 0
        for team in self.teams:
            for client in team:
                await client.close()
                closed += 1
        self.teams = []
        return closed

    # --- fan-out ------------------------------------------------------------------------

    async def fan_connect(self, url: str, secret: str, count: int, prefix: str) -> int:
        """Open `count` authenticated sockets, each proven live by a ping/pong."""
        session = await self._session()
        for start in range(0, count, CONNECT_CHUNK):
            chunk = [f"{prefix}-g{self.index}-s{n}"
                     for n in range(start, min(count, start + CONNECT_CHUNK))]
            clients = await asyncio.gather(
                *(WsClient.connect(session, url, secret, user) for user in chunk))
            await asyncio.gather(*(c.request({"op": "ping"}, "pong:") for c in clients))
            for client in clients:
                client.on_event = self._on_event
            self.fans += clients
        gcstats.settle()  # thousands of long-lived sockets: out of the collector's walk
        return len(self.fans)

    def _on_event(self, frame: dict[str, Any], raw: str) -> None:
        if frame.get("topic") != self.fan_topic:
            return
        received = now_ms()
        at = frame.get("data", {}).get("at")
        if isinstance(at, int | float):
            self.fan_latencies.append(received - at)
            self.fan_seqs.append(int(frame.get("seq", 0)))
            self.fan_received.append(received)
        self.fan_events += 1
        self.fan_bytes += len(raw)
        if not self.fan_first:
            self.fan_first = received
        self.fan_last = received
        if int(frame.get("seq", 0)) >= self.fan_final:
            self.fan_done += 1
            if self.fan_done >= len(self.fans):
                self.fan_all_done.set()

    async def fan_subscribe(self, topic: str, final_seq: int) -> dict[str, Any]:
        """Move every socket to `topic`; returns once each has its snapshot."""
        old = self.fan_topic
        self.fan_topic, self.fan_final = topic, final_seq
        self.fan_done, self.fan_events, self.fan_bytes = 0, 0, 0
        self.fan_first = self.fan_last = 0.0
        self.fan_latencies = array("d")
        self.fan_seqs, self.fan_received = array("q"), array("d")
        self.fan_all_done = asyncio.Event()
        failures = 0
        for start in range(0, len(self.fans), CONNECT_CHUNK * 5):
            chunk = self.fans[start:start + CONNECT_CHUNK * 5]
            if old:
                await asyncio.gather(*(c.ws.send_json({"op": "unsubscribe", "topic": old})
                                       for c in chunk))
            frames = await asyncio.gather(
                *(c.request({"op": "subscribe", "topic": topic}, f"snapshot:{topic}", 60.0)
                  for c in chunk), return_exceptions=True)
            failures += sum(1 for f in frames
                            if not isinstance(f, dict) or f.get("op") != "snapshot")
        return {"subscribed": len(self.fans) - failures, "failures": failures}

    async def fan_collect(self, wait: float) -> dict[str, Any]:
        """Wait until every socket saw the final seq (or `wait` seconds); what arrived."""
        await waits.wait_set(self.fan_all_done, wait)
        return {"events": self.fan_events, "bytes": self.fan_bytes,
                "complete": self.fan_done, "sockets": len(self.fans),
                "first": self.fan_first, "last": self.fan_last,
                "latencies": self.fan_latencies.tobytes(),
                "seqs": self.fan_seqs.tobytes(), "received": self.fan_received.tobytes()}

    # --- homepage sockets watching a board -------------------------------------------------

    async def board_subscribe(self, topic: str) -> dict[str, Any]:
        """Move every fan-out socket (see `fan_connect`) to the board `topic`, as the
        homepage does, and watch what it shows (`bench.boards.BoardWatch`); returns once
        each has its snapshot."""
        self.board = BoardWatch(len(self.fans))
        self.board_topic = topic
        self.board_done = asyncio.Event()
        for index, client in enumerate(self.fans):
            client.on_event = self._board_handler(index)
        failures = 0
        for start in range(0, len(self.fans), CONNECT_CHUNK * 5):
            chunk = self.fans[start:start + CONNECT_CHUNK * 5]
            frames = await asyncio.gather(
                *(c.request({"op": "subscribe", "topic": topic}, f"snapshot:{topic}", 60.0)
                  for c in chunk), return_exceptions=True)
            for index, frame in enumerate(frames, start=start):
                if not isinstance(frame, dict) or frame.get("op") != "snapshot":
                    failures += 1
                    continue
                view = frame["data"]["leaderboard"]
                self.board.snapshot(index, int(frame["seq"]), scores_of(view["entries"]))
        return {"subscribed": len(self.fans) - failures, "failures": failures}

    def _board_handler(self, index: int) -> Callable[[dict[str, Any], str], None]:
        def on_event(frame: dict[str, Any], raw: str) -> None:
            received = now_ms()  # first: what follows is the client's own work
            data = frame.get("data") or {}
            if frame.get("topic") != self.board_topic or data.get("type") != "board":
                return
            self.board_frames += 1
            if self.board.frame(index, int(frame["seq"]), scores_of(data["entries"]),
                                received):
                self.board_done.set()
        return on_event

    async def board_collect(self, expected: dict[str, int], wait: float) -> dict[str, Any]:
        """Wait until every socket's last frame shows `expected` (or `wait` seconds);
        what the sockets saw (see `bench.boards.merge`)."""
        watch = self.board
        if watch.expect(expected):
            self.board_done.set()
        await waits.wait_set(self.board_done, wait)
        return {"frames": watch.frames,
                "groups": [(key, times.tobytes()) for key, times in watch.groups.items()],
                "first": watch.first, "gaps": watch.gaps, "inconsistent": watch.inconsistent,
                "bursts": watch.bursts, "closest_ms": watch.closest_ms,
                "sockets": watch.sockets, "subscribed": watch.subscribed,
                "matched": watch.matched,
                "frames_received": self.board_frames}

    async def fan_close(self) -> int:
        closed = len(self.fans)
        for start in range(0, closed, CONNECT_CHUNK * 5):
            await asyncio.gather(*(c.close() for c in self.fans[start:start + CONNECT_CHUNK * 5]),
                                 return_exceptions=True)
        self.fans, self.fan_topic = [], ""
        return closed

    async def close(self) -> None:
        await self.storm_close()
        await self.fan_close()
        if self.session is not None:
            await self.session.close()


async def _serve(conn: Connection, index: int) -> None:
    generator = Generator(index)
    loop = asyncio.get_running_loop()
    # A subscription's window is open (its frames are being timed) until its collect or
    # the sockets' close: commands within it (the board's storm) leave the pause on.
    window = False
    try:
        while True:
            command, kwargs = await loop.run_in_executor(None, conn.recv)
            if command == "quit":
                break
            if (command in TIMED or command in PAUSED_FROM) and gc.isenabled():
                gc.collect()  # what earlier work left, then no collection while timing
                gc.disable()
            failed = False
            try:
                result = await getattr(generator, command)(**kwargs)
                conn.send(("ok", result))
            except Exception:
                failed = True
                conn.send(("error", traceback.format_exc()))
            if command in PAUSED_FROM:
                window = not failed
            elif command in PAUSED_UNTIL or command == "fan_close":
                window = False
            if not window and not gc.isenabled():
                gc.enable()
                gc.collect()  # what the run left, before the driver's next command
    finally:
        await generator.close()


def main(conn: Connection, index: int) -> None:
    """Process entry point: serve driver commands until `quit`."""
    # The clients parse every frame they get: keep the collector's pauses out of the
    # latencies they measure, for every system alike (the gateway does the same).
    gcstats.install()
    asyncio.run(_serve(conn, index))


class Generators:
    """The driver's handle on its load-generator processes."""

    def __init__(self, count: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self.pipes: list[Connection] = []
        self.procs: list[Any] = []
        for index in range(count):
            parent, child = context.Pipe()
            proc = context.Process(target=main, args=(child, index), daemon=True,
                                   name=f"bench-loadgen-{index}")
            proc.start()
            self.pipes.append(parent)
            self.procs.append(proc)

    def __len__(self) -> int:
        return len(self.pipes)

    async def each(self, command: str, kwargs: list[dict[str, Any]],
                   timeout: float = 300.0) -> list[Any]:
        """Run `command` on every generator (its own kwargs each); their results."""
        loop = asyncio.get_running_loop()
        for pipe, args in zip(self.pipes, kwargs, strict=True):
            pipe.send((command, args))

        def receive(pipe: Connection) -> Any:
            if not pipe.poll(timeout):
                raise TimeoutError(f"load generator gave no answer to {command}")
            return pipe.recv()

        answers = await asyncio.gather(*(loop.run_in_executor(None, receive, p)
                                         for p in self.pipes))
        results = []
        for status, value in answers:
            if status != "ok":
                raise RuntimeError(f"load generator failed in {command}:\n{value}")
            results.append(value)
        return results

    async def all(self, command: str, timeout: float = 300.0, **kwargs: Any) -> list[Any]:
        """Run `command` with the same kwargs on every generator."""
        return await self.each(command, [kwargs] * len(self.pipes), timeout)

    def close(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(Exception):
                pipe.send(("quit", {}))
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
