"""Withdrawals end to end: settled commission taken out once, small sums paid at once,
large ones reviewed by a marketer, concurrent requests never overdrawing.

A deployment of its own (one gateway on the shared Ray head, its own database): its
return window is 0 days, so commission settles as soon as it is posted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.support import configs, ledger
from tests.support.client import WS, auth, get, post, token
from tests.support.faults import fault_env, own_database
from tests.support.services import Services
from tests.support.stack import (
    Stack,
    start_gateway,
    stop_group,
    wait_healthy,
    write_config,
)

pytestmark = pytest.mark.acceptance

PRICE = 6000  # fen; the referrer earns 10%: 600
MIN_FEN, REVIEW_FEN = 100, 200


@pytest.fixture(scope="module")
async def money(migrated: Services, ray_address: str,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    database_url = await own_database(migrated, "fission_withdrawals")
    tmp: Path = tmp_path_factory.mktemp("money")
    doc = configs.document(
        [configs.campaign("wd", size=2, stock=1000, led=50, joined=50)], shards=1,
        namespace=f"w{uuid.uuid4().hex[:8]}", database_url=database_url,
        redis_url=migrated.redis_url, ray_address=ray_address, data_dir=str(tmp / "data"))
    doc["commission"] = {"return_window_days": 0, "withdrawal_min_fen": MIN_FEN,
                         "withdrawal_review_fen": REVIEW_FEN}
    # This deployment's database must win over an environment's (CI's second pass sets
    # FISSION_DATABASE_URL), or the shared stack's pipeline drains its deals.
    env = fault_env(database_url, migrated.redis_url)
    gateway = start_gateway(write_config(tmp, doc), tmp, env=env)
    try:
        await wait_healthy(gateway)
        yield Stack(tmp / "config.toml", doc, [gateway], ray_address)
    finally:
        stop_group(gateway.proc, 10)


def is_event(kind: str) -> Any:
    return lambda f: f.get("op") == "event" and f["data"]["type"] == kind


async def admin(session: aiohttp.ClientSession, method: str, url: str,
                body: Any = None) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {token('wd-boss', role='marketer')}"}
    async with session.request(method, url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def balance(session: aiohttp.ClientSession, url: str, user: str) -> dict[str, int]:
    status, body = await get(session, url + "/api/commissions", user)
    assert status == 200, body
    found: dict[str, int] = body["balance"]
    return found


async def test_settled_commission_is_withdrawn_once_and_large_sums_are_reviewed(
        money: Stack) -> None:
    url = money.gateways[0].url
    async with aiohttp.ClientSession() as session:
        ann = await WS.connect(money.gateways[0].ws_url, "wd-ann")
        await ann.send({"op": "subscribe", "topic": "user:wd-ann"})
        await ann.until(lambda f: f.get("op") == "snapshot")
        # wd-bob came through wd-ann's link and completes a deal: ann earns 600 fen,
        # settled at once (a 0-day window).
        status, _ = await post(session, url + "/api/referrals", "wd-bob", {"referrer": "wd-ann"})
        assert status == 200
        status, body = await post(session, url + "/api/groupbuys/wd/groups", "wd-bob")
        assert status == 201, body
        status, body = await post(session, f"{url}/api/groupbuys/wd/groups/"
                                  f"{body['group']['id']}/join", "wd-cy")
        assert status == 200 and body["group"]["status"] == "completed", body
        await ann.until(is_event("commission_settled"))
        assert await balance(session, url, "wd-ann") == {
            "pending": 0, "available": 600, "withdrawing": 0, "debt": 0}

        # Below the review threshold: paid at once; its key makes a repeat harmless.
        first = await post(session, url + "/api/withdrawals", "wd-ann", {"amount": 150},
                           key="w1")
        assert first[0] == 201 and first[1]["withdrawal"]["status"] == "paid", first
        assert first[1]["withdrawal"]["payout_ref"]
        assert await post(session, url + "/api/withdrawals", "wd-ann", {"amount": 150},
                          key="w1") == first
        paid = await ann.until(is_event("withdrawal_paid"))
        assert paid["data"]["withdrawal"]["id"] == first[1]["withdrawal"]["id"]
        # From the threshold up: held for review.
        status, body = await post(session, url + "/api/withdrawals", "wd-ann", {"amount": 300})
        assert status == 201 and body["withdrawal"]["status"] == "reviewing", body
        held = body["withdrawal"]["id"]
        assert await balance(session, url, "wd-ann") == {
            "pending": 0, "available": 150, "withdrawing": 300, "debt": 0}
        status, body = await post(session, url + "/api/withdrawals", "wd-ann", {"amount": 151})
        assert (status, body["error"]["code"]) == (409, "insufficient_balance")
        status, body = await post(session, url + "/api/withdrawals", "wd-ann", {"amount": 99})
        assert (status, body["error"]["code"]) == (400, "invalid_request")

        # Only a marketer reviews; the user may not approve their own.
        status, body = await post(session, f"{url}/api/admin/withdrawals/{held}/approve",
                                  "wd-ann")
        assert (status, body["error"]["code"]) == (403, "forbidden")
        status, body = await get(session, url + "/api/admin/withdrawals", "wd-ann")
        assert status == 403
        status, body = await admin(session, "GET", url + "/api/admin/withdrawals")
        assert status == 200 and [w["id"] for w in body["withdrawals"]] == [held]
        status, body = await admin(session, "POST",
                                   f"{url}/api/admin/withdrawals/{held}/reject",
                                   {"note": "bank account unverified"})
        assert status == 200 and body["withdrawal"]["status"] == "rejected", body
        assert body["withdrawal"]["reviewer"] == "wd-boss"
        await ann.until(is_event("withdrawal_rejected"))
        status, body = await admin(session, "POST",
                                   f"{url}/api/admin/withdrawals/{held}/approve")
        assert (status, body["error"]["code"]) == (409, "already_reviewed")
        assert await balance(session, url, "wd-ann") == {
            "pending": 0, "available": 450, "withdrawing": 0, "debt": 0}

        # Five requests for the whole balance at once: exactly one holds it.
        racing = await asyncio.gather(*(
            post(session, url + "/api/withdrawals", "wd-ann", {"amount": 450}, key=f"race{n}")
            for n in range(5)))
        assert sorted(status for status, _ in racing) == [201, 409, 409, 409, 409]
        [won] = [body["withdrawal"] for status, body in racing if status == 201]
        status, body = await admin(session, "POST",
                                   f"{url}/api/admin/withdrawals/{won['id']}/approve")
        assert status == 200 and body["withdrawal"]["status"] == "paid", body
        assert await balance(session, url, "wd-ann") == {
            "pending": 0, "available": 0, "withdrawing": 0, "debt": 0}
        status, body = await get(session, url + "/api/withdrawals", "wd-ann")
        assert [(w["amount"], w["status"]) for w in body["withdrawals"]] == [
            (450, "paid"), (300, "rejected"), (150, "paid")]
        await ann.close()


@pytest.mark.parametrize("body", [{}, {"amount": 0}, {"amount": -5}, {"amount": 1.5},
                                  {"amount": "100"}, {"amount": 100, "user": "wd-x"},
                                  {"amount": 10**13}])
async def test_bad_withdrawal_requests_are_refused(money: Stack, body: dict[str, Any]) -> None:
    url = money.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, answer = await post(session, url + "/api/withdrawals", "wd-dee", body)
        assert (status, answer["error"]["code"]) == (400, "invalid_request"), answer


@pytest.mark.parametrize("path, body", [
    ("/api/admin/withdrawals/abc/approve", None),
    ("/api/admin/withdrawals/0/reject", None),
    ("/api/admin/withdrawals/1/approve", {"note": ""}),
    ("/api/admin/withdrawals/1/approve", {"note": "x" * 201}),
    ("/api/admin/withdrawals/1/approve", {"withdrawal": 2}),
])
async def test_bad_reviews_are_refused(money: Stack, path: str, body: Any) -> None:
    url = money.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, answer = await admin(session, "POST", url + path, body)
        assert (status, answer["error"]["code"]) == (400, "invalid_request"), answer


async def test_reviewing_an_unknown_withdrawal_is_not_found(money: Stack) -> None:
    url = money.gateways[0].url
    async with aiohttp.ClientSession() as session:
        status, answer = await admin(session, "POST",
                                     url + "/api/admin/withdrawals/999999/approve")
        assert (status, answer["error"]["code"]) == (404, "not_found")
        headers = auth("wd-eve")
        async with session.get(url + "/api/admin/withdrawals?status=bogus",
                               headers={**headers, "Authorization":
                                        f"Bearer {token('wd-boss', role='marketer')}"}) as r:
            assert r.status == 400


async def test_a_quote_shows_the_fee_and_the_review_before_asking(money: Stack) -> None:
    url = money.gateways[0].url + "/api/withdrawals/quote"
    async with aiohttp.ClientSession() as session:
        status, body = await get(session, url + "?amount=150", "wd-quoted")
        assert (status, body) == (200, {"amount": 150, "fee": 0, "net": 150,
                                        "reviewed": False, "allowed": True})
        status, body = await get(session, url + f"?amount={REVIEW_FEN}", "wd-quoted")
        assert status == 200 and body["reviewed"] is True
        status, body = await get(session, url + f"?amount={MIN_FEN - 1}", "wd-quoted")
        assert status == 200 and body["allowed"] is False
        for bad in ("", "?amount=x", "?amount=0", "?amount=1.5"):
            status, body = await get(session, url + bad, "wd-quoted")
            assert status == 400 and body["error"]["code"] == "invalid_request", (bad, body)


async def test_an_after_sales_refund_past_the_balance_is_a_debt_the_next_settlement_pays(
        money: Stack) -> None:
    url = money.gateways[0].url
    async with aiohttp.ClientSession() as session:
        dot = await WS.connect(money.gateways[0].ws_url, "wd-dot")
        await dot.send({"op": "subscribe", "topic": "user:wd-dot"})
        await dot.until(lambda f: f.get("op") == "snapshot")
        assert (await post(session, url + "/api/referrals", "wd-eli",
                           {"referrer": "wd-dot"}))[0] == 200

        async def eli_buys() -> None:
            status, body = await post(session, url + "/api/groupbuys/wd/groups", "wd-eli")
            assert status == 201, body
            status, body = await post(session, f"{url}/api/groupbuys/wd/groups/"
                                      f"{body['group']['id']}/join", "wd-fay")
            assert status == 200 and body["group"]["status"] == "completed", body
            await dot.until(is_event("commission_settled"))

        await eli_buys()
        assert (await post(session, url + "/api/withdrawals", "wd-dot", {"amount": 150}))[0] \
            == 201
        status, body = await get(session, url + "/api/orders", "wd-eli")
        order = body["orders"][0]["id"]
        # The buyer is past the (0-day) window; a marketer refunds half, then the rest.
        status, body = await post(session, f"{url}/api/orders/{order}/refund", "wd-eli")
        assert (status, body["error"]["code"]) == (409, "return_window_closed")
        refund = f"{url}/api/admin/orders/{order}/refund"
        status, body = await admin(session, "POST", refund, {"amount": PRICE // 2})
        assert status == 200 and body["order"]["refunded_amount"] == PRICE // 2, body
        assert await balance(session, url, "wd-dot") == {
            "pending": 0, "available": 150, "withdrawing": 0, "debt": 0}
        status, body = await admin(session, "POST", refund, {"note": "退货"})
        assert status == 200 and body["order"]["status"] == "refunded", body
        # 300 more taken back, 150 of it from available: 150 owed, never capped.
        assert await balance(session, url, "wd-dot") == {
            "pending": 0, "available": 0, "withdrawing": 0, "debt": 150}
        clawed = await dot.until(lambda f: is_event("commission_clawed_back")(f)
                                 and f["data"]["to_debt"] > 0)
        assert (clawed["data"]["amount"], clawed["data"]["to_debt"], clawed["data"]["debt"]) \
            == (300, 150, 150)
        status, body = await post(session, url + "/api/withdrawals", "wd-dot", {"amount": 100})
        assert (status, body["error"]["code"]) == (409, "insufficient_balance")
        # eli buys again: its 600 pays the 150 owed first, 450 available.
        await eli_buys()
        assert await balance(session, url, "wd-dot") == {
            "pending": 0, "available": 450, "withdrawing": 0, "debt": 0}
        await dot.close()
    conn = await asyncpg.connect(money.doc["storage"]["database_url"])
    try:
        assert await ledger.problems(conn) == []
    finally:
        await conn.close()
