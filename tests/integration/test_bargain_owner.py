"""The bargain on the generic owner, against real Postgres: deals, expiry, restarts."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from actors.pipeline_worker import PipelineWorker
from tests.integration.conftest import Clock, Factory, make_config
from tests.support import configs
from tests.support.services import Services

pytestmark = pytest.mark.integration


def bcmd(method: str, user: str, bargain: str | None = None, key: str | None = None,
         campaign: str = "b1") -> dict[str, Any]:
    params = {} if bargain is None else {"bargain": bargain}
    return {"method": f"bargain.{method}", "campaign": campaign, "user": user, "key": key,
            "params": params}


async def _start(shard: Any, initiator: str) -> str:
    [started] = await shard.submit([bcmd("start", initiator, key="s")])
    assert started["ok"], started
    bid: str = started["result"]["bargain"]["id"]
    return bid


async def _helped_to_floor(shard: Any, initiator: str, helpers: int,
                           bid: str | None = None) -> str:
    bid = bid or await _start(shard, initiator)
    answers = await shard.submit([bcmd("help", f"{initiator}-h{n}", bid) for n in range(helpers)])
    assert all(a["ok"] for a in answers), answers
    assert answers[-1]["result"]["bargain"]["status"] == "floor_reached"
    return bid


async def test_a_bought_bargain_is_exactly_one_order(clean: Services,
                                                     shard_factory: Factory) -> None:
    config = make_config(clean, configs.bargain("b1", helpers=3, stock=5))
    shard = await shard_factory(config, Clock())
    bid = await _helped_to_floor(shard, "alice", 3)
    [bought] = await shard.submit([bcmd("buy", "alice", bid, key="buy")])
    assert bought["ok"] and bought["result"]["order"]["amount"] == 1000, bought
    worker = PipelineWorker(config, clean.database_url)
    await worker.start()
    conn = await asyncpg.connect(clean.database_url)
    try:
        await worker.drain()
        orders = await conn.fetch("SELECT kind, instance, line, user_id, amount FROM orders")
        assert [tuple(r) for r in orders] == [("bargain", bid, "buy", "alice", 1000)]
        # Replaying the whole outbox creates nothing twice.
        await conn.execute("UPDATE outbox SET processed_at = NULL")
        await worker.drain()
        assert await conn.fetchval("SELECT count(*) FROM orders") == 1
        assert await conn.fetchval("SELECT count(*) FROM payments") == 1
    finally:
        await conn.close()
        await worker.stop()


async def test_an_unbought_bargain_expires_on_time_and_releases_its_stock(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, configs.bargain("b1", helpers=2, stock=1, started=5,
                                                pay_within=60))
    clock = Clock()
    shard = await shard_factory(config, clock)
    held, other = await _start(shard, "alice"), await _start(shard, "bob")
    await _helped_to_floor(shard, "alice", 2, held)
    assert (await shard.ready())["campaigns"]["b1"]["stock_left"] == 0
    # The only unit is held: a second bargain reaching its floor holds nothing.
    await _helped_to_floor(shard, "bob", 2, other)
    [refused] = await shard.submit([bcmd("buy", "bob", other)])
    assert refused["error"]["code"] == "out_of_stock", refused
    clock.ms += 59_000
    await shard.expire_due()
    assert (await shard.ready())["campaigns"]["b1"]["stock_left"] == 0  # not yet
    clock.ms += 1_000
    assert await shard.expire_due() >= 1
    assert shard.instance("b1", held)["status"] == "expired"
    assert (await shard.ready())["campaigns"]["b1"]["stock_left"] == 1
    # The unit is back: bob can buy his bargain now.
    [bought] = await shard.submit([bcmd("buy", "bob", other)])
    assert bought["ok"], bought
    # A restarted owner rebuilds the same state from Postgres.
    summary = await shard.ready()
    await shard.stop()
    reborn = await shard_factory(config, clock)
    assert (await reborn.ready())["campaigns"] == summary["campaigns"]
    assert reborn.instance("b1", held) == shard.instance("b1", held)


async def test_a_retried_help_gets_its_first_answer_from_a_short_note(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, configs.bargain("b1", helpers=4, stock=5))
    clock = Clock()
    shard = await shard_factory(config, clock)
    bid = await _start(shard, "alice")
    first = await shard.submit_json([bcmd("help", "h1", bid, key="k1")])
    at_floor = await shard.submit_json([bcmd("help", f"h{n}", bid, key=f"k{n}")
                                        for n in (2, 3, 4)])
    [bought] = await shard.submit([bcmd("buy", "alice", bid, key="buy")])
    assert bought["ok"], bought
    # Later, from memory: each help's answer as it was (open with one helper; at the floor).
    assert await shard.submit_json([bcmd("help", "h1", bid, key="k1")]) == first
    assert await shard.submit_json([bcmd("help", f"h{n}", bid, key=f"k{n}")
                                    for n in (2, 3, 4)]) == at_floor
    conn = await asyncpg.connect(clean.database_url)
    try:
        stored = await conn.fetch("SELECT key, result FROM command_results"
                                  " WHERE key LIKE 'k%' ORDER BY key")
    finally:
        await conn.close()
    # Postgres keeps a note of a few bytes, not B with every helper.
    assert len(stored) == 4
    assert all(set(json.loads(r["result"])) == {"fingerprint", "note"}
               and len(r["result"]) < 120 for r in stored), stored
    # After a restart, from Postgres: the same texts again.
    await shard.stop()
    again = await shard_factory(config, clock)
    assert await again.submit_json([bcmd("help", "h1", bid, key="k1")]) == first
    assert await again.submit_json([bcmd("help", f"h{n}", bid, key=f"k{n}")
                                    for n in (2, 3, 4)]) == at_floor
