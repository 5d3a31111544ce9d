"""The pipeline actor SIGKILLed mid-batch and mid-settlement (issue 15): the ledger after
the restart is, line for line, the ledger of the same run without the kill.

Two runs of one deterministic workload, each a deployment of its own (a `fission serve`
gateway, its own database and Redis) on one Ray head of this test's own, so the pipeline
actor's process is found unambiguously in the head's process tree (`ray::PipelineHost`)
and SIGKILLed there. Ray restarts it (`actors.hosts.PipelineHost`: `max_restarts=-1`);
its constructor starts the worker again, which drains what the outbox still holds. Every
drain and settlement batch is one transaction, so a kill rolls the batch back whole and
the restarted worker does it again.

The workload: 1,000 pair group-buys (2,000 orders of 6000 fen) by fixed users; joiner
`j{i}` was brought in by `r{i % 20}`, even leader `l{i}` by `r{(i + 7) % 20}`, and each
`r{k}` by `t{k % 5}`: 1,500 bound buyers, 3,000 commissions at two levels. The return
window is 0 days (`[commission] return_window_days = 0`): each commission settles as soon
as the pipeline has drained the outbox (the settlement run). The pipeline's clock cannot be
moved in a deployment, so the refunds come after settlement, as a marketer's after-sales
refunds (`POST /api/admin/orders/{order}/refund`): whole, and in two pieces, taking the
settled commission back from available (clawbacks).

Run B kills the actor twice: once while the outbox is part drained (a batch of deals in
flight), once when the outbox is empty but commissions are still pending (a settlement
batch in flight). Then both ledgers are compared by natural keys (ids differ between
databases): an order by its buyer (each user buys once), a commission by (buyer, level).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest

from tests.support import configs, ledger
from tests.support.client import post, token
from tests.support.faults import (
    RedisServer,
    fault_env,
    own_database,
    remove_namespace,
    throwaway_ray_head,
)
from tests.support.services import Services
from tests.support.stack import start_gateway, stop_group, wait_healthy, write_config

pytestmark = pytest.mark.acceptance

CAMPAIGN = "kill"
DEALS = 1000  # pairs completing: 2,000 orders
REFERRERS, TOPS = 20, 5
CONCURRENCY = 40  # pairs opened and joined at once
BATCH = 25  # [pipeline] batch_size: many batches, so a kill finds one in flight
WITHIN = 120.0  # seconds for the pipeline to catch up (after a restart too)
ORDERS = 2 * DEALS
COMMISSIONS = 2 * DEALS + 2 * (DEALS // 2)  # every joiner, every even leader: two levels

Snapshot = dict[str, Any]
Fault = Callable[[asyncpg.Connection, int], Awaitable[None]]


def _referrals() -> list[tuple[str, str]]:
    """(user, referrer), tops first so every chain is two levels deep."""
    pairs = [(f"r{k}", f"t{k % TOPS}") for k in range(REFERRERS)]
    pairs += [(f"j{i}", f"r{i % REFERRERS}") for i in range(DEALS)]
    pairs += [(f"l{i}", f"r{(i + 7) % REFERRERS}") for i in range(0, DEALS, 2)]
    return pairs


def _refunds() -> list[tuple[str, int | None]]:
    """The marketer's after-sales refunds, in order: (buyer, fen or None for the rest)."""
    found: list[tuple[str, int | None]] = []
    for i in range(0, DEALS, 10):
        # Every 20th joiner's order back whole; the others of every 10th in two pieces.
        found += [(f"j{i}", None)] if i % 20 == 0 else [(f"j{i}", 1000), (f"j{i}", 1777)]
    return found


def _pipeline_pid(head_pid: int) -> int | None:
    """The process hosting the pipeline actor under the Ray head, if there is one now."""
    for child in psutil.Process(head_pid).children(recursive=True):
        with contextlib.suppress(psutil.Error, IndexError):
            if child.cmdline()[0].startswith("ray::PipelineHost"):
                return int(child.pid)
    return None


async def _poll(check: Callable[[], Awaitable[bool]], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)  # polling another process's progress


async def _progress(conn: asyncpg.Connection) -> tuple[int, int, int, int]:
    """(outbox rows processed, outbox rows waiting, commissions pending, settled)."""
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM outbox WHERE processed_at IS NOT NULL) AS done,"
        " (SELECT count(*) FROM outbox WHERE processed_at IS NULL) AS waiting,"
        " (SELECT count(*) FROM commissions WHERE status = 'pending') AS pending,"
        " (SELECT count(*) FROM commissions WHERE status = 'settled') AS settled")
    return row["done"], row["waiting"], row["pending"], row["settled"]


async def _kill(head_pid: int) -> int:
    """SIGKILL the pipeline actor's process, wait until it is gone and Ray has started
    another; the killed pid."""
    pid = _pipeline_pid(head_pid)
    assert pid is not None, "no pipeline actor process"
    process = psutil.Process(pid)
    process.kill()
    await asyncio.to_thread(process.wait, 10)

    async def restarted() -> bool:
        return _pipeline_pid(head_pid) not in (None, pid)

    await _poll(restarted, "Ray to restart the pipeline actor", 60)
    return pid


async def _settled_everything(conn: asyncpg.Connection) -> None:
    async def done() -> bool:
        _, waiting, pending, settled = await _progress(conn)
        return waiting == 0 and pending == 0 and settled == COMMISSIONS

    await _poll(done, "the outbox drained and every commission settled", WITHIN)
    assert await conn.fetchval(
        "SELECT count(*) FROM orders WHERE confirmed_at IS NOT NULL") == ORDERS


async def _deals(session: aiohttp.ClientSession, url: str) -> None:
    """Every pair opened by its leader and completed by its joiner, CONCURRENCY at once."""
    queue = list(range(DEALS))

    async def worker() -> None:
        while queue:
            i = queue.pop(0)
            status, body = await post(session, f"{url}/api/groupbuys/{CAMPAIGN}/groups",
                                      f"l{i}", key=f"open-{i}")
            assert status == 201, body
            status, body = await post(
                session, f"{url}/api/groupbuys/{CAMPAIGN}/groups/{body['group']['id']}/join",
                f"j{i}", key=f"join-{i}")
            assert status == 200, body

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def _bind(session: aiohttp.ClientSession, url: str) -> None:
    """The fixed referral tree: the referrers' own bindings first, then the buyers', some
    at once (no binding of one step depends on another of the same step)."""
    pairs = _referrals()
    for step in (pairs[:REFERRERS], pairs[REFERRERS:]):
        for start in range(0, len(step), CONCURRENCY):
            answers = await asyncio.gather(*(
                post(session, f"{url}/api/referrals", user, {"referrer": referrer})
                for user, referrer in step[start:start + CONCURRENCY]))
            assert all(status == 200 for status, _ in answers), answers


async def _snapshot(conn: asyncpg.Connection) -> Snapshot:
    """The ledger, orders and commissions by natural keys (see the module docstring)."""
    lines = Counter(
        (r["buyer"], r["level"], r["txn"].rsplit(":", 1)[-1], r["account"], r["amount"])
        for r in await conn.fetch(
            "SELECT c.buyer, c.level, e.txn, e.account, e.amount FROM ledger_entries e"
            " JOIN commissions c ON c.id = e.commission_id"))
    # A post's shop line stands for the whole batch (its commission_id is null): batches
    # differ with timing, their kinds and sum may not.
    batched = await conn.fetch(
        "SELECT account, sum(amount) AS fen, count(DISTINCT split_part(txn, ':', 3)) AS kinds"
        " FROM ledger_entries WHERE commission_id IS NULL GROUP BY account")
    balances = {r["account"]: int(r["fen"]) for r in await conn.fetch(
        "SELECT account, sum(amount) AS fen FROM ledger_entries GROUP BY account")}
    orders = sorted(tuple(r) for r in await conn.fetch(
        "SELECT user_id, campaign, amount, status, refunded_amount,"
        " confirmed_at IS NOT NULL AS confirmed FROM orders"))
    commissions = sorted(tuple(r) for r in await conn.fetch(
        "SELECT buyer, level, beneficiary, rate_bps, amount, status, reversed, settled"
        " FROM commissions"))
    pieces = sorted(tuple(r) for r in await conn.fetch(
        "SELECT o.user_id, r.piece, r.amount, r.after_sales FROM order_refunds r"
        " JOIN orders o ON o.id = r.order_id"))
    return {"lines": lines, "batched": sorted(tuple(r) for r in batched),
            "balances": balances, "orders": orders, "commissions": commissions,
            "pieces": pieces, "problems": await ledger.problems(conn)}


async def _run(migrated: Services, head: Any, tmp: Path, name: str,
               faults: Fault | None) -> Snapshot:
    """One deployment through the whole workload; what its database holds at the end."""
    database_url = await own_database(migrated, f"fission_kill_{name}")
    redis = RedisServer(tmp / "redis")
    redis.start()
    doc = configs.document(
        [configs.campaign(CAMPAIGN, size=2, stock=100_000, pay=False)], shards=1,
        namespace=f"k{name}{uuid.uuid4().hex[:6]}", database_url=database_url,
        redis_url=redis.url, ray_address=head.address, data_dir=str(tmp / "data"))
    doc["pipeline"] = {"poll_interval_ms": 100, "batch_size": BATCH}
    doc["commission"] = {"return_window_days": 0}
    gateway = start_gateway(write_config(tmp, doc), tmp, env=fault_env(database_url,
                                                                        redis.url))
    conn = await asyncpg.connect(database_url)
    try:
        await wait_healthy(gateway)
        url = gateway.url
        async with aiohttp.ClientSession() as session:
            await _bind(session, url)
            # The pipeline stopped (SIGSTOP) while the deals are made, in both runs: the
            # outbox fills with all of them, so the drain (in batches) and then the
            # settlement run are phases of their own that a kill can land in.
            stalled = _pipeline_pid(head.pid)
            assert stalled is not None, "no pipeline actor process"
            os.kill(stalled, signal.SIGSTOP)
            try:
                await _deals(session, url)
            finally:
                os.kill(stalled, signal.SIGCONT)
            if faults is not None:
                await faults(conn, head.pid)
            await _settled_everything(conn)
            for n, (buyer, amount) in enumerate(_refunds()):
                # A marketer each: one marketer's 150 requests at once would be rate limited.
                marketer = {"Authorization": f"Bearer {token(f'k-boss{n}', role='marketer')}"}
                order = await conn.fetchval("SELECT id FROM orders WHERE user_id = $1", buyer)
                body = {} if amount is None else {"amount": amount}
                async with session.post(f"{url}/api/admin/orders/{order}/refund", json=body,
                                        headers={**marketer, "Idempotency-Key": f"rf-{n}"}
                                        ) as resp:
                    assert resp.status == 200, await resp.text()

        async def drained() -> bool:
            return (await _progress(conn))[1] == 0

        await _poll(drained, "the refunds' outbox rows drained", WITHIN)
        return await _snapshot(conn)
    finally:
        await conn.close()
        stop_group(gateway.proc, 10)
        # The deployment's detached actors outlive its gateway: remove them, so the next
        # run's pipeline process is the only one under the head.
        await asyncio.to_thread(remove_namespace, head.address, doc["ray"]["namespace"])

        async def gone() -> bool:
            return _pipeline_pid(head.pid) is None

        await _poll(gone, "the run's actors to go", 60)
        redis.stop()


async def _kill_mid_batch_and_mid_settlement(conn: asyncpg.Connection, head_pid: int
                                             ) -> None:
    """Run B's faults, once the stalled pipeline goes on: a kill while a quarter of the
    deals are drained and the rest wait in the outbox (a drain batch in flight), another
    when every deal is drained and commissions still wait to settle (a settlement batch
    in flight: the worker settles once the outbox is empty)."""
    async def batch_in_flight() -> bool:
        done, waiting, _, _ = await _progress(conn)
        return done >= DEALS // 4 and waiting > 0

    async def settling() -> bool:
        _, waiting, pending, settled = await _progress(conn)
        return waiting == 0 and pending > 0 and settled > 0

    killed = []
    for check, what in ((batch_in_flight, "a quarter of the deals drained"),
                        (settling, "the settlement run")):
        await _poll(check, what, WITHIN)
        killed.append(await _kill(head_pid))
    assert len(set(killed)) == 2  # the second kill hit the process Ray restarted


async def test_a_pipeline_killed_mid_batch_and_mid_settlement_writes_the_same_ledger(
        migrated: Services, tmp_path: Path) -> None:
    with throwaway_ray_head(tmp_path) as head:
        calm = await _run(migrated, head, tmp_path / "a", "a", None)
        killed = await _run(migrated, head, tmp_path / "b", "b",
                            _kill_mid_batch_and_mid_settlement)
    assert calm["problems"] == [] and killed["problems"] == []
    assert len(calm["orders"]) == ORDERS and len(calm["commissions"]) == COMMISSIONS
    # Every step of the ledger is there to compare: posts, settlements, and the
    # clawbacks of the whole (piece 1) and two-piece (pieces 1, 2) refunds.
    assert {kind for _, _, kind, _, _ in calm["lines"]} == {
        "post", "settle", "clawback-1", "clawback-2"}
    for part in ("lines", "batched", "balances", "orders", "commissions", "pieces"):
        assert killed[part] == calm[part], part
