"""Pay to join over the real stack, with the sandbox paying only when asked: held seats
over HTTP, signed notifications at the notify route (forged ones refused), races between
a payment and its hold's end, and a SIGKILLed owner between payment and confirmation.

A deployment of its own (two gateways on the session's Ray head and Redis, a database of
its own), whose `[pipeline] sandbox_pays` is `on_request` and whose holds last seconds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from actors.sandbox_books import SandboxBooks
from games import payments
from storage import db
from tests.acceptance.test_race import _actor_pid
from tests.support import configs
from tests.support.client import get, post
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

HOLD_S = 2  # a seat's hold: the races need it to end while the test watches
PRICE = 6000
SETTLED_WITHIN = 30.0  # seconds for the server's own timers and pipeline to settle things


@pytest.fixture(scope="module")
async def deployment(migrated: Services, ray_address: str,
                     tmp_path_factory: pytest.TempPathFactory
                     ) -> AsyncIterator[tuple[Stack, str]]:
    tmp: Path = tmp_path_factory.mktemp("payments")
    database_url = await own_database(migrated, "fission_payments")
    campaigns = [configs.campaign(cid, size=size, stock=500, led=50, joined=50, pay=True,
                                  pay_within=HOLD_S)
                 for cid, size in (("pay3", 3), ("pay4", 4), ("paykill", 2))]
    doc = configs.document(campaigns, shards=2, namespace=f"p{uuid.uuid4().hex[:8]}",
                           database_url=database_url, redis_url=migrated.redis_url,
                           ray_address=ray_address, data_dir=str(tmp / "data"))
    doc["pipeline"] = {"sandbox_pays": "on_request", "poll_interval_ms": 100}
    path = write_config(tmp, doc)
    env = fault_env(database_url, migrated.redis_url)
    started: list[Gateway] = [start_gateway(path, tmp, env=env) for _ in range(2)]
    try:
        await asyncio.gather(*(wait_healthy(g) for g in started))
        yield Stack(path, doc, gateways=started, ray_address=ray_address), database_url
    finally:
        for gateway in started:
            stop_group(gateway.proc, 10)
        await asyncio.to_thread(remove_namespace, ray_address, doc["ray"]["namespace"])


def _base(campaign: str) -> str:
    return f"/api/groupbuys/{campaign}/groups"


async def _hold(session: aiohttp.ClientSession, url: str, campaign: str, user: str,
                group: str | None = None) -> dict[str, Any]:
    path = _base(campaign) + ("" if group is None else f"/{group}/join")
    status, body = await post(session, url + path, user, key=f"hold-{user}-{group}")
    assert status == (201 if group is None else 200), body
    assert body["payment"]["status"] == "pending", body
    return body


async def _pay(session: aiohttp.ClientSession, url: str, user: str, payment: str
               ) -> tuple[int, dict[str, Any]]:
    return await post(session, f"{url}/api/sandbox/payments/{payment}/pay", user)


async def _paid_group(session: aiohttp.ClientSession, url: str, campaign: str,
                      leader: str) -> str:
    opened = await _hold(session, url, campaign, leader)
    status, body = await _pay(session, url, leader, opened["payment"]["id"])
    assert status == 200 and body["group"]["members"] == [leader], body
    group: str = body["group"]["id"]
    return group


async def _until(check: Any, what: str) -> Any:
    """Poll `check` (the server's timers and pipeline act on their own) until it answers."""
    deadline = time.monotonic() + SETTLED_WITHIN
    while True:
        found = await check()
        if found:
            return found
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)


async def test_a_held_seat_pays_through_the_notify_route_and_forgeries_are_refused(
        deployment: tuple[Stack, str]) -> None:
    stack, database_url = deployment
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        opened = await _hold(session, gw[0].url, "pay3", "pa-lead")
        payment = opened["payment"]
        assert set(payment["params"]) == {"appId", "timeStamp", "nonceStr", "package",
                                          "signType", "paySign"}
        assert payment["amount"] == PRICE and len(payment["id"]) == payments.ID_LENGTH
        group = opened["group"]
        assert group["members"] == [] and [h["user"] for h in group["held"]] == ["pa-lead"]
        status, body = await post(session, f"{gw[1].url}{_base('pay3')}/{group['id']}/join",
                                  "pa-early")
        assert status == 409 and body["error"]["code"] == "payment_pending", body
        # The payer pays at the provider (the test plays the sandbox's side, which would
        # call the notify route itself), and the notification is delivered by hand.
        pool = await db.create_pool(database_url, min_size=1, max_size=1)
        try:
            books = await SandboxBooks.open(pool)
            headers, body_bytes = books.signer.render_paid(await books.pay(payment["id"]))
        finally:
            await pool.close()
        # A notification signed by anyone but the sandbox's key is refused at the route.
        forged = {**headers, "Wechatpay-Signature": headers["Wechatpay-Signature"][::-1]}
        for bad_headers, bad_body in [(forged, body_bytes), (headers, body_bytes + b" "),
                                      ({}, body_bytes), (headers, b"\xff")]:
            async with session.post(f"{gw[0].url}/api/payments/sandbox/notify",
                                    data=bad_body, headers=bad_headers) as resp:
                refusal = await resp.json()
                assert resp.status == 400, refusal
                assert refusal["error"]["code"] in ("invalid_notification", "invalid_request")
        status, looked = await get(session, f"{gw[0].url}{_base('pay3')}/{group['id']}",
                                   "pa-look")
        assert status == 200 and looked["group"]["members"] == [], looked
        # The sandbox's own notification, delivered twice through the route: one member.
        for _ in range(2):
            async with session.post(f"{gw[1].url}/api/payments/sandbox/notify",
                                    data=body_bytes, headers=headers) as resp:
                assert resp.status == 200 and (await resp.json())["code"] == "SUCCESS"
        status, looked = await get(session, f"{gw[0].url}{_base('pay3')}/{group['id']}",
                                   "pa-look")
        assert looked["group"]["members"] == ["pa-lead"] and looked["group"]["held"] == []
        # Only its payer may pay a payment in the sandbox.
        member = await _hold(session, gw[0].url, "pay3", "pa-m", group["id"])
        status, body = await _pay(session, gw[1].url, "pa-other", member["payment"]["id"])
        assert status == 403, body


async def test_the_last_seats_payment_races_its_hold_and_nothing_is_kept_for_no_seat(
        deployment: tuple[Stack, str]) -> None:
    stack, database_url = deployment
    gw = stack.gateways
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        races = []
        for n in range(12):
            group = await _paid_group(session, gw[n % 2].url, "pay3", f"pr-lead{n}")
            second = await _hold(session, gw[n % 2].url, "pay3", f"pr-b{n}", group)
            status, _ = await _pay(session, gw[n % 2].url, f"pr-b{n}", second["payment"]["id"])
            assert status == 200
            last = await _hold(session, gw[(n + 1) % 2].url, "pay3", f"pr-c{n}", group)
            races.append((n, group, last["payment"]))

        async def pay_near_the_end(n: int, group: str, payment: dict[str, Any]) -> int:
            # Spread around the hold's end: some pay before it, some just after.
            ends = datetime.fromisoformat(payment["expires_at"]).timestamp()
            await asyncio.sleep(max(0.0, ends - time.time() + (n - 6) * 0.05))
            status, _ = await _pay(session, gw[n % 2].url, f"pr-c{n}", payment["id"])
            return status

        statuses = await asyncio.gather(*(pay_near_the_end(*race) for race in races))
        assert all(s in (200, 409) for s in statuses), statuses
    conn = await asyncpg.connect(database_url)
    try:
        async def settled() -> bool:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM groups g, jsonb_array_elements(g.seats) s"
                " WHERE g.campaign = 'pay3' AND s->>4 IN ('held', 'checking')"
                " AND g.id = ANY($1)", [g for _, g, _ in races])
            pending = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE processed_at IS NULL")
            unsent = await conn.fetchval(
                "SELECT count(*) FROM provider_refunds WHERE status = 'requested'")
            done: bool = waiting == 0 and pending == 0 and unsent == 0
            return done
        await _until(settled, "every race settled")
        seated = returned = 0
        for n, group, payment in races:
            row = await conn.fetchrow("SELECT status, members, seats FROM groups WHERE id = $1",
                                      group)
            assert len(row["members"]) <= 3
            books = await conn.fetchrow(
                "SELECT status, refunded FROM sandbox_payments WHERE payment_id = $1",
                payment["id"])
            if f"pr-c{n}" in row["members"]:
                seated += 1
                assert row["status"] == "completed"
                assert books["status"] == "paid" and books["refunded"] == 0
            else:
                assert row["status"] == "open" and len(row["members"]) == 2
                if books["status"] != "closed":  # paid too late: given back, once
                    returned += 1
                    assert (books["status"], books["refunded"]) == ("refunded", PRICE)
        assert seated >= 1, "no payment made before its hold ended was seated"
        await _money_is_exact(conn)
    finally:
        await conn.close()


async def test_two_pay_for_the_last_two_seats_while_a_third_holds_one(
        deployment: tuple[Stack, str]) -> None:
    stack, database_url = deployment
    gw = stack.gateways
    async with aiohttp.ClientSession() as session:
        group = await _paid_group(session, gw[0].url, "pay4", "p4-lead")
        holder = await _hold(session, gw[1].url, "pay4", "p4-hold", group)
        a = await _hold(session, gw[0].url, "pay4", "p4-a", group)
        b = await _hold(session, gw[1].url, "pay4", "p4-b", group)
        status, body = await post(session, f"{gw[0].url}{_base('pay4')}/{group}/join", "p4-x")
        assert status == 409 and body["error"]["code"] == "group_full", body
        paid = await asyncio.gather(_pay(session, gw[0].url, "p4-a", a["payment"]["id"]),
                                    _pay(session, gw[1].url, "p4-b", b["payment"]["id"]))
        assert [s for s, _ in paid] == [200, 200]
        status, looked = await get(session, f"{gw[0].url}{_base('pay4')}/{group}", "p4-look")
        assert looked["group"]["status"] == "open"  # the third seat is still unpaid
        assert sorted(looked["group"]["members"]) == ["p4-a", "p4-b", "p4-lead"]
        assert [h["user"] for h in looked["group"]["held"]] == ["p4-hold"]

        async def released() -> dict[str, Any] | None:
            _, now = await get(session, f"{gw[1].url}{_base('pay4')}/{group}", "p4-look")
            return now if now["group"]["held"] == [] else None
        after = await _until(released, "the third seat's hold released")
        assert after["group"]["status"] == "open" and after["group"]["joined"] == 3
        # Its seat is free again: someone else takes it and completes the group.
        late = await _hold(session, gw[0].url, "pay4", "p4-d", group)
        status, done = await _pay(session, gw[0].url, "p4-d", late["payment"]["id"])
        assert status == 200 and done["group"]["status"] == "completed", done
        # The holder's payment was closed at its hold's end: the sandbox will not take it.
        status, body = await _pay(session, gw[1].url, "p4-hold", holder["payment"]["id"])
        assert status in (200, 409), body
        if status == 200:
            assert body["payment"]["status"] == "refunded"
    conn = await asyncpg.connect(database_url)
    try:
        await _until(lambda: _all_processed(conn), "the pipeline caught up")
        orders = await conn.fetch("SELECT user_id, confirmed_at FROM orders WHERE"
                                  " instance = $1 ORDER BY user_id", group)
        assert [r["user_id"] for r in orders] == ["p4-a", "p4-b", "p4-d", "p4-lead"]
        assert all(r["confirmed_at"] is not None for r in await conn.fetch(
            "SELECT confirmed_at FROM orders WHERE instance = $1", group))
        await _money_is_exact(conn)
    finally:
        await conn.close()


async def test_sigkill_of_the_owner_between_payment_and_confirmation_loses_no_payment(
        deployment: tuple[Stack, str]) -> None:
    """Payments made while the owner dies are confirmed (or given back), never lost: a
    notification that got no answer is taken again by the hold's reconciliation."""
    stack, database_url = deployment
    gw = stack.gateways
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        holds = []
        for n in range(20):
            group = await _paid_group(session, gw[n % 2].url, "paykill", f"pk-lead{n}")
            holds.append((n, group, (await _hold(session, gw[(n + 1) % 2].url, "paykill",
                                                 f"pk-m{n}", group))["payment"]))
        before = await _actor_pid(stack, "paykill")

        async def pay(n: int, payment: dict[str, Any]) -> int:
            if n == 10:
                os.kill(before, signal.SIGKILL)  # in the middle of the payments
            try:
                status, _ = await _pay(session, gw[n % 2].url, f"pk-m{n}", payment["id"])
            except aiohttp.ClientError:
                return 0
            return status

        statuses = await asyncio.gather(*(pay(n, p) for n, _, p in holds))
        assert all(s in (0, 200, 409, 503) for s in statuses), statuses
        # Payments the provider took while their owner was dead got no answer: only the
        # hold's reconciliation can seat them (what the rest of this test checks).
        assert any(s in (0, 503) for s in statuses), statuses
    conn = await asyncpg.connect(database_url)
    try:
        async def settled() -> bool:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM groups g, jsonb_array_elements(g.seats) s"
                " WHERE g.campaign = 'paykill' AND s->>4 IN ('held', 'checking')")
            return waiting == 0 and await _all_processed(conn)
        await _until(settled, "every payment confirmed or given back after the restart")
        assert await _actor_pid(stack, "paykill") != before
        for n, group, payment in holds:
            books = await conn.fetchval(
                "SELECT status FROM sandbox_payments WHERE payment_id = $1", payment["id"])
            row = await conn.fetchrow("SELECT status, members FROM groups WHERE id = $1", group)
            if books == "paid":  # money taken and kept: the member is in a completed deal
                assert row["status"] == "completed" and f"pk-m{n}" in row["members"], n
            elif books == "refunded":
                assert f"pk-m{n}" not in row["members"], n
            else:  # never paid (the pay call failed with the owner): no member, no money
                assert f"pk-m{n}" not in row["members"], (n, books)
        paid = await conn.fetchval("SELECT count(*) FROM sandbox_payments WHERE"
                                   " payment_id = ANY($1) AND status = 'paid'",
                                   [p["id"] for _, _, p in holds])
        assert paid >= 15, paid  # most paid despite the kill
        await _money_is_exact(conn)
    finally:
        await conn.close()


async def _all_processed(conn: asyncpg.Connection) -> bool:
    pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL")
    unsent = await conn.fetchval("SELECT count(*) FROM game_notices WHERE sent_at IS NULL")
    asked = await conn.fetchval(
        "SELECT count(*) FROM provider_refunds WHERE status = 'requested'")
    return bool(pending == 0 and unsent == 0 and asked == 0)


async def _money_is_exact(conn: asyncpg.Connection) -> None:
    """Every fen the sandbox took is in a live order or was given back, exactly: per
    user, taken − refunded at the provider = what their live orders hold, and our books
    (payments) agree with the provider's."""
    await _until(lambda: _all_processed(conn), "the pipeline caught up")
    provider = {r["payer"]: (r["taken"], r["back"]) for r in await conn.fetch(
        "SELECT payer, sum(amount) FILTER (WHERE status IN ('paid', 'refunded')) AS taken,"
        " sum(refunded) AS back FROM sandbox_payments GROUP BY payer")}
    kept = {r["user_id"]: r["sum"] for r in await conn.fetch(
        "SELECT user_id, sum(amount) FROM orders WHERE status = 'paid' GROUP BY 1")}
    ours = {r["user_id"]: (r["taken"], r["back"]) for r in await conn.fetch(
        "SELECT user_id, sum(amount) FILTER (WHERE kind = 'payment') AS taken,"
        " sum(amount) FILTER (WHERE kind = 'refund') AS back FROM payments GROUP BY 1")}
    for user, (taken, back) in provider.items():
        taken, back = taken or 0, back or 0
        assert taken - back == kept.get(user, 0), user
        assert (ours.get(user, (0, 0))[0] or 0, ours.get(user, (0, 0))[1] or 0) == (
            taken, back), user


async def test_the_sandbox_paying_at_once_seats_by_its_word_and_takes_nothing_for_a_refusal(
        stack: Stack, migrated: Services) -> None:
    # The shared stack's sandbox pays at once (the default): a join carries the sandbox's
    # verified notification of its payment, and its seat is taken and paid at once.
    url = stack.gateways[0].url + "/api/groupbuys/live/groups"
    async with aiohttp.ClientSession() as session:
        status, opened = await post(session, url, "pi-lead")
        assert status == 201 and opened["payment"]["status"] == "paid", opened
        assert opened["group"]["members"] == ["pi-lead"] and opened["group"]["held"] == []
        group = opened["group"]["id"]
        status, joined = await post(session, f"{url}/{group}/join", "pi-a", key="pi-k1")
        assert status == 200 and joined["group"]["members"] == ["pi-lead", "pi-a"], joined
        # The same key again: the same answer, one seat, one payment.
        assert await post(session, f"{url}/{group}/join", "pi-a", key="pi-k1") == (
            status, joined)
        # Refused (a second join under another key): nothing held, nothing taken.
        status, refused = await post(session, f"{url}/{group}/join", "pi-a", key="pi-other")
        assert (status, refused["error"]["code"]) == (409, "already_member"), refused
    conn = await asyncpg.connect(migrated.database_url)
    try:
        types = [r["type"] for r in await conn.fetch(
            "SELECT type FROM events WHERE stream = 'groupbuy:live' AND data->>'group' = $1"
            " ORDER BY version", group)]
        assert types == ["group_opened", "member_joined"]  # one event a paid seat
        await _until(lambda: _all_processed(conn), "the pipeline caught up")
        # The sandbox's books hold exactly the two payments, with their orders'.
        books = await conn.fetch("SELECT payment_id, payer, amount, status FROM"
                                 " sandbox_payments WHERE payer IN ('pi-lead', 'pi-a')")
        assert sorted((r["payer"], r["amount"], r["status"]) for r in books) == [
            ("pi-a", 6000, "paid"), ("pi-lead", 6000, "paid")]
        ours = await conn.fetch("SELECT payment_id FROM payments WHERE kind = 'payment'"
                                " AND user_id IN ('pi-lead', 'pi-a')")
        assert sorted(r["payment_id"] for r in ours) == sorted(r["payment_id"] for r in books)
        assert opened["payment"]["id"] in {r["payment_id"] for r in books}
    finally:
        await conn.close()
