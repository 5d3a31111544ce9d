"""Pay to join on real Postgres: held seats, the sandbox's signed notifications through
the server's payment desk, holds that lapse on a moved clock, orders made when money is
taken and confirmed with the deal, refunds of exactly what was paid."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest

from actors import retries
from actors.owner import Owner
from actors.paygate import Notification, PaymentError, PaymentRequest, PaymentStatus, now_ms
from actors.paysandbox import SandboxGateway
from actors.pipeline_worker import PipelineWorker
from actors.sandbox_books import SandboxBooks
from actors.sandbox_signer import SandboxSigner
from games import payments
from server.errors import ApiError
from server.outcomes import decoded
from server.paydesk import PayDesk
from storage import db
from storage.config import Config, parse
from tests.integration.conftest import Clock, Factory, cmd
from tests.support import configs, ledger
from tests.support.services import Services


@pytest.fixture(autouse=True)
async def sound_ledger(clean: Services) -> AsyncIterator[None]:
    """After each test: the ledger balances and agrees with its commissions, orders and
    withdrawals (tests.support.ledger)."""
    yield
    conn = await asyncpg.connect(clean.database_url)
    try:
        assert await ledger.problems(conn) == []
    finally:
        await conn.close()

HOLD_S = 60
PRICE = 6000


class OwnerClient:
    """What the desk calls (a ShardClient's `call`), straight to one owner."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner

    async def call(self, command: dict[str, Any]) -> str:
        [answer] = await self.owner.submit_json([command])
        return answer


def pay_config(svc: Services, pays: str = "on_request", **campaign: Any) -> Config:
    doc = configs.document([configs.campaign("c1", size=3, stock=10, pay=True,
                                             pay_within=HOLD_S, **campaign),
                            configs.bargain("b1", helpers=2, stock=2, pay_within=HOLD_S,
                                            pay_to_buy=True)],
                           shards=1, database_url=svc.database_url, redis_url=svc.redis_url)
    doc["pipeline"] = {"sandbox_pays": pays}
    return parse(doc, {}, "test")


class Shop:
    """An owner, the pipeline (notices to that owner) and the desk over the sandbox."""

    def __init__(self, config: Config, owner: Owner, worker: PipelineWorker,
                 desk: PayDesk, conn: asyncpg.Connection, clock: Clock) -> None:
        self.config, self.owner, self.worker, self.desk = config, owner, worker, desk
        self.conn, self.clock = conn, clock

    async def command(self, method: str, user: str, group: str | None = None,
                      key: str | None = None) -> dict[str, Any]:
        [answer] = await self.owner.submit([cmd(method, user, group=group,
                                                key=key or f"{method}-{user}-{group}")])
        assert answer["ok"], answer
        return decoded(await self.desk.settle(user, "c1", answer["result"]))

    async def pay(self, user: str, payment: str) -> dict[str, Any]:
        return await self.desk.sandbox_pay(user, payment)

    async def settle_everything(self) -> None:
        """The pipeline's work and the notices it owes the owner, until none are left.

        The worker's own sender runs beside this: a notice it wrote (a provider's answer)
        after this round's delivery looked is delivered by the next round, not left to be
        in flight as the test reads the owner's rows."""
        while True:
            await self.worker.drain()
            await self.worker.deliver_notices()
            await self.worker.send_refunds()
            await self.owner.flush()
            if not await self.conn.fetchval(
                    "SELECT (SELECT count(*) FROM outbox WHERE processed_at IS NULL)"
                    " + (SELECT count(*) FROM game_notices WHERE sent_at IS NULL)"):
                return


@contextlib.asynccontextmanager
async def open_shop(svc: Services, shard_factory: Factory, pays: str,
                    books: Callable[[asyncpg.Pool], Awaitable[SandboxBooks]] = SandboxBooks.open,
                    ) -> AsyncIterator[Shop]:
    """A shop whose sandbox pays `pays` ("on_request" or "immediate"), over `books`."""
    config = pay_config(svc, pays)
    clock = Clock()
    owner = await shard_factory(config, clock)
    pool = await db.create_pool(svc.database_url, min_size=1, max_size=2)
    provider = await books(pool)

    async def send(commands: list[dict[str, Any]]) -> list[str]:
        replies: list[str] = await owner.submit_json(commands)
        return replies

    # One clock for the owner and the pipeline: a test moves both at once.
    worker = PipelineWorker(config, svc.database_url, send=send, clock=clock)
    await worker.start()
    conn = await asyncpg.connect(svc.database_url)
    try:
        desk = PayDesk(config, provider, OwnerClient(owner), worker)  # type: ignore[arg-type]
        try:
            yield Shop(config, owner, worker, desk, conn, clock)
        finally:
            await desk.close()  # its signing processes, where it started them
    finally:
        await conn.close()
        await worker.stop()
        await pool.close()


@pytest.fixture
async def shop(clean: Services, shard_factory: Factory) -> AsyncIterator[Shop]:
    async with open_shop(clean, shard_factory, "on_request") as opened:
        yield opened


async def test_the_sandbox_paying_at_once_seats_through_its_verified_notification(
        clean: Services, shard_factory: Factory) -> None:
    # The desk's path for a paying command whose amount it cannot know before the
    # command (a bargain's purchase; here a group-buy's, sent as a bare command): the
    # seat held, then paid by the sandbox's notification (the gateway sends a group-buy's
    # with its word instead: tests/acceptance/test_payments.py).
    async with open_shop(clean, shard_factory, "immediate") as shop:
        opened = await shop.command("open", "alice")
        # The answer is the game's word on the payment: the caller a paid member.
        assert opened["payment"]["status"] == "paid"
        assert opened["group"]["members"] == ["alice"] and opened["group"]["held"] == []
        payment = opened["payment"]["id"]
        group = opened["group"]["id"]
        joined = await shop.command("join", "bob", group)
        assert joined["group"]["members"] == ["alice", "bob"]
        again = await shop.command("join", "bob", group)  # the same key again: one seat
        assert again["group"]["members"] == ["alice", "bob"]
        # The seat was held, then paid by the notification (the owner never seats a
        # payment it was not told of): the stream shows both, the provider's books the
        # payment paid once.
        types = [r["type"] for r in await shop.conn.fetch(
            "SELECT type FROM events WHERE data->>'group' = $1 ORDER BY version", group)]
        assert types == ["group_opened", "member_joined", "seat_held", "member_joined"]
        books = await shop.conn.fetch(
            "SELECT payer, amount, status, paid_at FROM sandbox_payments ORDER BY payer")
        assert [(r["payer"], r["amount"], r["status"]) for r in books] == [
            ("alice", PRICE, "paid"), ("bob", PRICE, "paid")]
        assert all(r["paid_at"] is not None for r in books)
        await shop.settle_everything()
        orders = await shop.conn.fetch("SELECT user_id, amount FROM orders ORDER BY id")
        assert [(r["user_id"], r["amount"]) for r in orders] == [("alice", PRICE),
                                                                 ("bob", PRICE)]
        # The pipeline's reconciliation finds the sandbox's books agreeing.
        state = await shop.desk.provider.query(payment)
        assert state.status is PaymentStatus.PAID and state.amount == PRICE
        await _balanced(shop.conn)


async def test_payments_paid_at_once_together_are_each_written_and_told_once(
        clean: Services) -> None:
    pool = await db.create_pool(clean.database_url, min_size=1, max_size=2)
    try:
        books = await SandboxBooks.open(pool)
        far = now_ms() + 60_000
        asked = [PaymentRequest(payment_id=payments.payment_id("c1", f"g{i}", f"u{i}", "1"),
                                user=f"u{i}", amount=100 + i, description="t", expires_at=far)
                 for i in range(20)]
        # Each asked twice at once (a join retried while its first try is in flight): the
        # writes of a batch share a statement, a repeat within it shares its row.
        asks = await asyncio.gather(*(books.pay_at_once(r) for r in asked + asked))
        signer = SandboxSigner(books.signer)
        try:
            told = await asyncio.gather(*(signer.render_paid(ask) for ask in asks))
        finally:
            await signer.close()
        for request, first, again in zip(asked, told[:20], told[20:], strict=True):
            one, two = (books.verify(h, b, now_ms()) for h, b in (first, again))
            assert (one.payment_id, one.amount, one.payer) == (
                request.payment_id, request.amount, request.user)
            assert one.status is PaymentStatus.PAID
            assert one.notification_id == two.notification_id  # a redelivery, not another
        rows = await pool.fetch("SELECT payment_id, payer, amount, status FROM sandbox_payments")
        assert sorted(tuple(r) for r in rows) == sorted(
            (r.payment_id, r.user, r.amount, "paid") for r in asked)
        # Another payer (or amount) for a payment id is refused; one whose time is up is
        # closed, in a batch with a sound one that is paid all the same.
        late = PaymentRequest(payment_id=payments.payment_id("c1", "g-late", "u", "1"),
                              user="u", amount=100, description="t", expires_at=now_ms() - 1)
        fresh = replace(late, payment_id=payments.payment_id("c1", "g-new", "u", "1"),
                        expires_at=far)
        outcomes = await asyncio.gather(
            books.pay_at_once(replace(asked[0], user="mallory")), books.pay_at_once(late),
            books.pay_at_once(fresh), return_exceptions=True)
        assert [o.code if isinstance(o, PaymentError) else "told" for o in outcomes] == [
            "OUT_TRADE_NO_USED", "ORDER_CLOSED", "told"]
        assert await pool.fetchval("SELECT status FROM sandbox_payments WHERE payment_id = $1",
                                   late.payment_id) == "closed"
    finally:
        await pool.close()


class Forging(SandboxBooks):
    """A sandbox whose notifications its verifier does not trust: signed with one key,
    checked against another (a provider key rotated, or a notification forged)."""

    async def _trusted(self) -> None:
        self.checker = SandboxGateway(api_v3_key=self.signer.api_v3_key)

    def verify(self, headers: Mapping[str, str], body: bytes, now: int) -> Notification:
        return self.checker.verify(headers, body, now)


async def _forging(pool: asyncpg.Pool) -> SandboxBooks:
    books = await SandboxBooks.open(pool)
    forging = Forging(pool, books.signer)
    await forging._trusted()
    return forging


async def test_paying_at_once_seats_no_one_on_a_notification_that_fails_verification(
        clean: Services, shard_factory: Factory) -> None:
    async with open_shop(clean, shard_factory, "immediate", _forging) as shop:
        with pytest.raises(ApiError) as refused:
            await shop.command("open", "alice")
        assert refused.value.code == "invalid_notification"
        row = await shop.conn.fetchrow("SELECT members, seats FROM groups")
        assert list(row["members"]) == []  # held, never seated: its hold's end asks
        assert [seat[4] for seat in json.loads(row["seats"])] == ["held"]  # its status


async def test_a_join_answers_a_pending_payment_with_what_the_client_pays_with(
        shop: Shop) -> None:
    opened = await shop.command("open", "alice")
    payment = opened["payment"]
    assert payment["status"] == "pending" and payment["amount"] == PRICE
    assert set(payment["params"]) == {"appId", "timeStamp", "nonceStr", "package",
                                      "signType", "paySign"}
    assert opened["group"]["members"] == [] and opened["group"]["held"][0]["user"] == "alice"
    paid = await shop.pay("alice", payment["id"])
    assert paid["payment"]["status"] == "paid" and paid["group"]["members"] == ["alice"]
    # Only its payer pays it; a payment no campaign made is no payment.
    with pytest.raises(ApiError) as other:
        await shop.pay("mallory", payment["id"])
    assert other.value.code == "forbidden"
    with pytest.raises(ApiError) as unknown:
        await shop.pay("alice", "f" * payments.ID_LENGTH)
    assert unknown.value.code == "not_found"


async def test_an_unpaid_hold_lapses_on_time_its_seat_is_taken_again_and_a_late_payment_is_refunded_once(  # noqa: E501
        shop: Shop) -> None:
    opened = await shop.command("open", "alice")
    await shop.pay("alice", opened["payment"]["id"])
    group = opened["group"]["id"]
    bob = (await shop.command("join", "bob", group))["payment"]
    await shop.pay("cat", (await shop.command("join", "cat", group))["payment"]["id"])
    # The group is full of two members and bob's held seat: dan cannot get in.
    [full] = await shop.owner.submit([cmd("join", "dan", group=group, key="dan-1")])
    assert full["error"]["code"] == "group_full"
    # One millisecond before the hold ends, nothing; at its end, the provider is asked.
    shop.clock.ms = _ms(bob["expires_at"]) - 1
    assert await shop.owner.expire_due() == 0
    shop.clock.ms += 1
    assert await shop.owner.expire_due() == 1
    await shop.settle_everything()
    row = await shop.conn.fetchrow("SELECT seats, members FROM groups WHERE id = $1", group)
    seats = {seat[1]: seat[4] for seat in json.loads(row["seats"])}
    assert seats[bob["id"]] == "released" and list(row["members"]) == ["alice", "cat"]
    # The seat is free again: dan takes it and pays, and the deal is done.
    dan = await shop.command("join", "dan", group, key="dan-2")
    done = await shop.pay("dan", dan["payment"]["id"])
    assert done["group"]["status"] == "completed"
    # Bob pays now, too late: his money goes back, once, however often he is told.
    late = await shop.pay("bob", bob["id"])
    assert late["payment"]["status"] == "refunded"
    again = await shop.pay("bob", bob["id"])
    assert again == late
    await shop.settle_everything()
    refunds = await shop.conn.fetch(
        "SELECT payment_id, amount, status FROM provider_refunds WHERE user_id = 'bob'")
    assert [(r["payment_id"], r["amount"], r["status"]) for r in refunds] == [
        (bob["id"], PRICE, "succeeded")]
    books = await shop.conn.fetchrow(
        "SELECT status, refunded FROM sandbox_payments WHERE payment_id = $1", bob["id"])
    assert (books["status"], books["refunded"]) == ("refunded", PRICE)
    # Bob has no order; the three members have one each, confirmed with the deal.
    orders = await shop.conn.fetch(
        "SELECT user_id, amount, status, confirmed_at FROM orders ORDER BY id")
    assert sorted(r["user_id"] for r in orders) == ["alice", "cat", "dan"]
    assert all(r["status"] == "paid" and r["confirmed_at"] is not None for r in orders)
    await _balanced(shop.conn)


async def test_orders_are_made_when_money_is_taken_and_confirmed_with_the_deal(
        shop: Shop) -> None:
    opened = await shop.command("open", "alice")
    await shop.pay("alice", opened["payment"]["id"])
    group = opened["group"]["id"]
    await shop.pay("bob", (await shop.command("join", "bob", group))["payment"]["id"])
    await shop.settle_everything()
    waiting = await shop.conn.fetch("SELECT user_id, confirmed_at FROM orders ORDER BY id")
    assert [(r["user_id"], r["confirmed_at"]) for r in waiting] == [("alice", None),
                                                                    ("bob", None)]
    # A waiting order is no one's to refund: the group's failure refunds it in full.
    order = await shop.conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    refused = json.loads(await shop.worker.refund("bob", order))
    assert refused["error"]["code"] == "order_waiting"
    # Nor a marketer's, after sales.
    after_sales = json.loads(await shop.worker.refund_after_sales("boss", order, 100, None,
                                                                  None))
    assert after_sales["error"]["code"] == "order_waiting"
    await shop.pay("cat", (await shop.command("join", "cat", group))["payment"]["id"])
    await shop.settle_everything()
    confirmed = await shop.conn.fetch("SELECT user_id, confirmed_at FROM orders ORDER BY id")
    assert [r["user_id"] for r in confirmed] == ["alice", "bob", "cat"]
    assert all(r["confirmed_at"] is not None for r in confirmed)
    # Replaying every outbox row makes nothing twice.
    await shop.conn.execute("UPDATE outbox SET processed_at = NULL")
    await shop.settle_everything()
    assert await shop.conn.fetchval("SELECT count(*) FROM orders") == 3
    assert await shop.conn.fetchval(
        "SELECT count(*) FROM payments WHERE kind = 'payment'") == 3
    await _balanced(shop.conn)


async def test_a_failed_group_refunds_each_paid_member_what_they_paid_exactly_once(
        shop: Shop) -> None:
    opened = await shop.command("open", "alice")
    await shop.pay("alice", opened["payment"]["id"])
    group = opened["group"]["id"]
    await shop.pay("bob", (await shop.command("join", "bob", group))["payment"]["id"])
    held = (await shop.command("join", "cat", group))["payment"]  # never paid
    shop.clock.ms = _ms(opened["group"]["expires_at"])
    await shop.owner.expire_due()
    await shop.settle_everything()
    await shop.conn.execute("UPDATE outbox SET processed_at = NULL")  # and replayed
    await shop.settle_everything()
    refunds = await shop.conn.fetch(
        "SELECT user_id, amount, status FROM provider_refunds ORDER BY user_id")
    assert [(r["user_id"], r["amount"], r["status"]) for r in refunds] == [
        ("alice", PRICE, "succeeded"), ("bob", PRICE, "succeeded")]
    orders = await shop.conn.fetch("SELECT user_id, status FROM orders ORDER BY user_id")
    assert [(r["user_id"], r["status"]) for r in orders] == [("alice", "refunded"),
                                                              ("bob", "refunded")]
    assert await shop.conn.fetchval("SELECT count(*) FROM commissions") == 0
    # Cat pays after the failure: returned at once, never an order.
    late = await shop.pay("cat", held["id"])
    assert late["payment"]["status"] == "refunded"
    await shop.settle_everything()
    assert await shop.conn.fetchval(
        "SELECT count(*) FROM provider_refunds WHERE user_id = 'cat'") == 1
    await _balanced(shop.conn)


async def test_forged_stale_replayed_and_reordered_notifications_change_nothing(
        shop: Shop) -> None:
    opened = await shop.command("open", "alice")
    payment = opened["payment"]["id"]
    books = shop.desk.provider
    assert isinstance(books, SandboxBooks)
    headers, body = books.signer.render_paid(await books.pay(payment))
    # A stranger's key signs the same body: refused.
    stranger = SandboxGateway(api_v3_key=books.signer.api_v3_key)
    forged_headers, _ = stranger.sign(body, _now())
    for bad_headers, bad_body in [
            (forged_headers, body),
            (headers, body.replace(b'"id"', b'"Id"', 1)),  # tampered after signing
            ({**headers, "Wechatpay-Timestamp": str(_now() // 1000 - 3600)}, body),
            (books.signer.sign(body, _now() - 3_600_000)[0], body),  # signed an hour ago
            ({}, body), (headers, b""), (headers, b"\xff\xfe")]:
        with pytest.raises(ApiError) as refused:
            await shop.desk.notify("sandbox", bad_headers, bad_body)
        assert refused.value.code == "invalid_notification"
    row = await shop.conn.fetchrow("SELECT members FROM groups")
    assert list(row["members"]) == []  # nothing believed
    with pytest.raises(ApiError) as wrong:
        await shop.desk.notify("wechatpay", headers, body)
    assert wrong.value.code == "not_found"
    # A refund's notification before the payment's (out of order): nothing to do.
    refund_headers, refund_body = books.signer.render(
        payment, PaymentStatus.REFUNDED, PRICE, now=_now(), at=_now(),
        refund_id=f"r{payment}")
    assert await shop.desk.notify("sandbox", refund_headers, refund_body) == {}
    first = await shop.desk.notify("sandbox", headers, body)
    assert first["group"]["members"] == ["alice"]
    for _ in range(3):  # the provider redelivers until told SUCCESS
        assert await shop.desk.notify("sandbox", headers, body) == first
    await shop.settle_everything()
    assert await shop.conn.fetchval("SELECT count(*) FROM orders") == 1
    assert await shop.conn.fetchval("SELECT count(*) FROM provider_refunds") == 0
    # Money for a payment of the campaign that its game does not hold (a campaign let go
    # of after its end): it goes back whole, once, however often it is told.
    orphan = payments.payment_id("c1", "gone", "alice", "1")
    for _ in range(2):
        told = await shop.desk.notify("sandbox", *books.signer.render(
            orphan, PaymentStatus.PAID, PRICE, now=_now(), at=_now(), payer="alice"))
        assert told == {}
    refunds = await shop.conn.fetch("SELECT payment_id, amount FROM provider_refunds")
    assert [(r["payment_id"], r["amount"]) for r in refunds] == [(orphan, PRICE)]
    # Our books record it taken and given back; a payment that bought a seat never is.
    kinds = await shop.conn.fetch("SELECT kind, amount FROM payments WHERE payment_id = $1"
                                  " ORDER BY kind", orphan)
    assert [(r["kind"], r["amount"]) for r in kinds] == [("payment", PRICE),
                                                          ("refund", PRICE)]
    given = json.loads(await shop.worker.give_back("c1", payment, "alice", PRICE))
    assert given["result"] == {"given_back": False}
    await _balanced(shop.conn)


async def _balanced(conn: asyncpg.Connection) -> None:
    """Money in equals money kept plus money back: per user, what was taken minus what was
    refunded is what their live (paid, not refunded) orders hold, less their pieces
    refunded."""
    taken = {r["user_id"]: r["sum"] for r in await conn.fetch(
        "SELECT user_id, sum(amount) FROM payments WHERE kind = 'payment' GROUP BY 1")}
    back = {r["user_id"]: r["sum"] for r in await conn.fetch(
        "SELECT user_id, sum(amount) FROM payments WHERE kind = 'refund' GROUP BY 1")}
    kept = {r["user_id"]: r["sum"] for r in await conn.fetch(
        "SELECT user_id, sum(amount - refunded_amount) FROM orders WHERE status = 'paid'"
        " GROUP BY 1")}
    for user in set(taken) | set(back):
        assert taken.get(user, 0) - back.get(user, 0) == kept.get(user, 0), user
    asked = await conn.fetchval("SELECT coalesce(sum(amount), 0) FROM provider_refunds")
    assert asked == sum(back.values())


async def test_twenty_concurrent_partial_refunds_ask_the_provider_for_exactly_what_was_refunded(
        shop: Shop) -> None:
    assert json.loads(await shop.worker.bind("bob", "alice"))["ok"]
    opened = await shop.command("open", "alice")
    await shop.pay("alice", opened["payment"]["id"])
    group = opened["group"]["id"]
    bob = (await shop.command("join", "bob", group))["payment"]
    await shop.pay("bob", bob["id"])
    await shop.pay("cat", (await shop.command("join", "cat", group))["payment"]["id"])
    await shop.settle_everything()
    order = await shop.conn.fetchval("SELECT id FROM orders WHERE user_id = 'bob'")
    # 20 pieces of 700 fen at once, through the worker, of a 6000-fen order: 8 fit.
    racing = [json.loads(a) for a in await asyncio.gather(*(
        shop.worker.refund("bob", order, 700, f"piece-{n}") for n in range(20)))]
    assert sorted(a["ok"] for a in racing) == [False] * 12 + [True] * 8
    rest = json.loads(await shop.worker.refund("bob", order))["result"]["order"]
    assert (rest["status"], rest["refunded_amount"]) == ("refunded", PRICE)
    await shop.settle_everything()
    # Each piece its own refund of bob's one payment, ids derived from it and the piece.
    asked = await shop.conn.fetch(
        "SELECT refund_id, amount, total, status FROM provider_refunds ORDER BY created_at,"
        " refund_id")
    assert sorted(r["refund_id"] for r in asked) == sorted(
        [f"r{bob['id']}"] + [f"r{bob['id']}-{n}" for n in range(2, 10)])
    assert sorted(r["amount"] for r in asked) == [400] + [700] * 8
    assert {(r["total"], r["status"]) for r in asked} == {(PRICE, "succeeded")}
    books = await shop.conn.fetchrow(
        "SELECT status, refunded FROM sandbox_payments WHERE payment_id = $1", bob["id"])
    assert (books["status"], books["refunded"]) == ("refunded", PRICE)
    assert await shop.conn.fetchval(
        "SELECT sum(reversed) = sum(amount) FROM commissions WHERE buyer = 'bob'")
    # Replaying every outbox row, twice, asks for nothing more and changes nothing.
    before = [tuple(r) for r in await shop.conn.fetch(
        "SELECT refund_id, amount FROM provider_refunds ORDER BY refund_id")]
    for _ in range(2):
        await shop.conn.execute("UPDATE outbox SET processed_at = NULL")
        await shop.settle_everything()
    assert [tuple(r) for r in await shop.conn.fetch(
        "SELECT refund_id, amount FROM provider_refunds ORDER BY refund_id")] == before
    await _balanced(shop.conn)


def _now() -> int:
    return now_ms()


def _ms(iso_time: str) -> int:
    return int(datetime.fromisoformat(iso_time).timestamp() * 1000)


def _bcmd(method: str, user: str, bargain: str | None = None, key: str | None = None
          ) -> dict[str, Any]:
    return {"method": f"bargain.{method}", "campaign": "b1", "user": user,
            "key": key or f"{method}-{user}-{bargain}",
            "params": {} if bargain is None else {"bargain": bargain}}


async def test_a_bargains_purchase_is_paid_through_the_provider_or_released(
        shop: Shop) -> None:
    owner = shop.owner

    async def floor(initiator: str) -> str:
        [started] = await owner.submit([_bcmd("start", initiator)])
        bargain: str = started["result"]["bargain"]["id"]
        for helper in ("h1", "h2"):
            [helped] = await owner.submit([_bcmd("help", f"{initiator}-{helper}", bargain)])
            assert helped["ok"], helped
        return bargain

    bought = await floor("ann")
    [held] = await owner.submit([_bcmd("buy", "ann", bought)])
    answer = await shop.desk.settle("ann", "b1", held["result"])
    assert isinstance(answer, dict)
    assert answer["payment"]["status"] == "pending" and "params" in answer["payment"]
    assert answer["order"]["status"] == "pending"
    paid = await shop.pay("ann", answer["payment"]["id"])
    assert paid["bargain"]["status"] == "bought" and paid["payment"]["status"] == "paid"
    # A second bargain's purchase is never paid: its hold ends, the provider is asked,
    # and it goes; the bargain then expires (its floor's hold ended with it).
    unpaid = await floor("bob")
    [held] = await owner.submit([_bcmd("buy", "bob", unpaid)])
    settled = await shop.desk.settle("bob", "b1", held["result"])
    assert isinstance(settled, dict)
    pending = settled["payment"]
    shop.clock.ms = _ms(pending["expires_at"])
    await owner.expire_due()
    await shop.settle_everything()
    row = await shop.conn.fetchrow("SELECT status, purchases FROM bargains WHERE id = $1",
                                   unpaid)
    assert row["status"] == "expired"
    assert [p[4] for p in json.loads(row["purchases"])] == ["released"]
    late = await shop.pay("bob", pending["id"])
    assert late["payment"]["status"] == "refunded"
    await shop.settle_everything()
    orders = await shop.conn.fetch("SELECT user_id, kind, amount, confirmed_at FROM orders"
                                   " WHERE kind = 'bargain'")
    assert [(r["user_id"], r["confirmed_at"] is not None) for r in orders] == [("ann", True)]
    refunds = await shop.conn.fetch("SELECT user_id, amount FROM provider_refunds")
    assert [(r["user_id"], r["amount"]) for r in refunds] == [("bob", pending["amount"])]
    await _balanced(shop.conn)


async def test_wechat_pay_notifications_seat_once_and_forgeries_change_nothing(
        clean: Services, shard_factory: Factory) -> None:
    """The same desk over the WeChat Pay v3 gateway (its requests answered by recorded
    shapes, its notifications signed with a platform key the test made)."""
    from tests.unit import test_paygate as wx

    config = pay_config(clean)
    owner = await shard_factory(config, Clock())
    fake = wx.FakeWechat()
    gateway = wx.gateway(fake)  # its requests and the fake's answers on 2018's clock
    pool = await db.create_pool(clean.database_url, min_size=1, max_size=1)

    async def send(commands: list[dict[str, Any]]) -> list[str]:
        replies: list[str] = await owner.submit_json(commands)
        return replies

    worker = PipelineWorker(config, clean.database_url, send=send)
    await worker.start()
    desk = PayDesk(config, gateway, OwnerClient(owner), worker)  # type: ignore[arg-type]
    [opened] = await owner.submit([cmd("open", "alice", key="wx-open")])
    fake.answer(200, {"prepay_id": "wx201410272009395522657a690389285100"})
    answer = await desk.settle("alice", "c1", opened["result"])
    assert isinstance(answer, dict)
    payment = answer["payment"]
    assert payment["params"]["package"] == "prepay_id=wx201410272009395522657a690389285100"
    method, url, _, body = fake.requests[-1]
    assert method == "POST" and url.endswith("/v3/pay/transactions/jsapi")
    assert json.loads(body)["out_trade_no"] == payment["id"]

    def notification(*, amount: int = PRICE, at: int | None = None,
                     key: Any = wx.PLATFORM, event_id: str = "EV-1") -> tuple[
                         dict[str, str], bytes]:
        resource = {**wx.TRANSACTION, "out_trade_no": payment["id"],
                    "amount": {"total": amount, "payer_total": amount, "currency": "CNY",
                               "payer_currency": "CNY"}}
        body = wx.envelope(resource, notification_id=event_id)
        return wx.signed(body, timestamp=(at or now_ms()) // 1000, key=key), body

    for headers, body in [notification(key=wx.STRANGER),  # not the platform's key
                          notification(at=now_ms() - 3_600_000),  # an hour old
                          (notification()[0], notification(event_id="EV-2")[1])]:
        with pytest.raises(ApiError) as refused:
            await desk.notify("wechatpay", headers, body)
        assert refused.value.code == "invalid_notification"
    headers, body = notification()
    first = await desk.notify("wechatpay", headers, body)
    assert first["group"]["members"] == ["alice"] and first["payment"]["status"] == "paid"
    assert await desk.notify("wechatpay", headers, body) == first  # redelivered
    # Another notification of the same payment (a new id: WeChat resent it as new):
    # the game takes a payment once.
    again = await desk.notify("wechatpay", *notification(event_id="EV-3"))
    assert again["group"]["members"] == ["alice"]
    [looked] = await owner.submit([cmd("join", "bob", group=first["group"]["id"],
                                       key="wx-bob")])
    assert looked["ok"] and looked["result"]["payment"]["status"] == "pending"
    # WeChat accepts a refund as processing and tells how it ended in a notification.
    try:
        await pool.execute(
            "INSERT INTO provider_refunds (refund_id, payment_id, user_id, amount, total,"
            " status) VALUES ($1, $2, 'alice', $3, $3, 'processing')",
            f"r{payment['id']}", payment["id"], PRICE)
        refund = {**wx.REFUND, "out_trade_no": payment["id"],
                  "out_refund_no": f"r{payment['id']}",
                  "amount": {"total": PRICE, "refund": PRICE, "payer_total": PRICE,
                             "payer_refund": PRICE}}
        body = wx.envelope(refund, event="REFUND.SUCCESS", original="refund", aad="refund",
                           notification_id="EV-R1")
        assert await desk.notify("wechatpay", wx.signed(body, timestamp=now_ms() // 1000),
                                 body) == {}
        assert await pool.fetchval("SELECT status FROM provider_refunds") == "succeeded"
    finally:
        await worker.stop()
        await pool.close()


class Outage:
    """The provider down: its queries and refunds fail until `up` is set."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.up = False
        self.name = provider.name

    async def query(self, payment: str) -> Any:
        if not self.up:
            raise OSError("provider unreachable")
        return await self.provider.query(payment)

    async def refund(self, request: Any) -> Any:
        if not self.up:
            raise OSError("provider unreachable")
        return await self.provider.refund(request)

    async def create(self, request: Any) -> Any:
        if not self.up:
            raise OSError("provider unreachable")
        return await self.provider.create(request)


async def test_a_provider_that_cannot_create_the_payment_is_a_payment_failed_to_retry(
        shop: Shop) -> None:
    outage = Outage(shop.desk.provider)
    desk = PayDesk(shop.config, outage, OwnerClient(shop.owner), shop.worker)  # type: ignore[arg-type]
    [opened] = await shop.owner.submit([cmd("open", "alice", key="fail-1")])
    with pytest.raises(ApiError) as failed:
        await desk.settle("alice", "c1", opened["result"])
    assert failed.value.code == "payment_failed" and failed.value.status == 502
    outage.up = True  # the client retries with its key: the same payment, created now
    [again] = await shop.owner.submit([cmd("open", "alice", key="fail-1")])
    answer = await desk.settle("alice", "c1", again["result"])
    assert isinstance(answer, dict)
    assert answer["payment"]["id"] == opened["result"]["payment"]["id"]
    assert "params" in answer["payment"]


async def test_a_provider_outage_holds_up_no_order_and_is_waited_out(shop: Shop) -> None:
    outage = Outage(shop.desk.provider)
    shop.worker._gateway = outage  # type: ignore[assignment]
    # A hold lapses while the provider is down: the question waits, the outbox does not.
    opened = await shop.command("open", "alice")
    await shop.pay("alice", opened["payment"]["id"])
    group = opened["group"]["id"]
    bob = (await shop.command("join", "bob", group))["payment"]
    shop.clock.ms = _ms(bob["expires_at"])
    await shop.owner.expire_due()
    await shop.settle_everything()
    check = await shop.conn.fetchrow("SELECT attempts, answered_at, next_attempt_at > $1"
                                     " AS later FROM provider_checks", shop.clock.now())
    assert check["attempts"] >= 1 and check["answered_at"] is None and check["later"]
    pause = timedelta(seconds=retries.pause(check["attempts"]))
    row = await shop.conn.fetchrow("SELECT seats FROM groups WHERE id = $1", group)
    assert [s[4] for s in json.loads(row["seats"])] == ["paid", "checking"]
    # Meanwhile another group completes: its orders are made and confirmed.
    other = await shop.command("open", "cat", key="o2")
    await shop.pay("cat", other["payment"]["id"])
    for user in ("dan", "eve"):
        joined = await shop.command("join", user, other["group"]["id"])
        await shop.pay(user, joined["payment"]["id"])
    await shop.settle_everything()
    confirmed = await shop.conn.fetchval(
        "SELECT count(*) FROM orders WHERE instance = $1 AND confirmed_at IS NOT NULL",
        other["group"]["id"])
    assert confirmed == 3
    # The provider is back: the question is asked again once due, and the seat goes.
    outage.up = True
    shop.clock.advance(pause - timedelta(milliseconds=1))
    assert await shop.worker.send_refunds() == 0  # a moment before it is due: not asked
    shop.clock.advance(timedelta(milliseconds=1))
    await shop.settle_everything()
    await shop.worker.send_refunds()
    await shop.owner.flush()
    row = await shop.conn.fetchrow("SELECT seats FROM groups WHERE id = $1", group)
    assert [s[4] for s in json.loads(row["seats"])] == ["paid", "released"]


async def test_refunds_during_an_outage_wait_and_go_once_it_ends(shop: Shop) -> None:
    outage = Outage(shop.desk.provider)
    shop.worker._gateway = outage  # type: ignore[assignment]
    opened = await shop.command("open", "alice")
    await shop.pay("alice", opened["payment"]["id"])
    shop.clock.ms = _ms(opened["group"]["expires_at"])
    await shop.owner.expire_due()  # fails: alice is refunded
    await shop.settle_everything()
    row = await shop.conn.fetchrow("SELECT status, attempts, next_attempt_at > $1 AS later"
                                   " FROM provider_refunds", shop.clock.now())
    assert row["status"] == "requested" and row["attempts"] >= 1 and row["later"]
    assert await shop.worker.send_refunds() == 0  # not due yet: not asked again at once
    outage.up = True
    pause = timedelta(seconds=retries.pause(row["attempts"]))
    shop.clock.advance(pause - timedelta(milliseconds=1))
    assert await shop.worker.send_refunds() == 0  # a moment before it is due
    shop.clock.advance(timedelta(milliseconds=1))  # due on the pipeline's clock
    assert await shop.worker.send_refunds() >= 1
    row = await shop.conn.fetchrow("SELECT status FROM provider_refunds")
    assert row["status"] == "succeeded"
    books = await shop.conn.fetchval("SELECT refunded FROM sandbox_payments")
    assert books == PRICE
