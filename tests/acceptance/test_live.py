"""Live updates: resume with `after`, snapshots when history is gone, two gateways."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from storage import redis_keys
from tests.support.client import WS, get, post
from tests.support.frames import apply_event
from tests.support.services import Services
from tests.support.stack import Stack

pytestmark = pytest.mark.acceptance

BASE = "/api/groupbuys/live/groups"


def is_event(topic: str, seq: int | None = None) -> Any:
    return lambda f: f.get("op") == "event" and f["topic"] == topic and (
        seq is None or f["seq"] == seq)


async def _open(session: aiohttp.ClientSession, stack: Stack, leader: str) -> dict[str, Any]:
    status, body = await post(session, stack.gateways[0].url + BASE, leader)
    assert status == 201, body
    group: dict[str, Any] = body["group"]
    return group


async def test_resume_gets_exactly_the_missed_events_in_order(stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        group = await _open(session, stack, "lv-lead1")
        topic = f"groupbuy:live:{group['id']}"
        ws = await WS.connect(gw[0].ws_url, "lv-watch1")
        await ws.send({"op": "subscribe", "topic": topic})
        snap = await ws.until(lambda f: f.get("op") == "snapshot")
        assert snap["seq"] == 1 and snap["data"]["group"]["members"] == ["lv-lead1"]
        mine = snap["data"]["group"]  # what a client shows: its snapshot, events applied
        await post(session, f"{gw[1].url}{BASE}/{group['id']}/join", "lv-a")
        seen = await ws.until(is_event(topic, 2))
        assert seen["data"]["type"] == "member_joined" and seen["data"]["user"] == "lv-a"
        mine = apply_event(mine, seen["data"])
        await ws.close()
        # While it is away, two more join (one through each gateway).
        await post(session, f"{gw[0].url}{BASE}/{group['id']}/join", "lv-b")
        await post(session, f"{gw[1].url}{BASE}/{group['id']}/join", "lv-c")
        back = await WS.connect(gw[1].ws_url, "lv-watch1")
        await back.send({"op": "subscribe", "topic": topic, "after": 2})
        missed = [await back.recv(), await back.recv()]
        assert [(f["op"], f["seq"], f["data"]["user"]) for f in missed] == [
            ("event", 3, "lv-b"), ("event", 4, "lv-c")]
        # Then it is live again: the next join arrives as seq 5, nothing replayed twice.
        await post(session, f"{gw[0].url}{BASE}/{group['id']}/join", "lv-d")
        frames = [await back.recv() for _ in range(3)]
        assert [f["seq"] for f in frames] == [5, 6, 7]
        assert [f["data"]["type"] for f in frames] == [
            "member_joined", "group_completed", "deal_completed"]
        # Each frame shows the group as of its own event: full but not yet completed first.
        assert [f["data"]["group"]["status"] for f in frames] == ["open", "completed",
                                                                  "completed"]
        assert [f["data"]["group"]["seq"] for f in frames] == [5, 6, 7]
        assert [f["data"]["group"]["joined"] for f in frames] == [5, 5, 5]
        # Frames carry no member list (their size does not grow with the group); the deal
        # names its members, and the snapshot with every event applied is the group.
        assert all("members" not in f["data"]["group"] for f in [seen, *missed, *frames])
        assert frames[2]["data"]["members"] == ["lv-lead1", "lv-a", "lv-b", "lv-c", "lv-d"]
        for frame in [*missed, *frames]:
            mine = apply_event(mine, frame["data"])
        status, now = await get(session, f"{gw[0].url}{BASE}/{group['id']}", "lv-e")
        assert status == 200 and mine == now["group"]
        await back.close()


async def test_resume_after_history_is_gone_gets_a_snapshot(stack: Stack,
                                                            migrated: Services) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        group = await _open(session, stack, "lv-lead2")
        topic = f"groupbuy:live:{group['id']}"
        await post(session, f"{gw[0].url}{BASE}/{group['id']}/join", "lv-e")
        status, now = await get(session, f"{gw[0].url}{BASE}/{group['id']}", "lv-e")
        assert status == 200 and now["group"]["seq"] == 2
        client = aioredis.from_url(migrated.redis_url)
        try:
            await client.delete(redis_keys.history(topic))
        finally:
            await client.aclose()
        ws = await WS.connect(gw[1].ws_url, "lv-watch2")
        await ws.send({"op": "subscribe", "topic": topic, "after": 1})
        frame = await ws.recv()
        assert frame["op"] == "snapshot" and frame["seq"] == 2
        assert frame["data"]["group"]["members"] == ["lv-lead2", "lv-e"]
        # A resume from a seq the server never had also gets a snapshot, not silence.
        await ws.send({"op": "subscribe", "topic": topic, "after": 99})
        frame = await ws.recv()
        assert frame["op"] == "snapshot" and frame["seq"] == 2
        await ws.close()


async def test_join_through_one_gateway_is_seen_live_on_the_other(stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        group = await _open(session, stack, "lv-lead3")
        topic = f"groupbuy:live:{group['id']}"
        watchers = [await WS.connect(g.ws_url, f"lv-w3-{i}") for i, g in enumerate(gw)]
        for ws in watchers:
            await ws.send({"op": "subscribe", "topic": topic})
            await ws.until(lambda f: f.get("op") == "snapshot")
        # Join over WebSocket through gateway 0; gateway 1's socket sees it live.
        joiner = await WS.connect(gw[0].ws_url, "lv-f")
        reply = await joiner.call("r1", "groupbuy.join", {"campaign": "live",
                                                           "group": group["id"]})
        assert reply["ok"] and "lv-f" in reply["result"]["group"]["members"]
        for ws in watchers:
            event = await ws.until(is_event(topic, 2))
            assert event["data"]["user"] == "lv-f"
            assert event["data"]["group"]["joined"] == 2
        # The same ref again is the same answer, not a second join.
        again = await joiner.call("r1", "groupbuy.join", {"campaign": "live",
                                                           "group": group["id"]})
        assert again["result"] == reply["result"]
        for ws in [*watchers, joiner]:
            await ws.close()


async def test_user_topic_tells_members_their_deal_completed(stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        member = await WS.connect(gw[1].ws_url, "lv-g1")
        await member.send({"op": "subscribe", "topic": "user:lv-g1"})
        await member.until(lambda f: f.get("op") == "snapshot")
        group = await _open(session, stack, "lv-g1")
        for user in ("lv-g2", "lv-g3", "lv-g4", "lv-g5"):
            status, _ = await post(session, f"{gw[0].url}{BASE}/{group['id']}/join", user)
            assert status == 200
        event = await member.until(is_event("user:lv-g1"))
        assert event["data"] == {"type": "deal_completed", "campaign": "live",
                                 "group": group["id"], "price": 6000}
        await member.close()


async def test_expired_group_fails_and_refunds_live(stack: Stack, migrated: Services) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, gw[0].url + "/api/groupbuys/brief/groups", "lv-x")
        assert status == 201
        group = body["group"]
        topic = f"groupbuy:brief:{group['id']}"
        ws = await WS.connect(gw[1].ws_url, "lv-x")
        await ws.send({"op": "subscribe", "topic": topic})
        await ws.until(lambda f: f.get("op") == "snapshot")
        await post(session, f"{gw[0].url}/api/groupbuys/brief/groups/{group['id']}/join", "lv-y")
        # The actor's own timer closes it at its deadline (2 s): no client action needed.
        failed = await ws.until(lambda f: f.get("op") == "event"
                                and f["data"]["type"] == "group_failed", timeout=15)
        refunds = [await ws.until(lambda f: f.get("op") == "event", timeout=5)
                   for _ in range(2)]
        assert failed["data"]["group"]["status"] == "failed"
        assert sorted(r["data"]["user"] for r in refunds) == ["lv-x", "lv-y"]
        assert all(r["data"]["amount"] == 6000 for r in refunds)
        status, late = await post(
            session, f"{gw[0].url}/api/groupbuys/brief/groups/{group['id']}/join", "lv-z")
        assert status == 409 and late["error"]["code"] == "group_closed"
        await ws.close()


async def test_slow_reader_is_disconnected_and_others_are_not(stack: Stack,
                                                              migrated: Services) -> None:
    from storage.live import Live, LiveEvent

    gw = stack.gateways[0]
    slow = await WS.connect(gw.ws_url, "lv-slow")
    fast = await WS.connect(gw.ws_url, "lv-fast")
    await slow.send({"op": "subscribe", "topic": "user:lv-slow"})
    await slow.until(lambda f: f.get("op") == "snapshot")
    await fast.send({"op": "subscribe", "topic": "user:lv-fast"})
    await fast.until(lambda f: f.get("op") == "snapshot")
    # The slow client stops reading: flood its topic with far more than socket buffers
    # and its 64-frame send queue hold.
    slow.conn.transport.pause_reading()
    client = aioredis.from_url(migrated.redis_url)
    live = Live(client, 10, 60)
    padding = "x" * 4000
    before = await _slow_drops(gw.url)
    try:
        for chunk in range(40):
            await live.publish([LiveEvent("user:lv-slow", 0, {"type": "noise", "pad": padding})
                                for _ in range(200)])
            await live.publish([LiveEvent("user:lv-fast", 0, {"type": "tick", "n": chunk})])
            if await _slow_drops(gw.url) > before:
                break  # the server gave up on it: flooding on proves nothing more
        else:
            raise AssertionError("the server never dropped the client that stopped reading")
        # The fast client got every tick, in order, while the slow one was being dropped.
        ticks = [await fast.until(is_event("user:lv-fast")) for _ in range(chunk + 1)]
        assert [t["data"]["n"] for t in ticks] == list(range(chunk + 1))
    finally:
        await client.aclose()
    slow.conn.transport.resume_reading()
    with pytest.raises(Exception) as closed:
        while True:
            await slow.recv(timeout=20)
    code = getattr(getattr(closed.value, "rcvd", None), "code", None)
    assert code == 4008, closed.value
    await fast.send({"op": "ping"})
    assert (await fast.until(lambda f: f.get("op") == "pong")) == {"op": "pong"}
    await fast.close()


async def _slow_drops(url: str) -> int:
    """Sockets this gateway dropped for not reading, from its own /metrics."""
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith('fission_ws_disconnects_total{reason="slow_consumer"}'):
            return int(line.split()[-1])
    return 0


async def test_metrics_expose_the_promised_series(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.gateways[0].url + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    for name in ("fission_ws_open_connections", "fission_commands_total",
                 "fission_actor_call_seconds_bucket", "fission_commit_batch_size_bucket",
                 "fission_outbox_lag_seconds", "fission_http_requests_total",
                 "fission_actor_call_batch_size_bucket", "fission_commit_seconds_sum",
                 "fission_commit_longest_seconds", "fission_shard_gc_seconds_total",
                 "fission_shard_gc_longest_seconds", "fission_gateway_gc_seconds_total",
                 "fission_gateway_gc_longest_seconds", "fission_pipeline_orders_total",
                 "fission_pipeline_commissions_total", "fission_pipeline_settled_total"):
        assert name in text, name
    gc_lines = [line for line in text.splitlines() if line.startswith("fission_shard_gc_seconds")]
    assert len(gc_lines) == 3 * 2  # a line per generation for each of the two shards
    assert 'fission_commands_total{method="groupbuy.open",outcome="ok"}' in text
