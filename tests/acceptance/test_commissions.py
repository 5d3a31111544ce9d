"""Referrals to money: a shared deal pays two levels of commission, live and durably, and
a refund inside the return window takes it back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support import ledger
from tests.support.client import WS, get, post, token
from tests.support.services import Services
from tests.support.stack import Stack


@pytest.fixture(autouse=True)
async def sound_ledger(migrated: Services) -> AsyncIterator[None]:
    """After each test: the shared deployment's ledger balances and agrees with its
    commissions, orders and withdrawals (tests.support.ledger)."""
    yield
    conn = await asyncpg.connect(migrated.database_url)
    try:
        assert await ledger.problems(conn) == []
    finally:
        await conn.close()

pytestmark = pytest.mark.acceptance

PAIR = "/api/groupbuys/pair/groups"
PRICE = 6000  # the test campaigns' group price, fen


def user_event(kind: str) -> Any:
    return lambda f: f.get("op") == "event" and f["data"]["type"] == kind


async def watch(url: str, user: str) -> WS:
    ws = await WS.connect(url, user)
    await ws.send({"op": "subscribe", "topic": f"user:{user}"})
    await ws.until(lambda f: f.get("op") == "snapshot")
    return ws


async def test_a_shared_deal_pays_referrers_live_and_a_refund_takes_it_back(
        stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        # cm-zed brought cm-amy; cm-amy brought cm-bob (over HTTP and over a socket).
        status, body = await post(session, gw[0].url + "/api/referrals", "cm-amy",
                                  {"referrer": "cm-zed"})
        assert status == 200 and body["referral"]["referrer"] == "cm-zed", body
        bob = await WS.connect(gw[1].ws_url, "cm-bob")
        reply = await bob.call("r1", "referrals.bind", {"referrer": "cm-amy"})
        assert reply["ok"] and reply["result"]["referral"]["user"] == "cm-bob", reply
        await bob.close()
        status, body = await get(session, gw[1].url + "/api/referrals", "cm-amy")
        assert body == {"referral": {"user": "cm-amy", "referrer": "cm-zed",
                                     "bound_at": body["referral"]["bound_at"]},
                        "invited": 1}
        # A sharer's page shows what sharing this campaign earns (分享赚).
        async with session.get(gw[0].url + "/api/campaigns") as resp:
            listed = {c["id"]: c for c in (await resp.json())["campaigns"]}
        assert listed["pair"]["commission"] == {"level1_bps": 1000, "level2_bps": 300}
        amy, zed = await watch(gw[0].ws_url, "cm-amy"), await watch(gw[1].ws_url, "cm-zed")
        # cm-carol opens, cm-bob joins: a deal of two orders.
        status, body = await post(session, gw[0].url + PAIR, "cm-carol")
        assert status == 201, body
        status, body = await post(session, f"{gw[1].url}{PAIR}/{body['group']['id']}/join",
                                  "cm-bob")
        assert status == 200 and body["group"]["status"] == "completed", body
        # Both referrers see their share of cm-bob's order as soon as it is committed.
        first = await amy.until(user_event("commission_pending"))
        second = await zed.until(user_event("commission_pending"))
        assert (first["data"]["level"], first["data"]["amount"]) == (1, PRICE // 10)
        assert (second["data"]["level"], second["data"]["amount"]) == (2, PRICE * 3 // 100)
        order = first["data"]["order"]
        assert second["data"]["order"] == order and first["data"]["buyer"] == "cm-bob"
        status, body = await get(session, gw[0].url + "/api/commissions", "cm-amy")
        assert status == 200 and body["balance"] == {"pending": PRICE // 10, "available": 0,
                                                     "withdrawing": 0, "debt": 0}
        [earned] = body["commissions"]
        assert (earned["order"], earned["status"], earned["rate_bps"]) == (order, "pending", 1000)
        # The pipeline's counts reach /metrics (at least this deal's two commissions).
        async with session.get(gw[0].url + "/metrics") as resp:
            counted = [line for line in (await resp.text()).splitlines()
                       if line.startswith("fission_pipeline_commissions_total ")]
        assert len(counted) == 1 and int(counted[0].split()[1]) >= 2, counted
        # cm-carol came on her own: her order earns nobody anything.
        status, body = await get(session, gw[0].url + "/api/commissions", "cm-carol")
        assert body == {"balance": {"pending": 0, "available": 0, "withdrawing": 0, "debt": 0},
                        "commissions": []}

        # Someone else's order is not theirs to refund; the buyer's own is, once.
        status, body = await post(session, f"{gw[0].url}/api/orders/{order}/refund", "cm-amy")
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await post(session, f"{gw[0].url}/api/orders/{order}/refund", "cm-bob",
                                  key="refund-1")
        assert status == 200 and body["order"]["status"] == "refunded", body
        again = await post(session, f"{gw[1].url}/api/orders/{order}/refund", "cm-bob")
        assert again == (200, body)
        reversed_ = await amy.until(user_event("commission_reversed"))
        assert reversed_["data"]["order"] == order
        await zed.until(user_event("commission_reversed"))
        for user in ("cm-amy", "cm-zed"):
            status, body = await get(session, gw[1].url + "/api/commissions", user)
            assert body["balance"] == {"pending": 0, "available": 0, "withdrawing": 0, "debt": 0}, (
                user, body)
            assert [c["status"] for c in body["commissions"]] == ["reversed"]
        status, body = await get(session, gw[0].url + "/api/orders", "cm-bob")
        assert [(o["id"], o["status"]) for o in body["orders"]] == [(order, "refunded")]
        await amy.close()
        await zed.close()


@pytest.mark.parametrize("body, code", [
    ({}, "invalid_request"),
    ({"referrer": ""}, "invalid_request"),
    ({"referrer": 7}, "invalid_request"),
    ({"referrer": "has space"}, "invalid_request"),
    ({"referrer": "ok", "user": "someone-else"}, "invalid_request"),
    ({"referrer": "cm-self"}, "invalid_request"),
])
async def test_bad_binds_are_refused_and_bind_nothing(stack: Stack, body: dict[str, Any],
                                                      code: str) -> None:
    url = stack.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, answer = await post(session, url + "/api/referrals", "cm-self", body)
        assert (status, answer["error"]["code"]) == (400, code), answer
        status, answer = await get(session, url + "/api/referrals", "cm-self")
        assert answer["referral"] is None


async def test_a_second_referrer_is_refused(stack: Stack) -> None:
    url = stack.gateways[0].url + "/api/referrals"
    async with aiohttp.ClientSession() as session:
        # Any user id a token may carry can be a referrer, dots and @ included.
        status, body = await post(session, url, "cm-gus", {"referrer": "13800138000@shop.cn"})
        assert status == 200 and body["referral"]["referrer"] == "13800138000@shop.cn", body
        assert (await post(session, url, "cm-dee", {"referrer": "cm-eve"}))[0] == 200
        status, body = await post(session, url, "cm-dee", {"referrer": "cm-fay"})
        assert (status, body["error"]["code"]) == (409, "already_bound")
        # The loop back is refused too: cm-eve may not be brought in by cm-dee.
        status, body = await post(session, url, "cm-eve", {"referrer": "cm-dee"})
        assert (status, body["error"]["code"]) == (400, "invalid_request")


@pytest.mark.parametrize("order", ["abc", "0", "-1", "1.5", "99999999999999999999", "²",
                                   "%D9%A1%D9%A2", "1e3", "%201"])
async def test_bad_order_ids_are_refused(stack: Stack, order: str) -> None:
    url = f"{stack.gateways[0].url}/api/orders/{order}/refund"
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, url, "cm-bob")
        assert (status, body["error"]["code"]) == (400, "invalid_request"), body


async def test_a_share_links_referrer_binds_on_a_join_help_or_draw(stack: Stack) -> None:
    """The share link's `referrer` rides on the command it leads to, over HTTP and /ws
    alike: it binds the caller first; a refused binding never fails the command."""
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        ann = await watch(gw[0].ws_url, "cr-ann")
        # cr-ann opens a pair through cr-sam's link: bound to cr-sam, group opened.
        status, body = await post(session, gw[0].url + PAIR, "cr-ann", {"referrer": "cr-sam"})
        assert status == 201 and body["group"]["status"] == "open", body
        assert body["referral"] == {"user": "cr-ann", "referrer": "cr-sam",
                                    "bound_at": body["referral"]["bound_at"]}
        # cr-ben joins it over a socket through cr-ann's link.
        ben = await WS.connect(gw[1].ws_url, "cr-ben")
        reply = await ben.call("join-1", "groupbuy.join", {
            "campaign": "pair", "group": body["group"]["id"], "referrer": "cr-ann"})
        assert reply["ok"] and reply["result"]["group"]["status"] == "completed", reply
        assert reply["result"]["referral"]["referrer"] == "cr-ann"
        # cr-ann is told whom she brought in, then the deal pays her on cr-ben's order.
        bound = await ann.until(user_event("referral_bound"))
        assert bound["data"]["user"] == "cr-ben"
        earned = await ann.until(user_event("commission_pending"))
        assert (earned["data"]["buyer"], earned["data"]["amount"]) == ("cr-ben", PRICE // 10)
        status, body = await get(session, gw[1].url + "/api/referrals", "cr-sam")
        assert body == {"referral": None, "invited": 1}
        # Refusals: another referrer for the bound cr-ben (already_bound), cr-dan's own id
        # (invalid_request), a loop (cr-sam under cr-ben, who came through cr-sam's
        # cr-ann). Each command goes on as if no referrer had been given.
        reply = await ben.call("draw-1", "lottery.draw", {"campaign": "luck",
                                                          "referrer": "cr-cat"})
        assert reply["ok"] and reply["result"]["draw"]["user"] == "cr-ben", reply
        assert reply["result"]["referral_error"]["code"] == "already_bound"
        assert "referral" not in reply["result"]
        await ben.close()
        status, body = await post(session, gw[0].url + "/api/bargains/cut", "cr-dan",
                                  {"referrer": "cr-dan"})
        assert status == 201 and body["bargain"]["initiator"] == "cr-dan", body
        assert body["referral_error"]["code"] == "invalid_request"
        bargain = body["bargain"]["id"]
        status, body = await post(session, f"{gw[0].url}/api/bargains/cut/{bargain}/help",
                                  "cr-sam", {"referrer": "cr-ben"})
        assert status == 200 and body["cut"] > 0, body
        assert body["referral_error"]["code"] == "invalid_request", body
        status, body = await get(session, gw[0].url + "/api/referrals", "cr-ben")
        assert body["referral"]["referrer"] == "cr-ann" and body["invited"] == 0
        status, body = await get(session, gw[0].url + "/api/referrals", "cr-sam")
        assert body["referral"] is None
        await ann.close()


@pytest.mark.parametrize("referrer", ["", "has space", 7, None, ["cr-sam"], "x" * 65, "a\nb"])
async def test_a_malformed_share_link_referrer_is_an_invalid_request(
        stack: Stack, referrer: Any) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        status, body = await post(session, gw[0].url + PAIR, "cr-odd", {"referrer": referrer})
        assert (status, body["error"]["code"]) == (400, "invalid_request"), body
        assert "referrer" in body["error"]["message"]
        socket = await WS.connect(gw[1].ws_url, "cr-odd")
        reply = await socket.call("draw-1", "lottery.draw", {"campaign": "luck",
                                                             "referrer": referrer})
        await socket.close()
        assert not reply["ok"] and reply["error"]["code"] == "invalid_request", reply
        # Nothing was bound, opened or drawn.
        status, body = await get(session, gw[0].url + "/api/referrals", "cr-odd")
        assert body["referral"] is None
        status, body = await get(session, gw[0].url + "/api/lotteries/luck/draws", "cr-odd")
        assert body["draws"] == []


async def test_a_marketer_audits_a_users_bindings(stack: Stack) -> None:
    url = stack.gateways[0].url
    boss = {"Authorization": f"Bearer {token('cr-boss', role='marketer')}"}
    async with aiohttp.ClientSession() as session:
        for user, referrer in (("cr-kid", "cr-mom"), ("cr-mom", "cr-gran")):
            status, _ = await post(session, url + "/api/referrals", user, {"referrer": referrer})
            assert status == 200
        async with session.get(url + "/api/admin/users/cr-mom/referrals", headers=boss) as r:
            status, body = r.status, await r.json()
        assert status == 200, body
        [own] = body["bindings"]
        [brought] = body["brought"]
        assert (own["user"], own["referrer"], own["ended_at"], own["ended_by"]) == (
            "cr-mom", "cr-gran", None, None)
        assert (brought["user"], brought["referrer"], brought["ended_at"]) == (
            "cr-kid", "cr-mom", None)
        # Only a marketer sees it; a user id that is no id is refused.
        status, body = await get(session, url + "/api/admin/users/cr-mom/referrals", "cr-kid")
        assert (status, body["error"]["code"]) == (403, "forbidden")
        async with session.get(url + "/api/admin/users/a%20b/referrals", headers=boss) as r:
            assert r.status == 400


async def admin_post(session: aiohttp.ClientSession, url: str, body: Any = None,
                     key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token('cm-boss', role='marketer')}"}
    if key:
        headers["Idempotency-Key"] = key
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_an_order_refunds_in_pieces_over_http_and_bad_pieces_change_nothing(
        stack: Stack) -> None:
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        assert (await post(session, gw[0].url + "/api/referrals", "cm-pbob",
                           {"referrer": "cm-pamy"}))[0] == 200
        amy = await watch(gw[0].ws_url, "cm-pamy")
        status, body = await post(session, gw[0].url + PAIR, "cm-pcat")
        assert status == 201, body
        status, body = await post(session, f"{gw[1].url}{PAIR}/{body['group']['id']}/join",
                                  "cm-pbob")
        assert status == 200 and body["group"]["status"] == "completed", body
        order = (await amy.until(user_event("commission_pending")))["data"]["order"]
        refund = f"{gw[0].url}/api/orders/{order}/refund"
        # Bad amounts are refused with a clear code and refund nothing.
        for bad in (-1, 0, "100", 1.5, True, None, [100]):
            status, answer = await post(session, refund, "cm-pbob", {"amount": bad})
            assert (status, answer["error"]["code"]) == (400, "invalid_request"), (bad, answer)
        status, answer = await post(session, refund, "cm-pbob", {"amount": 100, "note": "x"})
        assert (status, answer["error"]["code"]) == (400, "invalid_request"), answer
        status, answer = await post(session, refund, "cm-pbob", {"amount": PRICE + 1})
        assert (status, answer["error"]["code"]) == (409, "refund_exceeds_order"), answer
        # A piece of 1000 fen, asked twice with one key: refunded once.
        status, first = await post(session, refund, "cm-pbob", {"amount": 1000}, key="pc-1")
        assert status == 200 and first["order"]["refunded_amount"] == 1000, first
        assert first["order"]["status"] == "paid"
        assert await post(session, refund, "cm-pbob", {"amount": 1000}, key="pc-1") == (
            200, first)
        reversed_ = await amy.until(user_event("commission_reversed"))
        assert (reversed_["data"]["amount"], reversed_["data"]["reversed"]) == (100, 100)
        status, body = await get(session, gw[1].url + "/api/commissions", "cm-pamy")
        assert body["balance"] == {"pending": 500, "available": 0, "withdrawing": 0,
                                   "debt": 0}
        assert body["commissions"][0]["reversed"] == 100
        # More than the rest (5000 fen) is refused; the admin route is a marketer's only.
        status, answer = await post(session, refund, "cm-pbob", {"amount": 5001})
        assert (status, answer["error"]["code"]) == (409, "refund_exceeds_order")
        assert "5000" in answer["error"]["message"]
        admin = f"{gw[1].url}/api/admin/orders/{order}/refund"
        status, answer = await post(session, admin, "cm-pbob", {"amount": 100})
        assert (status, answer["error"]["code"]) == (403, "forbidden")
        for bad_body in ({"amount": 0}, {"amount": "all"}, {"note": ""},
                         {"order": order + 1}):
            status, answer = await admin_post(session, admin, bad_body)
            assert (status, answer["error"]["code"]) == (400, "invalid_request"), (
                bad_body, answer)
        status, answer = await admin_post(
            session, f"{gw[1].url}/api/admin/orders/999999999/refund")
        assert (status, answer["error"]["code"]) == (404, "not_found")
        # A marketer refunds the rest, with a note: refunded whole, commission all back.
        status, whole = await admin_post(session, admin, {"note": "顾客退货"}, key="pc-2")
        assert status == 200 and whole["order"]["status"] == "refunded", whole
        assert whole["order"]["refunded_amount"] == PRICE
        assert await post(session, refund, "cm-pbob") == (200, whole)
        status, body = await get(session, gw[0].url + "/api/commissions", "cm-pamy")
        assert body["balance"] == {"pending": 0, "available": 0, "withdrawing": 0, "debt": 0}
        assert [(c["status"], c["reversed"]) for c in body["commissions"]] == [
            ("reversed", 600)]
        await amy.close()
