"""The bargain (砍价) on a real stack: play, crowds, a killed owner, live frames.

Every test uses its own users (prefix `bg-`) and campaigns of the session's stack: `cut`
(5 helpers to the floor, buy before the floor allowed), `crowd` (100 helpers, 10 units)
and `cutstorm` (100 helpers, many bargains).
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from games.bargain.rules import replay_cuts
from tests.acceptance.conftest import extra_gateway
from tests.acceptance.test_race import _actor_pid
from tests.support.client import WS, get, post
from tests.support.services import Services
from tests.support.stack import Stack

pytestmark = pytest.mark.acceptance


async def start(session: aiohttp.ClientSession, stack: Stack, campaign: str, user: str
                ) -> dict[str, Any]:
    status, body = await post(session, f"{stack.gateways[0].url}/api/bargains/{campaign}",
                              user, key=f"start-{user}")
    assert status == 201, body
    bargain: dict[str, Any] = body["bargain"]
    return bargain


async def test_a_bargain_is_helped_to_its_floor_and_bought(stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        bargain = await start(session, stack, "cut", "bg-alice")
        assert (bargain["status"], bargain["initiator"]) == ("open", "bg-alice")
        assert bargain["list_price"] == 10000 and bargain["floor_price"] == 1000
        url = f"{gw[1].url}/api/bargains/cut/{bargain['id']}"
        watcher = await WS.connect(gw[0].ws_url, "bg-alice")
        try:
            await watcher.send({"op": "subscribe", "topic": f"bargain:cut:{bargain['id']}"})
            await watcher.send({"op": "subscribe", "topic": "user:bg-alice"})
            snapshot = await watcher.until(lambda f: f["op"] == "snapshot"
                                           and f["topic"].startswith("bargain:"))
            assert snapshot["data"]["bargain"]["id"] == bargain["id"]
            # Her own help, someone's second help: refused, and nothing changes.
            status, body = await post(session, url + "/help", "bg-alice")
            assert status == 409 and body["error"]["code"] == "own_bargain", body
            cuts = []
            for n in range(5):
                status, body = await post(session, url + "/help", f"bg-h{n}", key="h")
                assert status == 200, body
                assert body["cut"] >= 1 and body["bargain"]["price"] >= 1000
                cuts.append(body["cut"])
            assert body["bargain"]["status"] == "floor_reached"
            assert body["bargain"]["price"] == 1000
            assert sum(cuts) == 10000 - 1000 - (10000 - bargain["price"])
            status, again = await post(session, url + "/help", "bg-h0", key="h")
            assert (status, again) == (200, {"bargain": again["bargain"], "cut": cuts[0]})
            status, body = await post(session, url + "/help", "bg-late")
            assert status == 409 and body["error"]["code"] == "bargain_closed", body
            # Every cut went out live, in order, and the initiator heard of each help.
            helped = [await watcher.until(lambda f: f.get("op") == "event" and f["topic"]
                                          .startswith("bargain:")
                                          and f["data"]["type"] == "bargain_helped")
                      for _ in range(5)]
            assert [f["data"]["cut"] for f in helped] == cuts
            assert [f["seq"] for f in helped] == list(range(2, 7))
            told = await watcher.until(lambda f: f.get("topic") == "user:bg-alice"
                                       and f["data"]["type"] == "bargain_helped")
            assert told["data"]["bargain"] == bargain["id"]
        finally:
            await watcher.close()
        status, body = await post(session, url + "/buy", "bg-h1")
        assert status == 403 and body["error"]["code"] == "forbidden", body
        status, body = await post(session, url + "/buy", "bg-alice", key="buy")
        assert status == 200, body
        assert body["bargain"]["status"] == "bought"
        assert body["order"]["amount"] == 1000 and body["order"]["status"] == "paid"
        status, body = await get(session, url, "bg-h3")
        assert status == 200 and body["bargain"]["status"] == "bought"
        assert [h["user"] for h in body["bargain"]["helpers"]] == [f"bg-h{n}" for n in range(5)]
        # The order appears once the pipeline has made it, at the bargain's price.
        async with asyncio.timeout(15):
            while True:
                status, orders = await get(session, f"{gw[0].url}/api/orders", "bg-alice")
                mine = [o for o in orders["orders"] if o["instance"] == bargain["id"]]
                if mine:
                    break
                await asyncio.sleep(0.1)  # polling the pipeline, another process
        assert [(o["kind"], o["amount"], o["status"]) for o in mine] == [
            ("bargain", 1000, "paid")]


async def test_500_helpers_at_once_bring_the_price_exactly_to_the_floor(stack: Stack
                                                                      ) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        bargain = await start(session, stack, "crowd", "bg-crowd")
        url = f"/api/bargains/crowd/{bargain['id']}/help"
        answers = await asyncio.gather(*(
            post(session, gw[n % 2].url + url, f"bg-c{n}", key=f"help-{n}")
            for n in range(500)))
        _, final = await get(session, f"{gw[0].url}/api/bargains/crowd/{bargain['id']}",
                                  "bg-crowd")
    assert all(status < 500 for status, _ in answers), answers
    helped = [body for status, body in answers if status == 200]
    refused = [body["error"]["code"] for status, body in answers if status != 200]
    assert len(helped) == 100
    assert set(refused) == {"bargain_closed"}
    b = final["bargain"]
    assert (b["status"], b["price"]) == ("floor_reached", 100)
    assert len(b["helpers"]) == 100 == len({h["user"] for h in b["helpers"]})
    # From the price at the start to the floor, in cuts of at least a fen.
    assert sum(h["cut"] for h in b["helpers"]) == bargain["price"] - 100
    assert all(h["cut"] >= 1 for h in b["helpers"])


async def test_sigkill_during_a_help_storm_loses_no_acknowledged_cut(
        stack: Stack, migrated: Services) -> None:
    gw = stack.gateways
    acked: dict[str, dict[str, int]] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        bargains = [await start(session, stack, "cutstorm", f"bg-s{n}") for n in range(8)]
        ids = [b["id"] for b in bargains]
        before = await _actor_pid(stack, "cutstorm")
        killed = asyncio.Event()

        async def help_(index: int) -> None:
            bid = ids[index % len(ids)]
            user, key = f"bg-k{index}", f"help-{index}"
            if index == 120:
                os.kill(before, signal.SIGKILL)  # mid-storm, without warning
                killed.set()
            for _ in range(100):  # a client retrying with its idempotency key
                status, body = await post(
                    session, f"{gw[index % 2].url}/api/bargains/cutstorm/{bid}/help", user,
                    key=key)
                if status == 200:
                    acked.setdefault(bid, {})[user] = body["cut"]
                    return
                assert status == 503, body
                await asyncio.sleep(0.1)  # client back-off while Ray restarts the actor
            raise AssertionError(f"{user} never got an answer")

        await asyncio.gather(*(help_(n) for n in range(400)))
        assert killed.is_set()
        assert await _actor_pid(stack, "cutstorm") != before
        finals = [(await get(session, f"{gw[1].url}/api/bargains/cutstorm/{bid}", "bg-s0"))[1]
                  ["bargain"] for bid in ids]
    conn = await asyncpg.connect(migrated.database_url)
    try:
        seeds = {r["id"]: int(r["seed"]) for r in await conn.fetch(
            "SELECT id, seed FROM bargains WHERE id = ANY($1::text[])", ids)}
    finally:
        await conn.close()
    for first, final in zip(bargains, finals, strict=True):
        helpers = {h["user"]: h["cut"] for h in final["helpers"]}
        # Every acknowledged help is there with the cut its helper was told.
        assert acked.get(final["id"], {}).items() <= helpers.items()
        assert helpers.keys() == acked.get(final["id"], {}).keys()
        assert final["price"] == first["price"] - sum(helpers.values())
        assert final["expires_at"] == first["expires_at"]  # the deadline survived
        # Each cut is what the bargain's seed draws for that helper, in that order.
        seed = seeds[final["id"]]
        _, cuts = replay_cuts(seed, final["list_price"], final["floor_price"],
                              final["helpers_to_floor"], [True] * len(final["helpers"]))
        assert [h["cut"] for h in final["helpers"]] == cuts


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def test_a_purchase_in_flight_as_its_gateway_stops_is_answered_in_full(
        stack: Stack, migrated: Services, tmp_path: Path) -> None:
    # A gateway told to stop stops listening, answers the requests it holds, and only
    # then closes what they need (Postgres, the sandbox's signer): a purchase whose
    # owner is still committing when the signal comes is paid and answered, not failed.
    async with extra_gateway(stack, tmp_path, {}) as gateway, \
            aiohttp.ClientSession() as session:
        status, body = await post(session, f"{gateway.url}/api/bargains/cut", "bg-stop",
                                  key="start")
        assert status == 201, body
        bargain = body["bargain"]
        conn = await asyncpg.connect(migrated.database_url)
        try:
            # The bargain's row locked: the owner's commit of the purchase waits on it.
            holding = conn.transaction()
            await holding.start()
            await conn.execute("SELECT 1 FROM bargains WHERE campaign = 'cut' AND id = $1"
                               " FOR UPDATE", bargain["id"])
            me = await conn.fetchval("SELECT pg_backend_pid()")
            buying = asyncio.ensure_future(post(
                session, f"{gateway.url}/api/bargains/cut/{bargain['id']}/buy", "bg-stop",
                key="buy"))
            async with asyncio.timeout(30):  # another process: polled
                while True:
                    if await conn.fetchval("SELECT count(*) FROM pg_stat_activity"
                                           " WHERE $1 = ANY(pg_blocking_pids(pid))", me):
                        break
                    await asyncio.sleep(0.02)
            gateway.proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(30):  # until the gateway has stopped listening
                while True:
                    if not await _listening(gateway.port):
                        break
                    await asyncio.sleep(0.02)
            await holding.commit()
        finally:
            await conn.close()
        status, body = await buying
        assert status == 200, body
        assert body["bargain"]["status"] == "bought" and body["order"]["status"] == "paid"
        assert body["order"]["amount"] == bargain["price"]
        assert await asyncio.get_running_loop().run_in_executor(
            None, gateway.proc.wait, 60) == 0
