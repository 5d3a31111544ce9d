"""Leaderboards (排行榜) on a real stack: a deal through the pipeline moves a regional board
live (the board's topic, the seller's own rank), the routes answer from the rank cache
with the caller's region by default, and every bad parameter is a 4xx in the contract's
shape. The stack's board `lb` ranks referred sales this week, per region (users `lb-`)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.acceptance.test_commissions import PAIR, PRICE, user_event
from tests.support.client import WS, post, token
from tests.support.stack import Stack

pytestmark = pytest.mark.acceptance

BOARD = "/api/leaderboards/lb"


async def get(session: aiohttp.ClientSession, url: str, user: str, home: str | None = None,
              **query: Any) -> tuple[int, dict[str, Any]]:
    """GET as `user`, whose token's region claim is `home`."""
    headers = {"Authorization": f"Bearer {token(user, region=home)}"}
    async with session.get(url, headers=headers, params=query) as resp:
        return resp.status, await resp.json()


def board_with(user: str) -> Any:
    return lambda f: f.get("op") == "event" and f["data"]["type"] == "board" and any(
        e["user"] == user for e in f["data"]["entries"])


async def test_a_deal_moves_the_board_live_and_reads_rank_the_caller(stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        # lb-sel acts from Yunnan and brought in both buyers.
        status, listed = await get(session, gw[0].url + "/api/leaderboards", "lb-sel", "YN")
        assert status == 200 and "lb" in {b["id"] for b in listed["boards"]}
        assert {b["kind"] for b in listed["boards"]} == {"leaderboard"}
        for buyer in ("lb-b1", "lb-b2"):
            status, body = await post(session, gw[0].url + "/api/referrals", buyer,
                                      {"referrer": "lb-sel"})
            assert status == 200, body
        seller = await WS.connect(gw[1].ws_url + f"?token={token('lb-sel', region='YN')}")
        await seller.send({"op": "subscribe", "topic": "leaderboard:lb"})
        snapshot = await seller.until(lambda f: f.get("op") == "snapshot")
        assert snapshot["data"]["leaderboard"]["board"] == "lb"
        await seller.send({"op": "subscribe", "topic": "user:lb-sel"})
        await seller.until(lambda f: f.get("op") == "snapshot")
        # A deal of two orders, each referred by lb-sel.
        status, body = await post(session, gw[0].url + PAIR, "lb-b1")
        assert status == 201, body
        status, body = await post(session, f"{gw[1].url}{PAIR}/{body['group']['id']}/join",
                                  "lb-b2")
        assert status == 200 and body["group"]["status"] == "completed", body
        frame = await seller.until(board_with("lb-sel"), timeout=20)
        assert frame["data"]["period"] and frame["data"]["region"] is None
        mine = await seller.until(user_event("rank_changed"), timeout=20)
        assert mine["data"]["board"] == "lb" and mine["data"]["rank"] >= 1
        # Both orders may land in one flush or two: wait for the whole deal's score.
        while next(e["score"] for e in frame["data"]["entries"]
                   if e["user"] == "lb-sel") < 2 * PRICE:
            frame = await seller.until(board_with("lb-sel"), timeout=20)
        # Read from the rank cache: the caller's region by default, everyone's on ask.
        status, yn = await get(session, gw[0].url + BOARD, "lb-sel", "YN")
        assert status == 200 and yn["region"] == "YN", yn
        assert yn["entries"] == [{"rank": 1, "user": "lb-sel", "score": 2 * PRICE}]
        assert yn["me"] == {"rank": 1, "score": 2 * PRICE}
        status, everyone = await get(session, gw[1].url + BOARD, "lb-b1", region="all")
        assert status == 200 and everyone["region"] is None and everyone["me"] is None
        assert {"rank": 1, "user": "lb-sel", "score": 2 * PRICE} in everyone["entries"]
        assert everyone["period"] == yn["period"] and everyone["final"] is False
        status, around = await get(session, gw[0].url + BOARD + "/around-me", "lb-sel", "YN",
                                   k="2")
        assert status == 200 and around["entries"] == yn["entries"], around
        status, champions = await get(session, gw[0].url + BOARD + "/champions", "lb-sel")
        assert status == 200 and champions == {"board": "lb", "region": None,
                                                "champions": []}
        # The same read over the socket.
        reply = await seller.call("g1", "leaderboard.get", {"campaign": "lb"})
        assert reply["ok"] and reply["result"]["entries"] == yn["entries"], reply
        # The region's own topic exists now.
        await seller.send({"op": "subscribe", "topic": "leaderboard:lb:YN"})
        region = await seller.until(lambda f: f.get("op") == "snapshot"
                                    and f["topic"] == "leaderboard:lb:YN")
        assert region["data"]["leaderboard"]["entries"][0]["user"] == "lb-sel"
        await seller.close()


@pytest.mark.parametrize(("path", "query", "status", "code"), [
    (BOARD, {"period": "2026-13"}, 400, "invalid_request"),  # a month, not a week
    (BOARD, {"period": "2026-W99"}, 400, "invalid_request"),
    (BOARD, {"period": "last week"}, 400, "invalid_request"),
    (BOARD, {"period": "9999-W52"}, 400, "invalid_request"),  # its end is no date
    (BOARD + "/around-me", {"period": "9999-W52"}, 400, "invalid_request"),
    (BOARD, {"limit": "0"}, 400, "invalid_request"),
    (BOARD, {"limit": "101"}, 400, "invalid_request"),
    (BOARD, {"limit": "1e3"}, 400, "invalid_request"),
    (BOARD, {"region": "云南"}, 400, "invalid_request"),
    (BOARD + "/around-me", {"k": "51"}, 400, "invalid_request"),
    (BOARD + "/around-me", {"k": "-1"}, 400, "invalid_request"),
    (BOARD + "/champions", {"limit": "x"}, 400, "invalid_request"),
    ("/api/leaderboards/nope", {}, 404, "not_found"),
    ("/api/leaderboards/pair", {}, 404, "not_found"),  # a campaign, not a board
    ("/api/leaderboards/nope/champions", {}, 404, "not_found"),
])
async def test_bad_parameters_are_refused_in_the_contract_shape(
        stack: Stack, path: str, query: dict[str, str], status: int, code: str) -> None:
    async with aiohttp.ClientSession() as session:
        got, body = await get(session, stack.gateways[0].url + path, "lb-bad", **query)
    assert (got, body["error"]["code"]) == (status, code), body


async def test_a_region_on_a_board_of_everyone_and_no_token_are_refused(
        stack: Stack) -> None:
    url = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        async with session.get(url + BOARD) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthorized"
        async with session.get(url + "/api/leaderboards") as resp:
            assert resp.status == 401
