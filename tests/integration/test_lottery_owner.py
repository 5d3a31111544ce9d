"""The lottery on the generic owner, against real Postgres: the commitment from the
start and across restarts, draws by the day, the reveal and an audit that verifies, and
a product won becoming one 0-fen order."""

from __future__ import annotations

import hashlib
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
    clock.now = RESET - 1
    [early] = await shard.submit([lcmd("draw", "alice", key="a10")])
    assert early["error"]["code"] == "no_draws_left"
    clock.now = RESET
    [back] = await shard.submit([lcmd("draw", "alice", key="a11")])
    assert back["ok"] and back["result"]["draw"]["n"] == 3
    [bob] = await shard.submit([lcmd("draw", "bob", key="b0")])
    assert bob["ok"]

    [early_audit] = await shard.submit([lcmd("audit", "carol")])
    assert early_audit["error"]["code"] == "not_revealed"
    clock.now = config.campaign("l1").ends_at  # type: ignore[union-attr]
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
