"""The group-buy owner against real Postgres and Redis (no Ray: the plain asyncio owner)."""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
import redis.asyncio as aioredis

from actors.owner import Owner
from games.topics import instance_topic
from storage.live import Live
from tests.integration.conftest import T0, Clock, Factory, cmd, make_config
from tests.support import configs
from tests.support.services import Services

pytestmark = pytest.mark.integration

async def test_answers_only_what_is_committed(clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=10))
    shard = await shard_factory(config, Clock())
    [opened] = await shard.submit([cmd("open", "alice", key="k1")])
    assert opened["ok"], opened
    group = opened["result"]["group"]
    # The answer exists only after its batch committed: Postgres already has it all.
    conn = await asyncpg.connect(clean.database_url)
    try:
        row = await conn.fetchrow("SELECT status, members, version FROM groups WHERE id = $1",
                                  group["id"])
        events = await conn.fetchval("SELECT count(*) FROM events WHERE stream = 'groupbuy:c1'")
        stored = await conn.fetchval("SELECT count(*) FROM command_results")
    finally:
        await conn.close()
    assert (row["status"], list(row["members"]), row["version"]) == ("open", ["alice"], 1)
    assert events == 1 and stored == 1


async def test_group_commit_batches_concurrent_commands(clean: Services,
                                                        shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=2, stock=1000, led=1))
    shard = await shard_factory(config, Clock())
    answers = await asyncio.gather(
        *(shard.submit([cmd("open", f"u{i}")]) for i in range(200)))
    assert all(a[0]["ok"] for a in answers)
    stats = shard.stats()
    # 200 commands arrived together: far fewer transactions than commands.
    assert stats["batch_sizes"].total == 200
    assert stats["batch_sizes"].n < 50
    assert stats["commit_seconds"].n == stats["batch_sizes"].n  # a duration per commit


async def test_idempotent_key_returns_first_answer_even_after_restart(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=10, led=5))
    clock = Clock()
    shard = await shard_factory(config, clock)
    first, again = await asyncio.gather(shard.submit([cmd("open", "alice", key="same")]),
                                        shard.submit([cmd("open", "alice", key="same")]))
    assert first == again
    await shard.stop()
    reborn = await shard_factory(config, clock)
    [third] = await reborn.submit([cmd("open", "alice", key="same")])
    assert third == first[0]
    summary = await reborn.ready()
    assert summary["campaigns"]["c1"]["groups"] == 1
    # A refusal is an answer too: repeated, it stays the same refusal.
    [refused] = await reborn.submit([cmd("join", "bob", group="nope", key="j")])
    [repeat] = await reborn.submit([cmd("join", "bob", group="nope", key="j")])
    assert refused == repeat and refused["error"]["code"] == "not_found"


async def test_restart_rebuilds_state_and_original_deadlines(clean: Services,
                                                             shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=50, led=1, joined=1,
                                                 time_limit=600))
    clock = Clock()
    shard = await shard_factory(config, clock)
    [a] = await shard.submit([cmd("open", "alice")])
    gid = a["result"]["group"]["id"]
    await shard.submit([cmd("join", "bob", group=gid)])
    before = shard.instance("c1", gid)
    await shard.stop()
    clock.ms += 120_000  # restart two minutes later: the deadline must not move
    reborn = await shard_factory(config, clock)
    await reborn.ready()
    assert reborn.instance("c1", gid) == before
    summary = await reborn.ready()
    assert summary["campaigns"]["c1"]["stock_left"] == 48
    assert summary["deadlines"] == 1
    # And the re-armed deadline fires at the original time, not later.
    clock.ms = T0 + 600_000
    assert await reborn.expire_due() == 1
    assert reborn.instance("c1", gid)["status"] == "failed"


async def test_expiry_refunds_and_pipeline_is_exactly_once(clean: Services,
                                                           shard_factory: Factory) -> None:
    from actors.pipeline_worker import PipelineWorker

    config = make_config(clean, configs.campaign("c1", size=2, stock=10, led=2, joined=2,
                                                 time_limit=60))
    clock = Clock()
    shard = await shard_factory(config, clock)
    [done] = await shard.submit([cmd("open", "alice")])
    [fails] = await shard.submit([cmd("open", "carol")])
    await shard.submit([cmd("join", "bob", group=done["result"]["group"]["id"])])
    await shard.submit([cmd("join", "dave", group=fails["result"]["group"]["id"])])
    [lonely] = await shard.submit([cmd("open", "erin")])
    clock.ms += 61_000
    assert await shard.expire_due() == 1  # only erin's group was still open
    worker = PipelineWorker(config, clean.database_url)
    await worker.start()
    try:
        await worker.drain()
        conn = await asyncpg.connect(clean.database_url)
        try:
            async def counts() -> tuple[Any, ...]:
                return (
                    await conn.fetchval("SELECT count(*) FROM orders"),
                    await conn.fetchval("SELECT count(*) FROM payments WHERE kind='payment'"),
                    await conn.fetchval("SELECT count(*) FROM payments WHERE kind='refund'"),
                    await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM orders"),
                )
            first = await counts()
            # Two completed groups of two: four paid orders; erin's failed group: a refund.
            assert first == (4, 4, 1, 4 * 6000)
            refunded = await conn.fetchval("SELECT user_id FROM payments WHERE kind='refund'")
            assert refunded == "erin"
            # Replay the whole outbox: nothing is created twice.
            await conn.execute("UPDATE outbox SET processed_at = NULL")
            await worker.drain()
            assert await counts() == first
        finally:
            await conn.close()
    finally:
        await worker.stop()
    assert lonely["ok"]


async def test_live_events_are_numbered_per_group(clean: Services,
                                                  shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=10, joined=1))
    shard = await shard_factory(config, Clock())
    [a] = await shard.submit([cmd("open", "alice")])
    gid = a["result"]["group"]["id"]
    await shard.submit([cmd("join", "bob", group=gid)])
    await shard.submit([cmd("join", "carol", group=gid)])
    await shard.stop()  # drains publishing
    client = aioredis.from_url(clean.redis_url)
    try:
        history = await Live(client, 100, 60).history(instance_topic("groupbuy", "c1", gid))
    finally:
        await client.aclose()
    assert [f["seq"] for f in history] == [1, 2, 3, 4, 5]
    assert [f["data"]["type"] for f in history] == [
        "group_opened", "member_joined", "member_joined", "group_completed", "deal_completed"]
    assert history[-1]["data"]["members"] == ["alice", "bob", "carol"]
    assert [f["data"]["group"]["joined"] for f in history] == [1, 2, 3, 3, 3]
    assert all("members" not in f["data"]["group"] for f in history)


async def test_uses_configured_services_when_given(clean: Services) -> None:
    # CI's second pass sets FISSION_DATABASE_URL; the tests must then really talk to that
    # TCP server, and otherwise to the embedded one over its unix socket.
    conn = await asyncpg.connect(clean.database_url)
    try:
        port = await conn.fetchval("SELECT inet_server_port()")
    finally:
        await conn.close()
    if os.environ.get("FISSION_DATABASE_URL"):
        assert port == (urlsplit(os.environ["FISSION_DATABASE_URL"]).port or 5432)
    else:
        assert port is None  # a unix-socket connection: the embedded server


async def test_restart_falls_back_to_events_when_group_rows_disagree(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=50, led=2, joined=2))
    clock = Clock()
    shard = await shard_factory(config, clock)
    [a] = await shard.submit([cmd("open", "alice")])
    gid = a["result"]["group"]["id"]
    await shard.submit([cmd("join", "bob", group=gid)])
    await shard.submit([cmd("open", "carol")])
    before = await shard.ready()
    await shard.stop()
    # Lose one read-model row: the snapshot no longer adds up to the event stream.
    conn = await asyncpg.connect(clean.database_url)
    try:
        await conn.execute("DELETE FROM groups WHERE id = $1", gid)
    finally:
        await conn.close()
    reborn = await shard_factory(config, clock)
    assert await reborn.ready() == before
    assert reborn.instance("c1", gid)["members"] == ["alice", "bob"]


async def test_a_key_reused_for_another_command_is_refused(clean: Services,
                                                           shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=50, led=2, joined=2))
    shard = await shard_factory(config, Clock())
    [a] = await shard.submit([cmd("open", "alice")])
    [b] = await shard.submit([cmd("open", "bob")])
    ga, gb_ = a["result"]["group"]["id"], b["result"]["group"]["id"]
    [first] = await shard.submit([cmd("join", "carol", group=ga, key="k")])
    assert first["ok"]
    # The same key for a join of another group is not answered with the first result.
    [other] = await shard.submit([cmd("join", "carol", group=gb_, key="k")])
    assert other["error"]["code"] == "invalid_request"
    assert shard.instance("c1", gb_)["members"] == ["bob"]
    [same] = await shard.submit([cmd("join", "carol", group=ga, key="k")])
    assert same == first


async def test_answers_are_remembered_for_the_retention_then_forgotten(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=50, led=3,
                                                 time_limit=600))
    clock = Clock()
    shard = await shard_factory(config, clock)
    [first] = await shard.submit([cmd("open", "alice", key="k")])
    clock.ms += 23 * 3_600_000
    assert shard.forget_answers() == 0
    assert (await shard.submit([cmd("open", "alice", key="k")]))[0] == first
    clock.ms += 2 * 3_600_000  # 25 h after the first answer: past the 24 h retention
    assert shard.forget_answers() == 1
    [again] = await shard.submit([cmd("open", "alice", key="k")])
    assert again["ok"] and again["result"]["group"]["id"] != first["result"]["group"]["id"]


async def test_an_owner_waits_for_its_database_then_starts(clean: Services) -> None:
    from storage import db
    from storage.migrate import migrate

    name = f"fission_late_{os.getpid()}"
    url = db.with_database(clean.database_url, name)
    admin = await asyncpg.connect(db.with_database(clean.database_url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        config = make_config(clean, configs.campaign("c1", size=2, stock=5))
        shard = Owner(config, url, clean.redis_url, 0, clock=Clock())
        starting = asyncio.create_task(shard.start(retry=True))
        # The database does not exist yet: commands are refused at once, not queued.
        [early] = await shard.submit([cmd("open", "alice")])
        assert early["error"]["code"] == "unavailable"
        await db.ensure_database(url)
        conn = await db.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        await asyncio.wait_for(starting, 30)  # it retries on its own and comes up
        [opened] = await shard.submit([cmd("open", "alice")])
        assert opened["ok"]
        await shard.stop()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_finished_campaigns_release_their_groups(clean: Services,
                                                       shard_factory: Factory) -> None:
    ends = "2030-03-17T18:00:00+00:00"  # a few hours after T0
    config = make_config(clean, configs.campaign("c1", size=2, stock=10, led=2,
                                                 time_limit=600, ends_at=ends))
    clock = Clock()
    shard = await shard_factory(config, clock)
    [a] = await shard.submit([cmd("open", "alice")])
    [b] = await shard.submit([cmd("open", "bob")])
    await shard.submit([cmd("join", "carol", group=a["result"]["group"]["id"])])
    assert shard.retire_finished() == []  # still running
    clock.ms = config.groupbuys[0].ends_at + 1
    await shard.expire_due()  # bob's group fails at its deadline
    assert shard.retire_finished() == ["c1"]
    assert shard.instance("c1", a["result"]["group"]["id"]) is None  # released from memory
    # Commands are still answered the same way, and Postgres still has every group.
    [late] = await shard.submit([cmd("join", "dave", group=b["result"]["group"]["id"])])
    assert late["error"]["code"] == "campaign_not_active"
    conn = await asyncpg.connect(clean.database_url)
    try:
        statuses = await conn.fetch("SELECT status FROM groups ORDER BY status")
    finally:
        await conn.close()
    assert [r["status"] for r in statuses] == ["completed", "failed"]
