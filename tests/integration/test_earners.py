"""Who earns, self-purchase and distributor grades: the pipeline on real Postgres and Redis.

Deals come from a real shard owner; the pipeline worker turns them into orders and
commissions, settles them on a hand-given time and raises grades as they settle.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis

from actors.pipeline_worker import PipelineWorker
from storage.config import Config, parse
from storage.live import Live
from storage.reads import iso_time
from tests.integration.conftest import Clock, Factory, cmd
from tests.integration.test_commissions import (  # noqa: F401 (fixtures)
    WorkerFactory,
    answer,
    conn,
    sound_ledger,
    worker_factory,
)
from tests.support import configs
from tests.support.services import Services

pytestmark = pytest.mark.integration

PRICE = 6000  # configs.campaign's group price, fen
DAY = timedelta(days=1)


def campaign(cid: str, **commission: int) -> dict[str, Any]:
    table = configs.campaign(cid, size=2, stock=100, led=20, joined=20, pay=False)
    if commission:
        table["commission"] = commission
    return table


def config_of(clean: Services, commission: dict[str, Any], *campaigns: dict[str, Any]
              ) -> Config:
    doc = configs.document(list(campaigns) or [campaign("c1")], shards=1,
                           database_url=clean.database_url, redis_url=clean.redis_url)
    doc["commission"] = commission
    for table in doc["campaigns"]:
        table.setdefault("pay_to_join", False)
    return parse(doc, {}, "test")


async def pair(shard: Any, leader: str, joiner: str, campaign_id: str = "c1") -> None:
    """`leader` opens a pair in `campaign_id`, `joiner` completes it: two orders."""
    [opened] = await shard.submit([cmd("open", leader, campaign=campaign_id)])
    assert opened["ok"], opened
    [joined] = await shard.submit([cmd("join", joiner, campaign=campaign_id,
                                       group=opened["result"]["group"]["id"])])
    assert joined["ok"], joined


async def earned(db: asyncpg.Connection, buyer: str | None = None
                 ) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT c.buyer, c.campaign, c.level, c.beneficiary, c.rate_bps, c.amount"
        " FROM commissions c WHERE $1::text IS NULL OR c.buyer = $1 ORDER BY c.id", buyer)
    return [tuple(r) for r in rows]


async def bind_all(worker: PipelineWorker, *pairs: tuple[str, str]) -> None:
    for user, referrer in pairs:
        assert answer(await worker.bind(user, referrer))["ok"]


async def test_only_approved_distributors_earn(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,  # noqa: F811
        conn: asyncpg.Connection) -> None:  # noqa: F811
    config = config_of(clean, {"earners": "approved"})
    clock = Clock()
    worker = await worker_factory(config, clock)
    await bind_all(worker, ("alice", "zed"), ("bob", "alice"))
    # Applying is idempotent; a marketer approves alice (a day later, by the pipeline's
    # clock, as every time the pipeline records); zed never applied.
    applied = answer(await worker.distributor("alice", "apply", "alice"))
    assert applied["result"]["distributor"]["status"] == "applied", applied
    assert applied["result"]["distributor"]["applied_at"] == iso_time(clock.now())
    assert answer(await worker.distributor("alice", "apply", "alice")) == applied
    missing = answer(await worker.distributor("zed", "approve", "boss"))
    assert missing["error"]["code"] == "not_found"
    clock.advance(timedelta(days=1))
    approved = answer(await worker.distributor("alice", "approve", "boss"))
    assert approved["result"]["distributor"]["decided_by"] == "boss"
    assert approved["result"]["distributor"]["decided_at"] == iso_time(clock.now())
    assert answer(await worker.distributor("alice", "approve", "boss")) == approved
    again = answer(await worker.distributor("alice", "apply", "alice"))
    assert again["error"]["code"] == "already_distributor"
    shard = await shard_factory(config, clock)
    await pair(shard, "carol", "bob")
    await worker.drain()
    # alice earns level 1; zed, not approved, earns nothing, and nobody takes their level.
    assert await earned(conn) == [("bob", "c1", 1, "alice", 1000, PRICE // 10)]
    # Revoked: alice's next referral earns nobody anything.
    assert answer(await worker.distributor("alice", "revoke", "boss"))["ok"]
    await pair(shard, "carol", "bob")
    await worker.drain()
    assert len(await earned(conn)) == 1
    # Every status change is on the user's topic and in the audit trail.
    await worker.published()
    listener = aioredis.from_url(clean.redis_url)
    try:
        frames = await Live(listener, 100, 60).history("user:alice")
    finally:
        await listener.aclose()
    statuses = [f["data"]["distributor"]["status"] for f in frames
                if f["data"]["type"] == "distributor_status"]
    assert statuses == ["applied", "approved", "revoked"]
    trail = await conn.fetch("SELECT status, actor FROM distributor_changes ORDER BY id")
    assert [tuple(r) for r in trail] == [("applied", "alice"), ("approved", "boss"),
                                         ("revoked", "boss")]


async def test_a_spend_threshold_lets_buyers_earn_once_they_spent_it(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,  # noqa: F811
        conn: asyncpg.Connection) -> None:  # noqa: F811
    config = config_of(clean, {"earners": "spend", "earner_min_spend_fen": PRICE})
    worker = await worker_factory(config)
    await bind_all(worker, ("bob", "alice"))
    shard = await shard_factory(config, Clock())
    await pair(shard, "carol", "bob")
    await worker.drain()
    assert await earned(conn) == []  # alice has bought nothing herself yet
    # alice buys once (6000 fen, the threshold), then refers bob's next order.
    await pair(shard, "alice", "dan")
    await worker.drain()
    await pair(shard, "carol", "bob")
    await worker.drain()
    assert await earned(conn) == [("bob", "c1", 1, "alice", 1000, PRICE // 10)]
    # A refund takes the spend back below the threshold: no more earning.
    order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'alice'")
    assert answer(await worker.refund("alice", order))["ok"]
    await pair(shard, "carol", "bob")
    await worker.drain()
    assert len(await earned(conn)) == 1


@pytest.mark.parametrize(("self_purchase", "expected"), [
    (False, [("bob", "c1", 1, "alice", 1000, 600), ("bob", "c1", 2, "zed", 300, 180)]),
    # On: bob is his own level 1, alice level 2; zed, a third level, never earns.
    (True, [("bob", "c1", 1, "bob", 1000, 600), ("bob", "c1", 2, "alice", 300, 180)]),
])
async def test_self_purchase_earns_the_buyer_level_one(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,  # noqa: F811
        conn: asyncpg.Connection, self_purchase: bool,  # noqa: F811
        expected: list[tuple[Any, ...]]) -> None:
    config = config_of(clean, {"self_purchase": self_purchase})
    worker = await worker_factory(config)
    await bind_all(worker, ("alice", "zed"), ("bob", "alice"))
    await pair(await shard_factory(config, Clock()), "carol", "bob")
    await worker.drain()
    assert await earned(conn, "bob") == expected
    # carol, unbound, earns on her own order only when self-purchase is on.
    assert await earned(conn, "carol") == (
        [("carol", "c1", 1, "carol", 1000, 600)] if self_purchase else [])


async def test_self_purchase_pays_only_approved_distributors(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,  # noqa: F811
        conn: asyncpg.Connection) -> None:  # noqa: F811
    config = config_of(clean, {"self_purchase": True, "earners": "approved"})
    worker = await worker_factory(config)
    await bind_all(worker, ("bob", "alice"))
    for user in ("bob", "alice"):
        assert answer(await worker.distributor(user, "apply", user))["ok"]
    assert answer(await worker.distributor("alice", "approve", "boss"))["ok"]
    await pair(await shard_factory(config, Clock()), "carol", "bob")
    await worker.drain()
    # bob only applied: his own order earns him nothing, and his referrer alice keeps
    # her level 1 (self-purchase does not apply to a non-distributor).
    assert await earned(conn) == [("bob", "c1", 1, "alice", 1000, 600)]


GRADES: list[dict[str, Any]] = [
    {"id": "normal", "title": "普通"},
    {"id": "silver", "title": "银牌", "level1_bps": 2000, "level2_bps": 500,
     "min_settled_sales_month_fen": PRICE, "min_direct_buyers": 1, "match": "all"},
    {"id": "gold", "title": "金牌", "level1_bps": 3000, "level2_bps": 600,
     "min_settled_sales_month_fen": 100 * PRICE},
]


async def test_a_grade_raised_at_settlement_pays_from_the_next_order(
        clean: Services, shard_factory: Factory, worker_factory: WorkerFactory,  # noqa: F811
        conn: asyncpg.Connection) -> None:  # noqa: F811
    config = config_of(clean, {"grades": GRADES}, campaign("c1"),
                       campaign("own", level1_bps=500, level2_bps=0),
                       campaign("off", level1_bps=0, level2_bps=0))
    worker = await worker_factory(config)
    await bind_all(worker, ("alice", "zed"), ("bob", "alice"))
    shard = await shard_factory(config, Clock())
    await pair(shard, "carol", "bob")
    await worker.drain()
    first = await earned(conn)
    assert first == [("bob", "c1", 1, "alice", 1000, 600), ("bob", "c1", 2, "zed", 300, 180)]
    created = await conn.fetchval("SELECT created_at FROM orders WHERE user_id = 'bob'")
    # A day early, nothing settles and nobody moves up.
    assert await worker.settle_once(created + 29 * DAY) == 0
    assert await conn.fetchval("SELECT count(*) FROM distributor_grades") == 0
    assert await worker.settle_once(created + 30 * DAY) == 2
    # alice's 6000 fen of level-1 sales settled this month, and bob bought: silver. zed's
    # share was level 2 (no sales of his own) and he has no direct buyer: normal still.
    grades = await conn.fetch("SELECT user_id, grade FROM distributor_grades")
    assert [tuple(r) for r in grades] == [("alice", "silver")]
    history = await conn.fetchrow("SELECT * FROM grade_changes")
    assert (history["user_id"], history["from_grade"], history["to_grade"],
            history["sales_month"], history["direct_buyers"]) == (
        "alice", "normal", "silver", PRICE, 1)
    # Settling again changes nothing: the grade is not raised twice.
    assert await worker.settle_once(created + 31 * DAY) == 0
    assert await conn.fetchval("SELECT count(*) FROM grade_changes") == 1
    # Never retroactive: the first order's commission keeps its rate and amount.
    assert await earned(conn) == first
    # The next order pays alice silver's level 1; zed's level 2 stays at normal's rate.
    await pair(shard, "carol", "bob")
    # A campaign with rates of its own beats the grade; one with commission off pays none.
    await pair(shard, "carol", "bob", "own")
    await pair(shard, "carol", "bob", "off")
    await worker.drain()
    assert (await earned(conn))[2:] == [
        ("bob", "c1", 1, "alice", 2000, 1200), ("bob", "c1", 2, "zed", 300, 180),
        ("bob", "own", 1, "alice", 500, 300)]
    await worker.published()
    listener = aioredis.from_url(clean.redis_url)
    try:
        frames = await Live(listener, 100, 60).history("user:alice")
    finally:
        await listener.aclose()
    changed = [f["data"] for f in frames if f["data"]["type"] == "grade_changed"]
    assert [(d["from"], d["grade"], d["title"], d["level1_bps"]) for d in changed] == [
        ("normal", "silver", "银牌", 2000)]
