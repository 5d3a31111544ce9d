"""The lottery (抽奖) on a real stack: routes and shapes, live frames, a storm of a thousand
users for ten teapots, a killed owner, and the audit anyone can replay after the end.

Routes and live frames use campaigns of the session's stack (users prefixed `lt-`): `luck`
(two free draws a day, every draw wins a coupon) and `lsoon` (not started). The storm and
the killed owner need campaigns that end while the test runs (the seed is revealed at the
end, and only then the audit opens): a deployment of their own on the session's Ray head
and a database of their own, whose campaigns end a fixed time after its config is written;
each test waits for the server's own `revealed` frame (or a snapshot already showing the
seed), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from games.lottery.audit import check
from tests.acceptance.test_race import _actor_pid
from tests.support import configs
from tests.support.client import WS, get, post
from tests.support.faults import fault_env, own_database, remove_namespace
from tests.support.services import Services
from tests.support.stack import (
    Gateway,
    Stack,
    start_gateway,
    stop_group,
    wait_healthy,
    write_config,
)

pytestmark = pytest.mark.acceptance

HEX64 = re.compile(r"^[0-9a-f]{64}$")
LUCK = "/api/lotteries/luck"

# The ending deployment: its campaigns end this many seconds after its config is written.
# Measured on 2 cores: the gateways are healthy after ~14 s, the storm's draws take ~5 s,
# the killed owner's storm (Ray restarting it included) ~8 s after the first reveal.
STORM, KILL = "lstorm", "lkill"
STORM_ENDS_AFTER = 30.0
KILL_ENDS_AFTER = 52.0
STORM_USERS = 1000
KILL_USERS, KILL_DRAWS = 200, 3  # each user draws three times, one after the other
KILL_AFTER_ACKS = 200  # the owner is killed once this many draws were acknowledged
ANSWER_WITHIN = 45.0  # seconds a client keeps retrying an unavailable draw
RETRY_PAUSE = 0.1  # a client's back-off before retrying with its idempotency key


def _is_iso(text: Any) -> bool:
    return isinstance(text, str) and datetime.fromisoformat(text).tzinfo is not None


def _assert_draw(draw: dict[str, Any], user: str, n: int, campaign: str) -> None:
    """`D` as the contract has it."""
    assert isinstance(draw["id"], str) and draw["id"], draw
    assert (draw["user"], draw["n"]) == (user, n), draw
    assert draw["campaign"] == campaign, draw
    assert isinstance(draw["prize"]["id"], str) and isinstance(draw["prize"]["title"], str)
    assert _is_iso(draw["at"]), draw


# --- routes and shapes (the session's stack) ---------------------------------------------


async def test_routes_answer_the_contract_shapes(stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        status, body = await get(session, gw[0].url + LUCK, "lt-amy")
        assert status == 200, body
        lottery = body["lottery"]
        assert lottery["id"] == "luck"
        assert HEX64.fullmatch(lottery["commitment"]), lottery  # published from the start
        assert lottery["seed"] is None and lottery["draws_left"] == 2
        prizes = {p["id"]: p for p in lottery["prizes"]}
        assert set(prizes) == {"coupon", "thanks"}
        assert {k: prizes["thanks"][k] for k in ("title", "weight", "stock_left")} == {
            "title": "Thanks", "weight": 0, "stock_left": None}
        assert isinstance(prizes["coupon"]["stock_left"], int)
        async with session.get(gw[1].url + "/api/campaigns") as resp:
            listed = {c["id"]: c for c in (await resp.json())["campaigns"]}
        assert listed["luck"]["kind"] == "lottery"

        # A draw; its key repeated is the same draw (not a second one), on either gateway.
        status, first = await post(session, gw[0].url + LUCK + "/draws", "lt-amy", key="d1")
        assert status == 201, first
        _assert_draw(first["draw"], "lt-amy", 1, "luck")
        assert first["draw"]["prize"]["id"] == "coupon"  # the only prize with weight
        assert first["draws_left"] == 1
        status, again = await post(session, gw[1].url + LUCK + "/draws", "lt-amy", key="d1")
        assert (status, again) == (201, first)
        status, bob = await post(session, gw[1].url + LUCK + "/draws", "lt-bob", key="d1")
        assert status == 201 and bob["draw"]["user"] == "lt-bob", bob
        assert bob["draw"]["id"] != first["draw"]["id"]
        # Each user's draws are their own only.
        status, mine = await get(session, gw[1].url + LUCK + "/draws", "lt-amy")
        assert (status, mine) == (200, {"draws": [first["draw"]]})
        status, theirs = await get(session, gw[0].url + LUCK + "/draws", "lt-bob")
        assert (status, theirs) == (200, {"draws": [bob["draw"]]})
        status, body = await get(session, gw[0].url + LUCK + "/draws", "lt-nobody")
        assert (status, body) == (200, {"draws": []})

        # The second free draw, then none left (today).
        status, second = await post(session, gw[0].url + LUCK + "/draws", "lt-amy", key="d2")
        assert status == 201, second
        _assert_draw(second["draw"], "lt-amy", 2, "luck")
        assert second["draws_left"] == 0
        status, body = await post(session, gw[1].url + LUCK + "/draws", "lt-amy", key="d3")
        assert status == 409 and body["error"]["code"] == "no_draws_left", body
        status, body = await get(session, gw[1].url + LUCK, "lt-amy")
        assert status == 200 and body["lottery"]["draws_left"] == 0, body
        assert body["lottery"]["commitment"] == lottery["commitment"]
        status, mine = await get(session, gw[0].url + LUCK + "/draws", "lt-amy")
        assert mine == {"draws": [first["draw"], second["draw"]]}

        # The audit opens at the end only.
        status, body = await get(session, gw[0].url + LUCK + "/audit", "lt-amy")
        assert status == 409 and body["error"]["code"] == "not_revealed", body
        # A campaign that has not started takes no draws.
        status, body = await post(session, gw[0].url + "/api/lotteries/lsoon/draws",
                                  "lt-amy")
        assert status == 409 and body["error"]["code"] == "campaign_not_active", body
        # No such lottery: an unknown campaign, or one of another kind, either way round.
        for method, path in [("GET", "/api/lotteries/nope"),
                             ("POST", "/api/lotteries/nope/draws"),
                             ("GET", "/api/lotteries/nope/draws"),
                             ("GET", "/api/lotteries/nope/audit"),
                             ("GET", "/api/lotteries/cut"),
                             ("POST", "/api/lotteries/cut/draws"),
                             ("POST", "/api/bargains/luck"),
                             ("GET", "/api/bargains/luck/b1")]:
            if method == "GET":
                status, body = await get(session, gw[0].url + path, "lt-amy")
            else:
                status, body = await post(session, gw[0].url + path, "lt-amy")
            assert status == 404 and body["error"]["code"] == "not_found", (path, body)
        async with session.get(gw[0].url + LUCK) as resp:
            body = await resp.json()
            assert resp.status == 401 and body["error"]["code"] == "unauthorized", body


# --- live frames (the session's stack) ---------------------------------------------------


async def test_a_win_goes_out_masked_and_the_winner_hears_of_the_draw(stack: Stack) -> None:
    gw = stack.gateways
    watcher = await WS.connect(gw[0].ws_url, "lt-watch")
    winner = await WS.connect(gw[1].ws_url, "lt-winner")
    try:
        await watcher.send({"op": "subscribe", "topic": "lottery:luck"})
        snapshot = await watcher.until(lambda f: f["op"] == "snapshot"
                                       and f["topic"] == "lottery:luck")
        shown = snapshot["data"]["lottery"]
        assert shown["id"] == "luck" and HEX64.fullmatch(shown["commitment"]), snapshot
        assert shown["seed"] is None and isinstance(snapshot["seq"], int), snapshot
        assert snapshot["seq"] >= 1  # the commitment's frame at least
        await winner.send({"op": "subscribe", "topic": "user:lt-winner"})
        await winner.until(lambda f: f["op"] == "snapshot" and f["topic"] == "user:lt-winner")
        # Over /ws this time: the call mirrors the HTTP route.
        reply = await winner.call("w1", "lottery.get", {"campaign": "luck"})
        assert reply["ok"] and reply["result"]["lottery"]["draws_left"] == 2, reply
        assert reply["result"]["lottery"]["commitment"] == shown["commitment"]
        # The reply and the user topic's `drawn` come in either order: keep both.
        await winner.send({"op": "call", "ref": "w2", "method": "lottery.draw",
                           "params": {"campaign": "luck"}})
        got: dict[str, dict[str, Any]] = {}
        async with asyncio.timeout(10):
            while len(got) < 2:
                frame = await winner.recv()
                if frame.get("op") == "reply" and frame.get("ref") == "w2":
                    got["reply"] = frame
                elif frame.get("op") == "event" and frame["topic"] == "user:lt-winner" \
                        and frame["data"]["type"] == "drawn":
                    got["drawn"] = frame
        reply, drawn = got["reply"], got["drawn"]
        assert reply["ok"], reply
        draw = reply["result"]["draw"]
        _assert_draw(draw, "lt-winner", 1, "luck")
        assert reply["result"]["draws_left"] == 1
        # Everyone watching sees the win, the winner's name masked; the next seq.
        won = await watcher.until(lambda f: f.get("op") == "event"
                                  and f["topic"] == "lottery:luck"
                                  and f["data"]["type"] == "won")
        assert won["seq"] == snapshot["seq"] + 1, won
        assert won["data"]["draw"]["user"] == "l*"
        assert won["data"]["draw"]["id"] == draw["id"]
        assert won["data"]["draw"]["prize"]["id"] == "coupon"
        assert won["data"]["stock_left"] == next(
            p["stock_left"] for p in shown["prizes"] if p["id"] == "coupon") - 1
        assert "lt-winner" not in str(won)
        # The winner's own topic has the whole draw.
        assert drawn["data"]["draw"] == draw and drawn["data"]["draws_left"] == 1, drawn
        # Someone else's user topic is not for this socket.
        await watcher.send({"op": "subscribe", "topic": "user:lt-winner", "ref": "s"})
        refused = await watcher.until(lambda f: f.get("op") == "reply" and f.get("ref") == "s")
        assert refused["error"]["code"] == "forbidden", refused
    finally:
        await watcher.close()
        await winner.close()


# --- campaigns that end: a deployment of their own -------------------------------------


@dataclass
class Ending:
    """A deployment whose lotteries end at `ends` (epoch seconds, by campaign)."""

    stack: Stack
    ends: dict[str, float]


def _ending_at(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).replace(microsecond=0).isoformat()


@pytest.fixture(scope="module")
async def ending(migrated: Services, ray_address: str,
                 tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Ending]:
    tmp: Path = tmp_path_factory.mktemp("lottery")
    database_url = await own_database(migrated, "fission_lottery_end")
    storm_end, kill_end = _ending_at(STORM_ENDS_AFTER), _ending_at(KILL_ENDS_AFTER)
    campaigns = [
        # A teapot that is drawn about every other time, until its ten are gone.
        configs.lottery(STORM, free=1, ends_at=storm_end, prizes=[
            {"id": "teapot", "title": "Teapot", "kind": "product", "sku": "POT-lstorm",
             "weight": 50, "stock": 10, "max_wins_per_user": 1},
            {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 50}]),
        configs.lottery(KILL, free=KILL_DRAWS, ends_at=kill_end),  # teapot, coupon, thanks
    ]
    doc = configs.document(campaigns, shards=2, namespace=f"l{uuid.uuid4().hex[:8]}",
                           database_url=database_url, redis_url=migrated.redis_url,
                           ray_address=ray_address, data_dir=str(tmp / "data"))
    path = write_config(tmp, doc)
    env = fault_env(database_url, migrated.redis_url)
    started: list[Gateway] = [start_gateway(path, tmp, env=env) for _ in range(2)]
    try:
        await asyncio.gather(*(wait_healthy(g) for g in started))
        found = Stack(path, doc, gateways=started, ray_address=ray_address)
        yield Ending(found, {STORM: datetime.fromisoformat(storm_end).timestamp(),
                             KILL: datetime.fromisoformat(kill_end).timestamp()})
    finally:
        for gateway in started:
            stop_group(gateway.proc, 10)
        await asyncio.to_thread(remove_namespace, ray_address, doc["ray"]["namespace"])


def _left(ending: Ending, campaign: str) -> float:
    """Seconds until `campaign` ends (negative once it has)."""
    return ending.ends[campaign] - time.time()


async def _until_revealed(ending: Ending, campaign: str, watcher: WS | None = None
                          ) -> str:
    """The seed, once the server says it revealed it: the `revealed` frame on
    `lottery:{campaign}` (or a snapshot that already shows the seed)."""
    gateway = ending.stack.gateways[0]
    own = watcher is None
    if watcher is None:
        watcher = await WS.connect(gateway.ws_url, "lt-auditor")
        await watcher.send({"op": "subscribe", "topic": f"lottery:{campaign}"})
        snapshot = await watcher.until(lambda f: f["op"] == "snapshot")
        seed = snapshot["data"]["lottery"]["seed"]
        if seed is not None:
            await watcher.close()
            return str(seed)
    try:
        revealed = await watcher.until(
            lambda f: f.get("op") == "event" and f["data"]["type"] == "revealed",
            timeout=max(0.0, _left(ending, campaign)) + 30)
    finally:
        if own:
            await watcher.close()
    return str(revealed["data"]["seed"])


async def _audit(session: aiohttp.ClientSession, ending: Ending, campaign: str
                 ) -> dict[str, Any]:
    status, audit = await get(session, f"{ending.stack.gateways[1].url}/api/lotteries/"
                                       f"{campaign}/audit", "lt-auditor")
    assert status == 200, audit
    return audit


async def test_a_thousand_users_draw_at_once_for_ten_teapots(ending: Ending) -> None:
    gw = ending.stack.gateways
    base = f"/api/lotteries/{STORM}"
    users = [f"lt-s{n}" for n in range(STORM_USERS)]
    watcher = await WS.connect(gw[1].ws_url, "lt-storm-watch")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await watcher.send({"op": "subscribe", "topic": f"lottery:{STORM}"})
        snapshot = await watcher.until(lambda f: f["op"] == "snapshot")
        commitment = snapshot["data"]["lottery"]["commitment"]
        assert HEX64.fullmatch(commitment), snapshot
        answers = await asyncio.gather(*(
            post(session, gw[n % 2].url + base + "/draws", user, key=f"draw-{user}")
            for n, user in enumerate(users)))
        assert _left(ending, STORM) > 0, "the storm outlasted the campaign: raise its end"
        assert all(status < 500 for status, _ in answers), Counter(s for s, _ in answers)
        assert [status for status, _ in answers] == [201] * STORM_USERS, Counter(
            body.get("error", {}).get("code") for _, body in answers)
        acked = {body["draw"]["user"]: body["draw"] for _, body in answers}
        assert sorted(acked) == sorted(users)
        for user, draw in acked.items():
            _assert_draw(draw, user, 1, STORM)
        assert all(body["draws_left"] == 0 for _, body in answers)
        assert len({d["id"] for d in acked.values()}) == STORM_USERS
        won = [d for d in acked.values() if d["prize"]["id"] == "teapot"]
        assert len(won) == 10  # all of the stock, never more
        assert {d["prize"]["id"] for d in acked.values()} == {"teapot", "thanks"}
        # Every acknowledged draw is the user's one draw.
        listed = await asyncio.gather(*(
            get(session, gw[n % 2].url + base + "/draws", user) for n, user in enumerate(users)))
        for user, (status, body) in zip(users, listed, strict=True):
            assert (status, body) == (200, {"draws": [acked[user]]}), (user, body)
        status, body = await get(session, gw[0].url + base, "lt-s0")
        teapot = next(p for p in body["lottery"]["prizes"] if p["id"] == "teapot")
        assert teapot["stock_left"] == 0 and body["lottery"]["draws"] == STORM_USERS
        # Each win went out once, masked, in seq order, the stock counting down.
        feed = [await watcher.until(lambda f: f.get("op") == "event"
                                    and f["data"]["type"] == "won") for _ in won]
        assert [f["seq"] for f in feed] == list(range(snapshot["seq"] + 1,
                                                      snapshot["seq"] + 11))
        assert [f["data"]["stock_left"] for f in feed] == list(range(9, -1, -1))
        assert sorted(f["data"]["draw"]["id"] for f in feed) == sorted(d["id"] for d in won)
        assert {f["data"]["draw"]["user"] for f in feed} == {"l*"}

        # The end: the seed revealed, against the commitment published at the start.
        seed = await _until_revealed(ending, STORM, watcher)
        await watcher.close()
        audit = await _audit(session, ending, STORM)
    assert audit["lottery"]["commitment"] == commitment and audit["lottery"]["seed"] == seed
    verdict = check(audit)
    assert verdict.ok and verdict.checked == STORM_USERS, verdict
    assert sorted((d["user"], d["n"], d["prize"]) for d in audit["draws"]) == sorted(
        (d["user"], d["n"], d["prize"]["id"]) for d in acked.values())
    assert Counter(d["prize"] for d in audit["draws"])["teapot"] == len(won) == 10


async def test_sigkill_of_the_owner_during_a_draw_storm_loses_no_acknowledged_draw(
        ending: Ending) -> None:
    gw = ending.stack.gateways
    base = f"/api/lotteries/{KILL}"
    users = [f"lt-k{n}" for n in range(KILL_USERS)]
    acked: dict[str, list[dict[str, Any]]] = {user: [] for user in users}
    statuses: Counter[int] = Counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        status, body = await get(session, gw[0].url + base, users[0])
        assert status == 200 and body["lottery"]["draws_left"] == KILL_DRAWS, body
        commitment = body["lottery"]["commitment"]
        assert HEX64.fullmatch(commitment), body
        before = await _actor_pid(ending.stack, KILL)
        killed = asyncio.Event()

        async def draw(index: int, user: str, k: int) -> dict[str, Any]:
            """One draw, retried with its idempotency key while the owner is away."""
            deadline = time.monotonic() + ANSWER_WITHIN
            while True:
                try:
                    status, body = await post(session, f"{gw[(index + k) % 2].url}{base}"
                                                       "/draws", user, key=f"draw-{user}-{k}")
                except aiohttp.ClientError:
                    status, body = 0, {}  # retried as a 503
                statuses[status] += 1
                if status == 201:
                    return body
                assert status in (0, 503), (user, k, status, body)
                assert time.monotonic() < deadline, f"{user} never got an answer"
                await asyncio.sleep(RETRY_PAUSE)  # client back-off while Ray restarts it

        async def play(index: int, user: str) -> None:
            for k in range(KILL_DRAWS):
                answer = await draw(index, user, k)
                acked[user].append(answer["draw"])
                assert answer["draws_left"] == KILL_DRAWS - 1 - k, answer
                if sum(map(len, acked.values())) == KILL_AFTER_ACKS and not killed.is_set():
                    os.kill(before, signal.SIGKILL)  # mid-storm, without warning
                    killed.set()

        await asyncio.gather(*(play(n, user) for n, user in enumerate(users)))
        assert killed.is_set()
        assert _left(ending, KILL) > 0, "the storm outlasted the campaign: raise its end"
        assert await _actor_pid(ending.stack, KILL) != before  # Ray really restarted it
        assert all(status < 500 or status == 503 for status in statuses), statuses
        listed = await asyncio.gather(*(
            get(session, gw[n % 2].url + base + "/draws", user) for n, user in enumerate(users)))
        status, body = await get(session, gw[1].url + base, users[0])
        assert status == 200 and body["lottery"]["commitment"] == commitment, body
        assert body["lottery"]["draws"] == KILL_USERS * KILL_DRAWS
        seed = await _until_revealed(ending, KILL)
        audit = await _audit(session, ending, KILL)
    for user, (status, body) in zip(users, listed, strict=True):
        assert status == 200, body
        # Every acknowledged draw is there exactly once, as its user was told (same id,
        # same prize), numbered 1, 2, 3 without a repeat.
        assert body["draws"] == acked[user], user
        assert [d["n"] for d in body["draws"]] == list(range(1, KILL_DRAWS + 1)), user
        for n, d in enumerate(body["draws"], 1):
            _assert_draw(d, user, n, KILL)
    ids = [d["id"] for draws in acked.values() for d in draws]
    assert len(ids) == len(set(ids)) == KILL_USERS * KILL_DRAWS
    assert audit["lottery"]["commitment"] == commitment and audit["lottery"]["seed"] == seed
    verdict = check(audit)
    assert verdict.ok and verdict.checked == KILL_USERS * KILL_DRAWS, verdict
    assert sorted((d["user"], d["n"], d["prize"]) for d in audit["draws"]) == sorted(
        (d["user"], d["n"], d["prize"]["id"]) for draws in acked.values() for d in draws)
    stock = Counter(d["prize"] for d in audit["draws"])
    assert stock["teapot"] <= 10, stock
