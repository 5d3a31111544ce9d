"""Referrals, commissions and the ledger: the pipeline against real Postgres and Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from actors.owner import Owner
from actors.pipeline_worker import PipelineWorker
from bench import mix
from games.commission import BindingPolicy
from storage import reads
from storage.config import Config, parse
from storage.live import Live
from tests.integration.conftest import Clock, Factory, cmd, make_config
from tests.support import configs, ledger
from tests.support.services import Services


@pytest.fixture(autouse=True)
async def sound_ledger(clean: Services, request: pytest.FixtureRequest
                       ) -> AsyncIterator[None]:
    """After each test: the ledger balances and agrees with its commissions, orders and
    withdrawals (tests.support.ledger); not for a test that writes lines by hand."""
    yield
    if request.node.get_closest_marker("raw_ledger") is not None:
        return
    conn = await asyncpg.connect(clean.database_url)
    try:
        assert await ledger.problems(conn) == []
    finally:
        await conn.close()

pytestmark = pytest.mark.integration

PRICE = 6000  # configs.campaign's group price, fen
DAY = timedelta(days=1)


def answer(text: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(text)
    return decoded


WorkerFactory = Callable[..., Any]


@pytest.fixture
async def worker_factory(clean: Services) -> AsyncIterator[WorkerFactory]:
    started: list[PipelineWorker] = []

    async def start(config: Config, clock: Callable[[], int] | None = None
                    ) -> PipelineWorker:
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        worker = PipelineWorker(config, clean.database_url, clean.redis_url, **kwargs)
        await worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        await worker.stop()


@pytest.fixture
async def conn(clean: Services) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(clean.database_url)
    yield connection
    await connection.close()


async def balances(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT account, sum(amount) AS total FROM ledger_entries GROUP BY account")
    return {r["account"]: int(r["total"]) for r in rows if r["total"] != 0}


async def unbalanced(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(
        "SELECT txn FROM ledger_entries GROUP BY txn HAVING sum(amount) <> 0")
    return [r["txn"] for r in rows]


async def deal(shard: Any, leader: str, *joiners: str) -> str:
    [opened] = await shard.submit([cmd("open", leader)])
    group = opened["result"]["group"]["id"]
    for user in joiners:
        [joined] = await shard.submit([cmd("join", user, group=group)])
        assert joined["ok"], joined
    return str(group)


async def bob_buys_through_alice(worker: PipelineWorker, shard: Any,
                                 conn: asyncpg.Connection) -> datetime:
    """bob, brought in by alice, completes a pair with carol; when bob's order was made."""
    assert answer(await worker.bind("bob", "alice"))["ok"]
    await deal(shard, "carol", "bob")
    await worker.drain()
    created: datetime = await conn.fetchval(
        "SELECT created_at FROM orders WHERE user_id = 'bob'")
    return created


async def test_binding_is_once_and_never_loops(clean: Services,
                                               worker_factory: WorkerFactory) -> None:
    worker = await worker_factory(make_config(clean))
    first = answer(await worker.bind("bob", "alice"))
    assert first["ok"] and first["result"]["referral"]["referrer"] == "alice"
    # The same binding again answers as the first did; another referrer is refused.
    assert answer(await worker.bind("bob", "alice")) == first
    assert answer(await worker.bind("bob", "carol"))["error"]["code"] == "already_bound"
    assert answer(await worker.bind("dan", "dan"))["error"]["code"] == "invalid_request"
    # alice <- bob <- erin: alice may not now be brought in by erin (nor by bob).
    assert answer(await worker.bind("erin", "bob"))["ok"]
    for referrer in ("erin", "bob"):
        refused = answer(await worker.bind("alice", referrer))
        assert refused["error"]["code"] == "invalid_request", refused
    # Two users binding to each other at the same moment: exactly one wins.
    both = await asyncio.gather(worker.bind("x1", "x2"), worker.bind("x2", "x1"))
    assert sorted(answer(a)["ok"] for a in both) == [False, True]


async def test_a_deal_earns_two_levels_once(clean: Services, shard_factory: Factory,
                                            worker_factory: WorkerFactory,
                                            conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=10))
    worker = await worker_factory(config)
    # zed brought alice, alice brought bob; carol came on her own.
    for user, referrer in (("alice", "zed"), ("bob", "alice")):
        assert answer(await worker.bind(user, referrer))["ok"]
    listener = aioredis.from_url(clean.redis_url)
    shard = await shard_factory(config, Clock())
    await deal(shard, "alice", "bob", "carol")
    await worker.drain()
    rows = await conn.fetch(
        "SELECT buyer, beneficiary, level, amount, status FROM commissions ORDER BY buyer, level")
    assert [tuple(r) for r in rows] == [
        ("alice", "zed", 1, PRICE * 1000 // 10_000, "pending"),
        ("bob", "alice", 1, PRICE * 1000 // 10_000, "pending"),
        ("bob", "zed", 2, PRICE * 300 // 10_000, "pending"),
    ]
    assert await balances(conn) == {"shop:commission": -1380, "user:alice:pending": 600,
                                    "user:zed:pending": 780}
    assert await unbalanced(conn) == []
    assert worker.stats()["commissions_total"] == 3
    # Replaying the whole outbox earns nothing twice.
    await conn.execute("UPDATE outbox SET processed_at = NULL")
    await worker.drain()
    assert await conn.fetchval("SELECT count(*) FROM commissions") == 3
    # One compound entry: the shop's line for the sum, a line per commission.
    lines = await conn.fetch("SELECT txn, commission_id, account, amount FROM ledger_entries")
    assert len({r["txn"] for r in lines}) == 1 and len(lines) == 4
    assert sorted(r["amount"] for r in lines if r["commission_id"] is None) == [-1380]
    # zed saw both commissions arrive, live, on their own topic.
    try:
        frames = await Live(listener, 100, 60).history("user:zed")
    finally:
        await listener.aclose()
    pending = [f["data"] for f in frames if f["data"]["type"] == "commission_pending"]
    assert sorted((d["buyer"], d["level"], d["amount"]) for d in pending) == [
        ("alice", 1, 600), ("bob", 2, 180)]


async def test_commissions_settle_when_the_window_ends(clean: Services, shard_factory: Factory,
                                                       worker_factory: WorkerFactory,
                                                       conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    clock = Clock()  # the owner's and the pipeline's
    worker = await worker_factory(config, clock)
    created = await bob_buys_through_alice(worker, await shard_factory(config, clock), conn)
    assert created == clock.now()
    # A day before the 30-day window ends: nothing settles.
    clock.advance(29 * DAY)
    await worker.settle()
    assert await conn.fetchval("SELECT status FROM commissions") == "pending"
    clock.advance(DAY)
    await worker.settle()
    clock.advance(DAY)
    await worker.settle()
    assert worker.settled_total == 1
    assert await balances(conn) == {"shop:commission": -600, "user:alice:available": 600}
    assert await unbalanced(conn) == []
    status = await conn.fetchval("SELECT status FROM commissions")
    assert status == "settled"
    # A settled commission's order is past its window: it can no longer be refunded.
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    refused = answer(await worker.refund("bob", order))
    assert refused["error"]["code"] == "return_window_closed"


async def test_a_refund_inside_the_window_reverses_commission(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    worker = await worker_factory(config)
    for user, referrer in (("bob", "alice"), ("alice", "zed")):
        assert answer(await worker.bind(user, referrer))["ok"]
    shard = await shard_factory(config, Clock())
    await deal(shard, "carol", "bob")
    await worker.drain()
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    # Only the buyer may refund their order.
    assert answer(await worker.refund("carol", order))["error"]["code"] == "not_found"
    refunded = answer(await worker.refund("bob", order))
    assert refunded["ok"], refunded
    assert refunded["result"]["order"]["status"] == "refunded"
    assert refunded["result"]["order"]["refunded_at"] is not None
    # Again: the same order, and no second refund anywhere.
    assert answer(await worker.refund("bob", order)) == refunded
    assert await conn.fetchval(
        "SELECT count(*) FROM payments WHERE kind = 'refund' AND user_id = 'bob'") == 1
    assert await conn.fetchval(
        "SELECT count(*) FROM commissions WHERE status = 'reversed'") == 2
    assert await balances(conn) == {}
    assert await unbalanced(conn) == []
    # Reversed commissions never settle.
    far = datetime.now(UTC) + 400 * DAY
    assert await worker.settle_once(far) == 0


async def test_refund_after_the_window_is_refused(clean: Services, shard_factory: Factory,
                                                  worker_factory: WorkerFactory,
                                                  conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    clock = Clock()
    later = await worker_factory(config, clock)
    shard = await shard_factory(config, clock)
    await deal(shard, "carol", "bob")
    await later.drain()
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    clock.advance(31 * DAY)
    refused = answer(await later.refund("bob", order))
    assert refused["error"]["code"] == "return_window_closed"
    assert await conn.fetchval("SELECT status FROM orders WHERE id = $1", order) == "paid"


@pytest.mark.raw_ledger
async def test_the_database_refuses_an_unbalanced_or_edited_ledger(
        clean: Services, conn: asyncpg.Connection) -> None:
    with pytest.raises(asyncpg.CheckViolationError, match="does not balance"):
        await conn.execute("INSERT INTO ledger_entries (txn, account, amount) VALUES"
                           " ('t1', 'shop:commission', -5), ('t1', 'user:a:pending', 4)")
    await conn.execute("INSERT INTO ledger_entries (txn, account, amount) VALUES"
                       " ('t2', 'shop:commission', -5), ('t2', 'user:a:pending', 5)")
    for statement in ("UPDATE ledger_entries SET amount = 6 WHERE amount = 5",
                      "DELETE FROM ledger_entries"):
        with pytest.raises(asyncpg.CheckViolationError, match="append-only"):
            await conn.execute(statement)
    assert await balances(conn) == {"shop:commission": -5, "user:a:pending": 5}


async def test_withdrawals_hold_pay_release_and_never_overdraw(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    worker = await worker_factory(config)
    created = await bob_buys_through_alice(worker, await shard_factory(config, Clock()), conn)
    # Nothing is available before the window ends: pending money cannot be withdrawn.
    early = answer(await worker.withdraw("alice", "k0", 100))
    assert early["error"]["code"] == "insufficient_balance"
    assert await worker.settle_once(created + 30 * DAY) == 1
    # 600 available; the default review threshold (50,000 fen) is far above: paid at once.
    paid = answer(await worker.withdraw("alice", "k1", 250))
    assert paid["result"]["withdrawal"]["status"] == "paid", paid
    assert answer(await worker.withdraw("alice", "k1", 250)) == paid
    reused = answer(await worker.withdraw("alice", "k1", 300))
    assert reused["error"]["code"] == "invalid_request"
    # Ten requests at once for more than half of what is left: one is paid.
    racing = await asyncio.gather(*(worker.withdraw("alice", f"r{n}", 200)
                                    for n in range(10)))
    assert sorted(answer(a)["ok"] for a in racing) == [False] * 9 + [True]
    assert await balances(conn) == {"shop:commission": -600, "user:alice:available": 150,
                                    "shop:payouts": 450}
    assert await unbalanced(conn) == []
    assert answer(await worker.review("boss", 999, True, None))["error"]["code"] == "not_found"
    assert await conn.fetchval("SELECT count(*) FROM withdrawals") == 2


async def alice_earns_600_reviewed_from_500(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> tuple[PipelineWorker, datetime]:
    """Withdrawals of 500 fen and more wait for review; bob buys through alice (600 fen to
    her): the worker and when the order was made."""
    doc = configs.document([configs.campaign("c1", size=2, stock=10, pay=False)], shards=1,
                           database_url=clean.database_url, redis_url=clean.redis_url)
    doc["commission"] = {"withdrawal_review_fen": 500}
    config = parse(doc, {}, "test")
    worker = await worker_factory(config)
    created = await bob_buys_through_alice(worker, await shard_factory(config, Clock()), conn)
    return worker, created


async def test_a_large_withdrawal_waits_for_review(clean: Services, shard_factory: Factory,
                                                   worker_factory: WorkerFactory,
                                                   conn: asyncpg.Connection) -> None:
    worker, created = await alice_earns_600_reviewed_from_500(clean, shard_factory,
                                                             worker_factory, conn)
    assert await worker.settle_once(created + 30 * DAY) == 1
    held = answer(await worker.withdraw("alice", "big", 600))["result"]["withdrawal"]
    assert held["status"] == "reviewing"
    assert await balances(conn) == {"shop:commission": -600, "user:alice:withdrawing": 600}
    approved = answer(await worker.review("boss", held["id"], True, "ok"))
    assert approved["result"]["withdrawal"]["status"] == "paid"
    assert approved["result"]["withdrawal"]["reviewer"] == "boss"
    # Approving again answers the same; rejecting a paid one is refused; nothing moves.
    assert answer(await worker.review("boss", held["id"], True, "ok")) == approved
    refused = answer(await worker.review("boss", held["id"], False, None))
    assert refused["error"]["code"] == "already_reviewed"
    assert await balances(conn) == {"shop:commission": -600, "shop:payouts": 600}
    assert await unbalanced(conn) == []


async def test_a_withdrawal_rejected_while_its_user_owes_pays_the_debt_first(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    worker, created = await alice_earns_600_reviewed_from_500(clean, shard_factory,
                                                             worker_factory, conn)
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    assert await worker.settle_once(created + 30 * DAY) == 1
    # alice's 600 is held for review when bob's order comes back whole after sales:
    # nothing is available, so the 600 taken back is all owed.
    held = answer(await worker.withdraw("alice", "big", 600))["result"]["withdrawal"]
    assert answer(await worker.refund_after_sales("boss", order, None, "a1", None))["ok"]
    assert await balances(conn) == {"user:alice:withdrawing": 600, "user:alice:debt": -600}
    # Rejected, the held 600 pays what she owes first: nothing is left to withdraw again.
    rejected = answer(await worker.review("boss", held["id"], False, "owes"))
    assert rejected["result"]["withdrawal"]["status"] == "rejected"
    assert await balances(conn) == {}
    mine = await reads.commissions(worker._pool, "alice", 10)
    assert mine["balance"] == {"pending": 0, "available": 0, "withdrawing": 0, "debt": 0}
    again = answer(await worker.withdraw("alice", "again", 100))
    assert again["error"]["code"] == "insufficient_balance"
    await worker.published()
    told = [f for f in await frames_of(clean, "user:alice") if f["type"] == "withdrawal_rejected"]
    assert [f["debt_paid"] for f in told] == [600]
    assert await unbalanced(conn) == []


async def test_a_campaign_pays_its_own_rates(clean: Services, shard_factory: Factory,
                                             worker_factory: WorkerFactory,
                                             conn: asyncpg.Connection) -> None:
    own = configs.campaign("c1", size=2, stock=10, pay=False)
    own["commission"] = {"level1_bps": 2000, "level2_bps": 0}
    config = make_config(clean, own, configs.campaign("c2", size=2, stock=10))
    worker = await worker_factory(config)
    for user, referrer in (("bob", "alice"), ("alice", "zed")):
        assert answer(await worker.bind(user, referrer))["ok"]
    shard = await shard_factory(config, Clock())
    await deal(shard, "carol", "bob")  # c1: 20% to alice, nothing to zed
    [opened] = await shard.submit([cmd("open", "dan", campaign="c2")])
    [joined] = await shard.submit([cmd("join", "bob", campaign="c2",
                                       group=opened["result"]["group"]["id"])])
    assert joined["ok"], joined
    await worker.drain()
    rows = await conn.fetch("SELECT campaign, beneficiary, level, rate_bps, amount"
                            " FROM commissions ORDER BY campaign, level")
    assert [tuple(r) for r in rows] == [
        ("c1", "alice", 1, 2000, PRICE // 5),
        ("c2", "alice", 1, 1000, PRICE // 10), ("c2", "zed", 2, 300, PRICE * 3 // 100)]
    assert await unbalanced(conn) == []


async def test_a_withdrawal_pays_its_amount_less_its_fee_as_a_line_of_its_own(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    doc = configs.document([configs.campaign("c1", size=2, stock=10, pay=False)], shards=1,
                           database_url=clean.database_url, redis_url=clean.redis_url)
    doc["commission"] = {"withdrawal_fee_bps": 60, "withdrawal_min_fee_fen": 10,
                         "withdrawal_review_fen": 300}
    config = parse(doc, {}, "test")
    worker = await worker_factory(config)
    created = await bob_buys_through_alice(worker, await shard_factory(config, Clock()), conn)
    assert await worker.settle_once(created + 30 * DAY) == 1
    # 250 fen: 0.6% is 1.5, rounded up to 2, below the 10 fen minimum: the fee is 10.
    paid = answer(await worker.withdraw("alice", "k1", 250))["result"]["withdrawal"]
    assert (paid["status"], paid["amount"], paid["fee"], paid["net"]) == ("paid", 250, 10, 240)
    # A reviewed one keeps the fee it was asked with; rejected, it all comes back.
    held = answer(await worker.withdraw("alice", "k2", 300))["result"]["withdrawal"]
    assert (held["status"], held["fee"]) == ("reviewing", 10)
    assert answer(await worker.review("boss", held["id"], False, None))["ok"]
    assert await balances(conn) == {"shop:commission": -600, "user:alice:available": 350,
                                    "shop:payouts": 240, "shop:withdrawal_fees": 10}
    assert await unbalanced(conn) == []


async def tax_story(clean: Services, shard_factory: Factory, worker_factory: WorkerFactory
                    ) -> tuple[Clock, PipelineWorker, Owner]:
    """A 1,000 fen tax threshold, commission settled at once (a 0-day window), bob bound
    to alice; one clock for the owner and the pipeline, set to each purchase's moment."""
    doc = configs.document([configs.campaign("c1", size=2, stock=100, led=50, joined=50,
                                             pay=False)],
                           shards=1, database_url=clean.database_url,
                           redis_url=clean.redis_url)
    doc["commission"] = {"tax_threshold_fen": 1000, "return_window_days": 0}
    config = parse(doc, {}, "test")
    clock = Clock()
    worker = await worker_factory(config, clock)
    shard = await shard_factory(config, clock)
    assert answer(await worker.bind("bob", "alice"))["ok"]
    return clock, worker, shard


async def test_settled_income_past_the_threshold_flags_a_user_once_a_year(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    clock, worker, shard = await tax_story(clean, shard_factory, worker_factory)
    seen = 0

    async def earn_and_settle(at: datetime) -> list[str]:
        # bob buys once more at `at`: alice earns 600 fen, settled then (a 0-day window).
        nonlocal seen
        clock.set(at)
        await deal(shard, f"c-{at.timestamp()}", "bob")
        await worker.drain()
        await worker.settle()
        assert await conn.fetchval("SELECT count(*) FROM commissions WHERE status = 'settled'"
                                   " AND closed_at = $1", at) == 1
        told = [f["type"] for f in await frames_of(clean, "user:alice")
                if f["type"] in ("commission_settled", "tax_flagged")]
        seen, fresh = len(told), told[seen:]
        return fresh

    # 2030 in Shanghai: 600, then 1,200 (flagged), then 1,800 (flagged already).
    june = datetime(2030, 6, 1, tzinfo=UTC)
    assert await earn_and_settle(june) == ["commission_settled"]
    assert await earn_and_settle(june + DAY) == ["commission_settled", "tax_flagged"]
    assert await earn_and_settle(june + 2 * DAY) == ["commission_settled"]
    # 2030-12-31 17:00 UTC is already 2031 in Shanghai: a new year counts from nothing.
    new_year = datetime(2030, 12, 31, 17, tzinfo=UTC)
    assert await earn_and_settle(new_year) == ["commission_settled"]
    assert await earn_and_settle(new_year + DAY) == ["commission_settled", "tax_flagged"]
    flags = await conn.fetch("SELECT user_id, year, income FROM tax_flags ORDER BY year")
    assert [tuple(r) for r in flags] == [("alice", 2030, 1200), ("alice", 2031, 1200)]
    assert await unbalanced(conn) == []


async def test_income_clawed_back_after_settlement_does_not_count_towards_tax(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    clock, worker, shard = await tax_story(clean, shard_factory, worker_factory)
    june = datetime(2030, 6, 1, tzinfo=UTC)

    async def earn_and_settle(day: int) -> int:
        # bob buys once more: alice earns 600 fen, settled at once (a 0-day window).
        clock.set(june + day * DAY)
        await deal(shard, f"c-{day}", "bob")
        await worker.drain()
        await worker.settle()
        order: int = await conn.fetchval(
            "SELECT max(id) FROM orders WHERE user_id = 'bob'")
        return order

    first = await earn_and_settle(0)
    # The first order comes back whole after sales: its 600 is clawed back.
    back = answer(await worker.refund_after_sales("boss", first, None, "a1", None))
    assert back["result"]["order"]["status"] == "refunded"
    await earn_and_settle(1)  # 1,200 settled, 600 kept: not flagged
    assert await conn.fetchval("SELECT count(*) FROM tax_flags") == 0
    await earn_and_settle(2)  # 1,200 kept: flagged
    flags = await conn.fetch("SELECT user_id, year, income FROM tax_flags")
    assert [tuple(r) for r in flags] == [("alice", 2030, 1200)]
    await worker.published()
    told = [f for f in await frames_of(clean, "user:alice") if f["type"] == "tax_flagged"]
    assert [(f["year"], f["income"]) for f in told] == [(2030, 1200)]
    assert await unbalanced(conn) == []


# --- binding modes ---------------------------------------------------------------------

MINUTE = timedelta(minutes=1)
# A campaign a buyer may join again and again (each deal a pair with a fresh leader).
REPEAT = configs.campaign("c1", size=2, stock=100, joined=10, pay=False)


def binding(config: Config, mode: str, **kwargs: int) -> Config:
    """`config` with its commission's binding mode set."""
    policy = BindingPolicy(mode, **kwargs)
    return replace(config, commission=replace(config.commission, binding=policy))


async def history(conn: asyncpg.Connection, user: str) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT referrer, bound_at, ended_at, ended_by FROM referral_history"
        " WHERE user_id = $1 ORDER BY id", user)
    return [tuple(r) for r in rows]


async def earned(conn: asyncpg.Connection, buyer: str) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        "SELECT order_id, beneficiary, level, status FROM commissions WHERE buyer = $1"
        " ORDER BY order_id, level", buyer)
    return [tuple(r) for r in rows]


async def frames(redis_url: str, user: str, kind: str) -> list[dict[str, Any]]:
    client = aioredis.from_url(redis_url)
    try:
        found = await Live(client, 100, 60).history(f"user:{user}")
    finally:
        await client.aclose()
    return [f["data"] for f in found if f["data"]["type"] == kind]


async def test_an_expiring_binding_moves_once_valid_and_orders_earn_who_is_bound(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = binding(make_config(clean, REPEAT), "expiring", valid_days=7, protect_minutes=30)
    clock = Clock()
    start = clock.now()
    worker = await worker_factory(config, clock)
    shard = await shard_factory(config, clock)
    first = answer(await worker.bind("bob", "alice"))
    assert first["result"]["referral"]["bound_at"] == reads.iso_time(start)
    await deal(shard, "l1", "bob")
    await worker.drain()
    # Six days on, the binding is still alice's alone; alice's own share again changes
    # nothing (nor restarts the validity).
    clock.set(start + 6 * DAY)
    refused = answer(await worker.bind("bob", "carol"))
    assert refused["error"]["code"] == "already_bound", refused
    assert reads.iso_time(start + 7 * DAY) in refused["error"]["message"]
    assert answer(await worker.bind("bob", "alice")) == first
    # Once seven days have passed, carol's share takes bob over.
    clock.set(start + 7 * DAY)
    moved = answer(await worker.bind("bob", "carol"))
    assert moved["result"]["referral"] == {"user": "bob", "referrer": "carol",
                                           "bound_at": reads.iso_time(clock.now())}
    await deal(shard, "l2", "bob")
    await worker.drain()
    # The first order's commission stays alice's; the one after the move is carol's.
    [(order1, *mine), (order2, *theirs)] = await earned(conn, "bob")
    assert order1 < order2
    assert (mine, theirs) == (["alice", 1, "pending"], ["carol", 1, "pending"])
    assert await history(conn, "bob") == [("alice", start, clock.now(), "carol"),
                                          ("carol", clock.now(), None, None)]
    # The referrer who lost bob is told, and so is the one who gained him.
    assert await frames(clean.redis_url, "alice", "referral_moved") == [
        {"type": "referral_moved", "user": "bob"}]
    assert await frames(clean.redis_url, "carol", "referral_bound") == [
        {"type": "referral_bound", "user": "bob"}]
    assert await conn.fetchval("SELECT referrer FROM referrals WHERE user_id = 'bob'") == "carol"


async def test_latest_share_wins_after_protection_and_level_two_is_who_is_bound_then(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = binding(make_config(clean, REPEAT), "latest", protect_minutes=30)
    clock = Clock()
    start = clock.now()
    worker = await worker_factory(config, clock)
    shard = await shard_factory(config, clock)
    # zed brought alice in, alice brought bob.
    for user, referrer in (("alice", "zed"), ("bob", "alice")):
        assert answer(await worker.bind(user, referrer))["ok"]
    await deal(shard, "l1", "bob")
    await worker.drain()
    # Inside the protection window nobody takes bob (nor alice) over.
    clock.set(start + 29 * MINUTE)
    for user, referrer in (("bob", "carol"), ("alice", "yan")):
        refused = answer(await worker.bind(user, referrer))
        assert refused["error"]["code"] == "already_bound", refused
    # Past it, yan takes alice over: bob's next order earns alice, and yan above her.
    clock.set(start + 31 * MINUTE)
    assert answer(await worker.bind("alice", "yan"))["result"]["referral"]["referrer"] == "yan"
    await deal(shard, "l2", "bob")
    await worker.drain()
    # carol takes bob over; the next order earns carol alone (nobody brought carol in).
    assert answer(await worker.bind("bob", "carol"))["ok"]
    await deal(shard, "l3", "bob")
    await worker.drain()
    # ... and alice's share wins bob back once carol's binding is past its protection.
    assert answer(await worker.bind("bob", "alice"))["error"]["code"] == "already_bound"
    clock.set(start + 61 * MINUTE)
    assert answer(await worker.bind("bob", "alice"))["ok"]
    orders = [(who, level) for _, who, level, _ in await earned(conn, "bob")]
    assert orders == [("alice", 1), ("zed", 2), ("alice", 1), ("yan", 2), ("carol", 1)]
    moved_at, back_at = start + 31 * MINUTE, start + 61 * MINUTE
    assert await history(conn, "bob") == [("alice", start, moved_at, "carol"),
                                          ("carol", moved_at, back_at, "alice"),
                                          ("alice", back_at, None, None)]
    assert [r[0] for r in await history(conn, "alice")] == ["zed", "yan"]
    # What a marketer's audit (admin.referrals) shows of it, newest first.
    pool = await asyncpg.create_pool(clean.database_url, min_size=1, max_size=1)
    try:
        audit = await reads.referral_history(pool, "bob", 2)
        brought = (await reads.referral_history(pool, "carol", 10))["brought"]
    finally:
        await pool.close()
    assert [(b["referrer"], b["ended_by"]) for b in audit["bindings"]] == [
        ("alice", None), ("carol", "alice")]
    assert brought == [{"user": "bob", "referrer": "carol", "bound_at": reads.iso_time(moved_at),
                        "ended_at": reads.iso_time(back_at), "ended_by": "alice"}]
    assert await frames(clean.redis_url, "carol", "referral_moved") == [
        {"type": "referral_moved", "user": "bob"}]
    assert await frames(clean.redis_url, "zed", "referral_moved") == [
        {"type": "referral_moved", "user": "alice"}]


@pytest.mark.parametrize("mode", ["permanent", "expiring", "latest"])
async def test_self_binding_and_loops_are_refused_across_rebinding(
        clean: Services, worker_factory: WorkerFactory, mode: str) -> None:
    kwargs = {"valid_days": 1} if mode == "expiring" else {}
    clock = Clock()
    worker = await worker_factory(binding(make_config(clean), mode, **kwargs), clock)

    async def bind(user: str, referrer: str) -> str:
        found = answer(await worker.bind(user, referrer))
        return "ok" if found["ok"] else str(found["error"]["code"])

    assert await bind("a", "a") == "invalid_request"
    assert await bind("a", "b") == "ok"  # b brought a in
    assert await bind("b", "a") == "invalid_request"  # a -> b -> a
    clock.advance(2 * DAY)  # every binding is free to move, where the mode lets it
    assert await bind("b", "b") == "invalid_request"
    if mode == "permanent":
        assert await bind("a", "c") == "already_bound"
        return
    assert await bind("a", "c") == "ok"  # c took a over from b
    assert await bind("b", "a") == "ok"  # a -> c now: b under a makes no loop
    clock.advance(2 * DAY)
    # b -> a -> c: neither a nor c may now be brought in by b, however they move.
    assert await bind("a", "b") == "invalid_request"
    assert await bind("c", "b") == "invalid_request"
    assert await bind("c", "a") == "invalid_request"


@pytest.mark.parametrize("mode", ["permanent", "expiring", "latest"])
async def test_concurrent_binds_never_loop(clean: Services, worker_factory: WorkerFactory,
                                           conn: asyncpg.Connection, mode: str) -> None:
    kwargs = {"valid_days": 1} if mode == "expiring" else {}
    clock = Clock()
    worker = await worker_factory(binding(make_config(clean), mode, **kwargs), clock)
    pairs = [(f"p{i}a", f"p{i}b") for i in range(10)]

    async def at_once() -> list[dict[str, Any]]:
        # 20 binds at once: each pair's two users binding to each other.
        texts = await asyncio.gather(*(worker.bind(*pair) for pair in pairs),
                                     *(worker.bind(b, a) for a, b in pairs))
        return [answer(t) for t in texts]

    first = await at_once()
    for i in range(len(pairs)):
        # Exactly one of each pair's binds won; the other would have closed a loop.
        assert sorted(a["ok"] for a in (first[i], first[i + len(pairs)])) == [False, True]
    clock.advance(2 * DAY)
    # Again, once every binding may move: the winners stand, the others still loop.
    second = await at_once()
    assert [a["ok"] for a in second] == [a["ok"] for a in first]
    assert all(a["error"]["code"] == "invalid_request" for a in second if not a["ok"])
    # A ring of five binding at once, clockwise and against: never a loop.
    ring = [f"r{i}" for i in range(5)]
    await asyncio.gather(*(worker.bind(u, ring[(i + 1) % 5]) for i, u in enumerate(ring)),
                         *(worker.bind(u, ring[i - 1]) for i, u in enumerate(ring)))
    assert await ledger.referral_problems(conn) == []
    assert await conn.fetchval("SELECT count(*) FROM referrals WHERE user_id LIKE 'p%'") == 10
    # Five users in a ring of bindings in force would be a loop: at most four are bound.
    assert 1 <= await conn.fetchval("SELECT count(*) FROM referrals WHERE user_id LIKE 'r%'") <= 4
    # Binding is free: nobody earns for bringing people in, only on their paid orders.
    assert await balances(conn) == {}


async def frames_of(clean: Services, topic: str) -> list[dict[str, Any]]:
    listener = aioredis.from_url(clean.redis_url)
    try:
        return [f["data"] for f in await Live(listener, 100, 60).history(topic)]
    finally:
        await listener.aclose()


async def snapshot(conn: asyncpg.Connection) -> dict[str, object]:
    """Everything a replayed outbox row could write twice."""
    found: dict[str, object] = {}
    for table, order in (("orders", "id"), ("payments", "id"), ("commissions", "id"),
                         ("order_refunds", "order_id, piece"), ("withdrawals", "id"),
                         ("provider_refunds", "refund_id"), ("ledger_entries", "id"),
                         ("game_notices", "id")):
        found[table] = [tuple(r) for r in await conn.fetch(
            f"SELECT * FROM {table} ORDER BY {order}")]
    return found


async def test_an_order_refunds_in_pieces_and_its_commissions_go_back_in_proportion(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    worker = await worker_factory(config)
    assert answer(await worker.bind("alice", "zed"))["ok"]
    await bob_buys_through_alice(worker, await shard_factory(config, Clock()), conn)
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    # 600 (level 1) and 180 (level 2) earned on 6000. A piece of 1000: 100 and 30 back.
    first = answer(await worker.refund("bob", order, 1000, "k1"))
    assert first["ok"], first
    assert (first["result"]["order"]["status"], first["result"]["order"]["refunded_amount"],
            first["result"]["order"]["refunded_at"]) == ("paid", 1000, None)
    # The same key again answers the order again and refunds nothing more; with another
    # amount it is refused.
    assert answer(await worker.refund("bob", order, 1000, "k1")) == first
    assert answer(await worker.refund("bob", order, None, "k1")) == first
    assert answer(await worker.refund("bob", order, 5, "k1"))["error"]["code"] == \
        "invalid_request"
    # 2001 more: 3001 of 6000 refunded, floor(600 × 3001 / 6000) = 300, floor(180 × ...) = 90.
    assert answer(await worker.refund("bob", order, 2001, "k2"))["ok"]
    rows = await conn.fetch("SELECT level, reversed, status FROM commissions ORDER BY level")
    assert [tuple(r) for r in rows] == [(1, 300, "pending"), (2, 90, "pending")]
    assert await balances(conn) == {"shop:commission": -390, "user:alice:pending": 300,
                                    "user:zed:pending": 90}
    # More than the rest is refused, changing nothing; so are pieces of others' orders.
    too_big = answer(await worker.refund("bob", order, 3000, "k3"))
    assert too_big["error"]["code"] == "refund_exceeds_order"
    assert "2999" in too_big["error"]["message"]
    assert answer(await worker.refund("carol", order, 1))["error"]["code"] == "not_found"
    # The rest (no amount): refunded whole, and every commission back exactly.
    rest = answer(await worker.refund("bob", order))
    assert (rest["result"]["order"]["status"], rest["result"]["order"]["refunded_amount"]) \
        == ("refunded", 6000)
    assert rest["result"]["order"]["refunded_at"] is not None
    assert answer(await worker.refund("bob", order)) == rest  # the rest of nothing: again
    rows = await conn.fetch("SELECT reversed, status FROM commissions ORDER BY level")
    assert [tuple(r) for r in rows] == [(600, "reversed"), (180, "reversed")]
    assert await balances(conn) == {}
    pieces = await conn.fetch("SELECT piece, amount FROM order_refunds ORDER BY piece")
    assert [tuple(r) for r in pieces] == [(1, 1000), (2, 2001), (3, 2999)]
    moved = await conn.fetch("SELECT piece, amount FROM payments WHERE kind = 'refund'"
                             " ORDER BY piece")
    assert [tuple(r) for r in moved] == [(1, 1000), (2, 2001), (3, 2999)]
    await worker.published()
    told = [f for f in await frames_of(clean, "user:alice")
            if f["type"] == "commission_reversed"]
    assert [(f["amount"], f["reversed"]) for f in told] == [(100, 100), (200, 300),
                                                           (300, 600)]
    bob = [f["type"] for f in await frames_of(clean, "user:bob") if "refund" in f["type"]]
    assert bob == ["order_partly_refunded", "order_partly_refunded", "order_refunded"]
    # Replaying every outbox row, twice, changes nothing.
    before = await snapshot(conn)
    for _ in range(2):
        await conn.execute("UPDATE outbox SET processed_at = NULL")
        await worker.drain()
    assert await snapshot(conn) == before


async def test_a_partly_refunded_commission_settles_its_rest_then_an_after_sales_refund_takes_it_back(  # noqa: E501
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    worker = await worker_factory(config)
    created = await bob_buys_through_alice(worker, await shard_factory(config, Clock()), conn)
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    assert answer(await worker.refund("bob", order, 1500))["ok"]
    assert await worker.settle_once(created + 30 * DAY) == 1
    # 600 less the 150 the piece took back settles.
    row = await conn.fetchrow("SELECT status, reversed, settled FROM commissions")
    assert tuple(row) == ("settled", 150, 450)
    assert await balances(conn) == {"shop:commission": -450, "user:alice:available": 450}
    # The buyer can no longer refund; a marketer can, after sales, with a note.
    closed = answer(await worker.refund("bob", order, 100))
    assert closed["error"]["code"] == "return_window_closed"
    done = answer(await worker.refund_after_sales("boss", order, 1500, "a1", "damaged"))
    assert done["ok"] and done["result"]["order"]["refunded_amount"] == 3000
    assert await balances(conn) == {"shop:commission": -300, "user:alice:available": 300}
    again = answer(await worker.refund_after_sales("boss", order, 1500, "a1", "damaged"))
    assert again == done
    note = await conn.fetchrow("SELECT asked_by, after_sales, note FROM order_refunds"
                               " WHERE piece = 2")
    assert tuple(note) == ("boss", True, "damaged")
    assert answer(await worker.refund_after_sales("boss", 999, None, None, None)
                  )["error"]["code"] == "not_found"
    # The rest, after sales: the whole commission is back, none of it owed.
    whole = answer(await worker.refund_after_sales("boss", order, None, None, None))
    assert whole["result"]["order"]["status"] == "refunded"
    assert await balances(conn) == {}
    row = await conn.fetchrow("SELECT status, reversed, settled FROM commissions")
    assert tuple(row) == ("settled", 600, 450)


async def test_an_after_sales_refund_beyond_the_balance_is_a_debt_the_next_settlement_pays(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False,
                                                 led=2, joined=2))
    worker = await worker_factory(config)
    shard = await shard_factory(config, Clock())
    created = await bob_buys_through_alice(worker, shard, conn)
    first = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    assert await worker.settle_once(created + 30 * DAY) == 1
    # alice withdraws 500 of her 600: 100 are left when bob's order comes back whole.
    assert answer(await worker.withdraw("alice", "w1", 500))["result"]["withdrawal"][
        "status"] == "paid"
    back = answer(await worker.refund_after_sales("boss", first, None, "a1", None))
    assert back["result"]["order"]["status"] == "refunded"
    assert await balances(conn) == {"shop:payouts": 500, "user:alice:debt": -500}
    # Never capped: 500 owed, shown as a debt; she cannot withdraw what she owes.
    mine = await reads.commissions(worker._pool, "alice", 10)
    assert mine["balance"] == {"pending": 0, "available": 0, "withdrawing": 0, "debt": 500}
    assert mine["commissions"][0]["reversed"] == 600
    refused = answer(await worker.withdraw("alice", "w2", 100))
    assert refused["error"]["code"] == "insufficient_balance"
    # bob buys again; his 600 settles into the debt first (500), the rest (100) available.
    [opened] = await shard.submit([cmd("open", "carol", key="second-open")])
    assert opened["ok"], opened
    [joined] = await shard.submit([cmd("join", "bob", group=opened["result"]["group"]["id"],
                                       key="second-join")])
    assert joined["ok"], joined
    await worker.drain()
    assert await worker.settle_once(datetime.now(UTC) + 31 * DAY) == 1
    assert await balances(conn) == {"shop:commission": -600, "shop:payouts": 500,
                                    "user:alice:available": 100}
    await worker.published()
    told = [f for f in await frames_of(clean, "user:alice")
            if f["type"] in ("commission_clawed_back", "commission_settled")]
    assert [(f["type"], f["amount"], f.get("to_debt"), f.get("debt_paid"), f["debt"])
            for f in told] == [("commission_settled", 600, None, 0, 0),
                               ("commission_clawed_back", 600, 500, None, 500),
                               ("commission_settled", 600, None, 500, 0)]
    # Replaying every outbox row, twice, changes nothing.
    before = await snapshot(conn)
    for _ in range(2):
        await conn.execute("UPDATE outbox SET processed_at = NULL")
        await worker.drain()
    assert await snapshot(conn) == before


async def test_twenty_concurrent_pieces_of_one_order_never_refund_more_than_it_cost(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    worker = await worker_factory(config)
    await bob_buys_through_alice(worker, await shard_factory(config, Clock()), conn)
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    # 20 pieces of 700 at once (14,000 of a 6000 order): 8 fit, 12 are refused.
    racing = [answer(a) for a in await asyncio.gather(*(
        worker.refund("bob", order, 700, f"p{n}") for n in range(20)))]
    assert sorted(a["ok"] for a in racing) == [False] * 12 + [True] * 8
    assert {a["error"]["code"] for a in racing if not a["ok"]} == {"refund_exceeds_order"}
    assert await conn.fetchval("SELECT refunded_amount FROM orders WHERE id = $1",
                               order) == 5600
    assert await conn.fetchval("SELECT reversed FROM commissions") == 560
    assert answer(await worker.refund("bob", order))["result"]["order"]["status"] == \
        "refunded"
    assert await conn.fetchval("SELECT sum(amount) FROM payments WHERE kind = 'refund'") \
        == 6000


async def test_a_return_window_of_seconds_closes_and_settles_within_seconds(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    config = replace(config, commission=replace(config.commission, window_seconds=60))
    clock = Clock()
    worker = await worker_factory(config, clock)
    assert answer(await worker.bind("bob", "alice"))["ok"]
    shard = await shard_factory(config, clock)
    await deal(shard, "carol", "bob")
    await worker.drain()
    order, confirmed = await conn.fetchrow(
        "SELECT id, confirmed_at FROM orders WHERE user_id = 'bob'")
    assert await conn.fetchval("SELECT settle_at FROM commissions WHERE order_id = $1",
                               order) == confirmed + timedelta(seconds=60)
    assert answer(await worker.refund("bob", order, 1000))["ok"]  # inside the window
    clock.advance(timedelta(seconds=61))
    refused = answer(await worker.refund("bob", order, 1000))
    assert refused["error"]["code"] == "return_window_closed"
    await worker.settle()  # what the timer does at the clock's time (it may have already)
    assert await conn.fetchval("SELECT status FROM commissions WHERE order_id = $1",
                               order) == "settled"
    # The bench's mix checks agree with the audit: a sound ledger breaks none of them.
    found = await mix.invariants(conn)
    assert {k: found[k] for k in mix.BROKEN} == dict.fromkeys(mix.BROKEN, 0)


@pytest.mark.raw_ledger
async def test_the_bench_mix_checks_find_a_refund_its_pieces_do_not_add_up_to(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    worker = await worker_factory(config)
    assert answer(await worker.bind("bob", "alice"))["ok"]
    shard = await shard_factory(config, Clock())
    await deal(shard, "carol", "bob")
    await worker.drain()
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    assert answer(await worker.refund("bob", order, 1777))["ok"]
    # An order that says it refunded more than its pieces (and than its commission's
    # reversal follows from): both counted, and the audit says so too.
    await conn.execute("UPDATE orders SET refunded_amount = refunded_amount + 1000"
                       " WHERE id = $1", order)
    found = await mix.invariants(conn)
    assert found["refunded_mismatch"] == 1
    assert found["reversal_mismatch"] == 1
    assert found["audit_problems"] >= 1 and found["audit_first"]
    assert mix.failures({"deals": 1, "refund_pieces": 1, "invariants": found})


# --- one clock -------------------------------------------------------------------------

UTC8 = timedelta(hours=8)  # Asia/Shanghai, the default tax_zone (no daylight saving)


def shanghai(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A wall time in Shanghai, as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=UTC) - UTC8


async def test_one_movable_clock_drives_the_owner_and_the_pipeline_through_months(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,
        conn: asyncpg.Connection) -> None:
    """Settlement after 30 days, the return window, binding expiry, the tax year and the
    grade month all follow ONE clock an owner and the pipeline share; nothing sleeps and
    nothing edits a time in the database."""
    doc = configs.document([REPEAT], shards=1, database_url=clean.database_url,
                           redis_url=clean.redis_url)
    doc["commission"] = {"tax_threshold_fen": 1100, "grades": [
        {"id": "normal", "title": "普通"},
        {"id": "silver", "title": "银牌", "level1_bps": 2000, "level2_bps": 0,
         "min_settled_sales_month_fen": 3 * PRICE}]}
    config = binding(parse(doc, {}, "test"), "expiring", valid_days=7)
    t0 = shanghai(2030, 11, 20, 12)
    clock = Clock(t0)
    worker = await worker_factory(config, clock)
    shard = await shard_factory(config, clock)
    assert answer(await worker.bind("bob", "alice"))["ok"]
    assert answer(await worker.bind("dan", "erin"))["ok"]
    await deal(shard, "l1", "bob")
    await worker.drain()
    first = await conn.fetchrow("SELECT id, created_at, confirmed_at FROM orders"
                                " WHERE user_id = 'bob'")
    # The order is made and confirmed at the clock's time, its window due 30 days on.
    assert (first["created_at"], first["confirmed_at"]) == (t0, t0)
    assert await conn.fetchval("SELECT settle_at FROM commissions") == t0 + 30 * DAY
    # An expiring binding (7 days) holds for six days, and is free to move at seven.
    clock.set(t0 + 6 * DAY)
    assert answer(await worker.bind("dan", "frank"))["error"]["code"] == "already_bound"
    clock.set(t0 + 7 * DAY)
    moved = answer(await worker.bind("dan", "frank"))["result"]["referral"]
    assert moved == {"user": "dan", "referrer": "frank", "bound_at": reads.iso_time(clock.now())}
    # Four more orders, confirmed so that they settle (30 days on) either side of the
    # new year in Shanghai: 12-31 23:30, 01-01 00:30 (still 2030 in UTC), 01-05, 01-06.
    for n, at in enumerate((shanghai(2030, 12, 1, 23, 30), shanghai(2030, 12, 2, 0, 30),
                            shanghai(2030, 12, 6, 12), shanghai(2030, 12, 7, 12)), 2):
        clock.set(at)
        await deal(shard, f"l{n}", "bob")
        await worker.drain()
    due = [r["settle_at"] for r in await conn.fetch("SELECT settle_at FROM commissions"
                                                    " ORDER BY id")]
    assert due[1:] == [shanghai(2030, 12, 31, 23, 30), shanghai(2031, 1, 1, 0, 30),
                       shanghai(2031, 1, 5, 12), shanghai(2031, 1, 6, 12)]

    async def settled() -> list[int]:
        await worker.settle()  # what the timer would do at the clock's time, at once
        rows = await conn.fetch("SELECT order_id FROM commissions WHERE status = 'settled'"
                                " ORDER BY order_id")
        return [r["order_id"] for r in rows]

    async def flags() -> list[tuple[Any, ...]]:
        rows = await conn.fetch("SELECT user_id, year, income FROM tax_flags ORDER BY year")
        return [tuple(r) for r in rows]

    async def grade() -> str | None:
        found: str | None = await conn.fetchval(
            "SELECT grade FROM distributor_grades WHERE user_id = 'alice'")
        return found

    orders = [r["id"] for r in await conn.fetch(
        "SELECT id FROM orders WHERE user_id = 'bob' ORDER BY id")]
    # 29 days on: nothing has settled and the buyer may still refund (a piece of 1000:
    # alice's 600 loses 100).
    clock.set(t0 + 29 * DAY)
    assert await settled() == []
    assert answer(await worker.refund("bob", first["id"], 1000))["ok"]
    # 30 days on it settles (its rest, 500); 31 days on the refund is refused.
    clock.set(t0 + 30 * DAY)
    assert await settled() == orders[:1]
    clock.set(t0 + 31 * DAY)
    refused = answer(await worker.refund("bob", first["id"], 1000))
    assert refused["error"]["code"] == "return_window_closed"
    assert (await flags(), await grade()) == ([], None)
    # 12-31 23:30 in Shanghai: 500 + 600 settled in 2030 reach the 1,100 fen threshold.
    clock.set(shanghai(2030, 12, 31, 23, 30))
    assert await settled() == orders[:2]
    assert await flags() == [("alice", 2030, 1100)]
    # 01-01 00:30 in Shanghai: a new tax year from nothing (600, not flagged), and a new
    # grade month: December's 12,000 fen of sales do not count towards January's.
    clock.set(shanghai(2031, 1, 1, 0, 30))
    assert await settled() == orders[:3]
    assert (await flags(), await grade()) == ([("alice", 2030, 1100)], None)
    clock.set(shanghai(2031, 1, 5, 12))
    assert await settled() == orders[:4]
    assert await flags() == [("alice", 2030, 1100), ("alice", 2031, 1200)]
    assert await grade() is None  # January: 12,000 fen
    clock.set(shanghai(2031, 1, 6, 12))
    assert await settled() == orders
    assert await grade() == "silver"  # January: 18,000 fen
    changed = await conn.fetchrow("SELECT sales_month, changed_at FROM grade_changes")
    assert tuple(changed) == (3 * PRICE, clock.now())
    closed = await conn.fetch("SELECT closed_at FROM commissions ORDER BY order_id")
    assert [r["closed_at"] for r in closed] == [t0 + 30 * DAY, *due[1:]]


class _Watched(PipelineWorker):
    """A pipeline that records the batches its own loop works through, and runs `hook`
    once, right after its first settlement batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.steps: list[tuple[str, int]] = []
        self.hook: Callable[[], Any] | None = None
        self.done = asyncio.Event()

    async def drain_once(self, *, wait: bool = False) -> int:
        n = await super().drain_once(wait=wait)
        if n:
            self.steps.append(("drain", n))
        return n

    async def settle_once(self, now: datetime | None = None) -> int:
        n = await super().settle_once(now)
        if n:
            self.steps.append(("settle", n))
            if self.hook is not None:
                hook, self.hook = self.hook, None
                await hook()
            if sum(k for step, k in self.steps if step == "settle") >= 3:
                self.done.set()
        return n


async def test_a_deal_waits_behind_one_batch_of_settlements_not_all_that_fell_due(
        clean: Services, shard_factory: Factory, conn: asyncpg.Connection) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, pay=False))
    config = replace(config, pipeline=replace(config.pipeline, batch_size=1,
                                              poll_interval_ms=20))
    clock = Clock()
    worker = _Watched(config, clean.database_url, clean.redis_url, clock=clock)
    await worker.start()
    try:
        shard = await shard_factory(config, clock)
        for n in range(4):
            assert answer(await worker.bind(f"bob{n}", "alice"))["ok"]
        for n in range(3):
            await deal(shard, f"carol{n}", f"bob{n}")
        await worker.drain()
        assert await conn.fetchval("SELECT count(*) FROM commissions") == 3
        worker.steps.clear()

        async def deal_meanwhile() -> None:
            await deal(shard, "carol3", "bob3")

        worker.hook = deal_meanwhile
        clock.advance(31 * DAY)  # three commissions due at once, settled one a batch
        async with asyncio.timeout(30):
            await worker.done.wait()
    finally:
        await worker.stop()
    # The deal made after the first settlement batch is drained before the second.
    assert worker.steps == [("settle", 1), ("drain", 1), ("settle", 1), ("settle", 1)]
    assert await conn.fetchval("SELECT count(*) FROM orders WHERE user_id = 'bob3'") == 1
