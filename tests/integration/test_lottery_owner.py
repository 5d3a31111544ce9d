"""The lottery on the generic owner, against real Postgres: the commitment from the
start and across restarts, draws by the day, the reveal and an audit that verifies, and
a product won becoming one 0-fen order."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg
import pytest

from actors.pipeline_worker import PipelineWorker
from games.lottery import fairness
from games.lottery.campaign import LotteryCampaign
from tests.integration.conftest import T0, Clock, Factory, make_config
from tests.support import configs
from tests.support.services import Services

pytestmark = pytest.mark.integration

HOUR = 3_600_000
# T0 is 01:46:40 on 2030-03-18 in Asia/Shanghai; free draws come back at 06:00 there.
RESET = T0 + 4 * HOUR + 13 * 60_000 + 20_000


def lcmd(method: str, user: str, key: str | None = None, campaign: str = "l1",
         **params: Any) -> dict[str, Any]:
    return {"method": f"lottery.{method}", "campaign": campaign, "user": user, "key": key,
            "params": params}


async def _row(url: str) -> asyncpg.Record:
    conn = await asyncpg.connect(url)
    try:
        row = await conn.fetchrow("SELECT * FROM lotteries WHERE campaign = 'l1'")
    finally:
        await conn.close()
    assert row is not None
    return row


async def test_committed_from_the_start_kept_across_restarts_and_revealed_at_the_end(
        clean: Services, shard_factory: Factory) -> None:
    ends = "2030-03-20T00:00:00+00:00"
    config = make_config(clean, configs.lottery("l1", free=2, reset_at="06:00", ends_at=ends))
    clock = Clock()
    shard = await shard_factory(config, clock)
    await shard.expire_due()  # the seed's deadline is due at once
    committed = (await _row(clean.database_url))["commitment"]
    assert committed is not None and len(committed) == 64
    [looked] = await shard.submit([lcmd("get", "alice")])
    assert looked["result"]["lottery"]["commitment"] == committed
    assert looked["result"]["lottery"]["seed"] is None
    assert looked["result"]["lottery"]["draws_left"] == 2

    draws = await shard.submit([lcmd("draw", "alice", key=f"a{n}") for n in range(3)])
    assert [d["ok"] for d in draws] == [True, True, False]
    assert draws[2]["error"]["code"] == "no_draws_left"
    assert [d["result"]["draw"]["n"] for d in draws[:2]] == [1, 2]
    # The same key again is the same draw, not another one.
    [again] = await shard.submit([lcmd("draw", "alice", key="a0")])
    assert again == draws[0]

    # A restart replays the events: the same commitment, the same tallies.
    await shard.stop()
    shard = await shard_factory(config, clock)
    await shard.expire_due()
    assert (await _row(clean.database_url))["commitment"] == committed
    [still] = await shard.submit([lcmd("draw", "alice", key="a9")])
    assert still["error"]["code"] == "no_draws_left"
    # Free draws come back at 06:00 Shanghai time, not at UTC midnight.
    clock.ms = RESET - 1
    [early] = await shard.submit([lcmd("draw", "alice", key="a10")])
    assert early["error"]["code"] == "no_draws_left"
    clock.ms = RESET
    [back] = await shard.submit([lcmd("draw", "alice", key="a11")])
    assert back["ok"] and back["result"]["draw"]["n"] == 3
    [bob] = await shard.submit([lcmd("draw", "bob", key="b0")])
    assert bob["ok"]

    [early_audit] = await shard.submit([lcmd("audit", "carol")])
    assert early_audit["error"]["code"] == "not_revealed"
    clock.ms = config.campaign("l1").ends_at  # type: ignore[union-attr]
    assert await shard.expire_due() == 1  # the reveal
    row = await _row(clean.database_url)
    assert row["status"] == "ended" and row["seed"] is not None
    seed = bytes.fromhex(row["seed"])
    assert hashlib.sha256(seed).hexdigest() == committed
    [audit] = await shard.submit([lcmd("audit", "carol")])
    result = audit["result"]
    assert result["lottery"]["seed"] == row["seed"]
    drawn = [(d["user"], d["n"], d["prize"]) for d in result["draws"]]
    assert [d[:2] for d in drawn] == [("alice", 1), ("alice", 2), ("alice", 3), ("bob", 1)]
    campaign = config.campaign("l1")
    assert isinstance(campaign, LotteryCampaign)
    verdict = fairness.verify(seed, committed, "l1", campaign.prizes, drawn)
    assert verdict.ok and verdict.checked == 4, verdict
    [mine] = await shard.submit([lcmd("draws", "alice")])
    assert [d["n"] for d in mine["result"]["draws"]] == [1, 2, 3]


async def test_a_product_won_is_one_order_at_zero_fen_with_no_commission(
        clean: Services, shard_factory: Factory) -> None:
    only_product = [{"id": "teapot", "title": "Teapot", "kind": "product", "sku": "POT",
                     "weight": 1, "stock": 1},
                    {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 0}]
    config = make_config(clean, configs.lottery("l1", prizes=only_product))
    shard = await shard_factory(config, Clock())
    [won, lost] = await shard.submit([lcmd("draw", "alice", key="a"),
                                      lcmd("draw", "bob", key="b")])
    assert won["result"]["draw"]["prize"]["id"] == "teapot"
    assert lost["result"]["draw"]["prize"]["id"] == "thanks"  # the stock is gone
    worker = PipelineWorker(config, clean.database_url)
    await worker.start()
    conn = await asyncpg.connect(clean.database_url)
    try:
        await worker.drain()
        await conn.execute("UPDATE outbox SET processed_at = NULL")
        await worker.drain()  # a replayed outbox makes nothing twice
        orders = await conn.fetch("SELECT kind, user_id, sku, amount FROM orders")
        assert [tuple(r) for r in orders] == [("lottery", "alice", "POT", 0)]
        assert await conn.fetchval("SELECT count(*) FROM commissions") == 0
    finally:
        await conn.close()
        await worker.stop()


async def test_a_paid_order_earns_one_draw_once_and_its_refund_takes_it_back(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=2),
                         configs.lottery("l1", free=1, per_order=1))
    clock = Clock()
    shard = await shard_factory(config, clock)
    opened = await shard.submit([{"method": "groupbuy.open", "campaign": "c1",
                                  "user": "alice", "key": "o", "params": {}}])
    group = opened[0]["result"]["group"]["id"]
    await shard.submit([{"method": "groupbuy.join", "campaign": "c1", "user": "bob",
                         "key": "j", "params": {"group": group}}])

    async def draws_left(user: str) -> int:
        [looked] = await shard.submit([lcmd("get", user)])
        left: int = looked["result"]["lottery"]["draws_left"]
        return left

    owners = [shard]  # the current owner: the worker's notices go to it

    async def send(commands: list[dict[str, Any]]) -> list[str]:
        replies: list[str] = await owners[-1].submit_json(commands)
        return replies

    async def all_delivered() -> bool:
        # The worker's own loop delivers too: whoever does, nothing is left unsent.
        await worker.deliver_notices()
        done: bool = await conn.fetchval(
            "SELECT count(*) FROM game_notices WHERE sent_at IS NULL") == 0
        return done

    worker = PipelineWorker(config, clean.database_url, send=send)
    await worker.start()
    conn = await asyncpg.connect(clean.database_url)
    try:
        await worker.drain()
        assert await all_delivered()
        assert await conn.fetchval("SELECT count(*) FROM game_notices") == 2  # both orders
        assert await draws_left("alice") == 2 and await draws_left("bob") == 2
        # A replayed outbox makes no order twice, so no notice; a notice delivered again,
        # even after the owner's remembered answers are gone, grants nothing again.
        await conn.execute("UPDATE outbox SET processed_at = NULL")
        await worker.drain()
        await shard.stop()
        await conn.execute("DELETE FROM command_results")
        shard = await shard_factory(config, clock)
        owners.append(shard)
        await conn.execute("UPDATE game_notices SET sent_at = NULL")
        assert await all_delivered()
        assert await conn.fetchval("SELECT count(*) FROM game_notices") == 2
        assert await draws_left("alice") == 2
        # Alice uses her earned draw... bob does not; both refund.
        [drawn] = await shard.submit([lcmd("draw", "alice", key="d1")])
        [drawn2] = await shard.submit([lcmd("draw", "alice", key="d2")])
        assert drawn["ok"] and drawn2["ok"] and drawn2["result"]["draws_left"] == 0
        orders = {r["user_id"]: r["id"] for r in await conn.fetch(
            "SELECT id, user_id FROM orders WHERE kind = 'groupbuy'")}
        # A piece of bob's order refunded: the lottery hears nothing, his draw stands.
        assert json.loads(await worker.refund("bob", orders["bob"], 1000))["ok"]
        assert await all_delivered()
        assert await conn.fetchval("SELECT count(*) FROM game_notices") == 2
        assert await draws_left("bob") == 2
        for user in ("alice", "bob"):  # refunded whole (bob's, its rest)
            refunded = json.loads(await worker.refund(user, orders[user]))
            assert refunded["ok"], refunded
        assert await all_delivered()
        assert await conn.fetchval("SELECT count(*) FROM game_notices") == 4  # + 2 refunds
        assert await draws_left("bob") == 1  # his unused earned draw is gone
        assert await draws_left("alice") == 0  # hers was used: the draw stands
        [mine] = await shard.submit([lcmd("draws", "alice")])
        assert len(mine["result"]["draws"]) == 2
    finally:
        await conn.close()
        await worker.stop()
