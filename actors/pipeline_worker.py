"""The pipeline: outbox rows become orders, payments, refunds and commissions, once.

Each batch is one transaction: lock pending outbox rows (SKIP LOCKED, so two workers
never take the same row), write their effects, mark them processed. Effects are keyed by
(campaign, instance, line) with unique constraints, so replaying a processed row (an
operator resetting the outbox, a crash between commit and ack) creates nothing twice.

The pipeline is also the one writer of the commission ledger: it settles commissions
when their return window ends (a timer armed for the earliest, not a scan on a cron),
refunds orders inside the window, and binds referrals. What changed for a user is
published on their `user:` topic after the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from actors import answers, backoff, commissions, notices, paygates, refunds, waits, withdrawals
from actors import checks as provider_checks
from actors.answers import Answer
from actors.commissions import FreshOrder
from actors.paygate import PaymentGateway
from actors.payments import Movement, adapter
from actors.sandbox_books import SandboxBooks
from games.topics import user_topic
from storage import db, ledger, reads
from storage.clock import Clock, moment, to_ms, wall
from storage.config import Config
from storage.events import OUTBOX_CHANNEL
from storage.live import Live, LiveEvent

log = logging.getLogger("fission.pipeline")


class PipelineWorker:
    """Drains the outbox whenever a commit notifies it, and on a slow poll as a fallback."""

    def __init__(self, config: Config, database_url: str, redis_url: str | None = None,
                 *, clock: Clock = wall, send: notices.Send | None = None) -> None:
        self.config = config
        # Every time the pipeline decides by (orders confirmed and refunded, settlement
        # due, bindings, tax years, grade months, retries due) is this clock's, passed to
        # SQL as a parameter: a test moving one MovableClock moves the owners' and ours.
        # How notices reach games' owners (actors.notices); None: they wait in Postgres.
        self._send = send
        self._database_url = database_url
        self._redis_url = redis_url
        self._clock = clock
        self._payments = adapter(config.pipeline.payment_adapter)
        self._wake = asyncio.Event()
        self._owing = asyncio.Event()  # the drain did work: something may be owed
        self._sender: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._next_due: datetime | None = None
        # One settlement batch at a time in this worker: a test's `settle` after moving the
        # clock then finds the timer's batch committed, not skipped over as locked.
        self._settling = asyncio.Lock()
        self.processed_total = 0
        self.orders_total = 0
        self.refunds_total = 0
        self.commissions_total = 0
        self.settled_total = 0
        self.last_lag_ms = 0.0

    async def start(self, *, retry: bool = False) -> None:
        """Connect, listen for commits, start draining (with `retry`, wait for Postgres)."""
        await backoff.until_started(self._connect, self._close_connections, retry=retry,
                                    what="pipeline", errors=(OSError, asyncpg.PostgresError))
        # If the LISTEN connection is lost later, the poll still drains the outbox.
        self._task = asyncio.create_task(self._run())
        # What the drained rows owe others (games' notices, the provider's refunds and
        # questions) goes out beside the drain, not once the outbox is empty: under a
        # steady stream of deals it never is.
        self._sender = asyncio.create_task(self._send_loop())

    async def _connect(self) -> None:
        self._pool = await db.create_pool(self._database_url, min_size=1, max_size=4)
        self._listener = await db.connect(self._database_url)
        await self._listener.add_listener(OUTBOX_CHANNEL, self._notified)
        if self._redis_url is not None:
            cfg = self.config.server
            self._live = Live(aioredis.from_url(self._redis_url), cfg.history_size,
                              cfg.history_ttl_seconds)
        async with self._pool.acquire() as conn:
            self._next_due = await ledger.next_due(conn)
        self._gateway: PaymentGateway = await paygates.open_gateway(self.config, self._pool)

    async def _close_connections(self) -> None:
        for name in ("_listener", "_pool"):
            resource = getattr(self, name, None)
            if resource is not None:
                with contextlib.suppress(Exception):
                    await resource.close()
            setattr(self, name, None)
        if self._live is not None:
            with contextlib.suppress(Exception):
                await self._live.client.aclose()
            self._live = None

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop draining and sending, finish publishing, close connections."""
        for task in (self._task, self._sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.published()
        await self._close_connections()

    async def _run(self) -> None:
        interval = self.config.pipeline.poll_interval_ms / 1000
        while True:
            failed = False
            try:
                await self.catch_up()
            except Exception:
                log.exception("pipeline batch failed; retrying")
                failed = True
            # Sleep until woken by a commit, the next commission falls due, or the poll
            # (a whole poll after a failure: a due commission must not spin the loop).
            timeout = interval
            if self._next_due is not None and not failed:
                until_due = (self._next_due - self.now()).total_seconds()
                timeout = min(interval, max(0.0, until_due))
            await waits.wait_set(self._wake, timeout)
            self._wake.clear()

    async def catch_up(self) -> None:
        """Process the outbox until it is empty and settle what is due, a batch of
        settlements at a time with the outbox emptied again between two: a deal waits
        behind at most one batch of settlements, however many fall due at once (a
        settlement is days late by design; a deal's orders are awaited now)."""
        while True:
            while await self.drain_once() > 0:
                self._owing.set()
            settled = await self.settle_once()
            self._owing.set()
            if settled == 0:
                break

    async def _send_loop(self) -> None:
        """Deliver notices and ask the provider for refunds and checks whenever the drain
        has done work (and on the poll), beside it."""
        interval = self.config.pipeline.poll_interval_ms / 1000
        while True:
            await waits.wait_set(self._owing, interval)
            self._owing.clear()
            try:
                await self.deliver_notices()
                await self.send_refunds()
            except Exception:
                log.exception("sending what the pipeline owes failed; retrying")

    async def _transaction(self, work: Callable[[asyncpg.Connection],
                                                  Awaitable[tuple[Any, list[LiveEvent]]]]) -> Any:
        """Run `work` in one transaction; publish its live events once it has committed."""
        async with self._pool.acquire() as conn, conn.transaction():
            result, live = await work(conn)
        if live and self._live is not None:
            # Published in commit order, but off the drain's path: the next batch's
            # statements run while Redis takes this one's frames.
            self._publishing = asyncio.create_task(
                self._publish(self._publishing, self._live, live))
        return result

    @staticmethod
    async def _publish(before: asyncio.Task[None] | None, live: Live,
                       events: list[LiveEvent]) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        try:
            await live.publish(events)
        except Exception:  # the ledger is durable; a lost frame is a lost nudge
            log.exception("publishing %d pipeline events failed", len(events))

    async def published(self) -> None:
        """Wait until every committed change's events have been published."""
        if self._publishing is not None:
            await self._publishing

    async def drain_once(self, *, wait: bool = False) -> int:
        """Process one batch of pending outbox rows; how many it processed.

        Rows another transaction holds are skipped, or with `wait` waited for (then found
        processed, or processed here): a caller that must see everything pending now
        done, whoever does it, waits.
        """
        rows: list[asyncpg.Record] = await self._transaction(
            lambda conn: self._drain(conn, wait))
        if rows:
            self.processed_total += len(rows)
            newest = max(r["created_at"] for r in rows).timestamp()
            self.last_lag_ms = max(0.0, (time.time() - newest) * 1000)
        return len(rows)

    async def drain(self) -> int:
        """Process everything pending now, waiting for rows in another's hands; how many."""
        total = 0
        while (n := await self.drain_once(wait=True)) > 0:
            total += n
        await self.published()
        return total

    async def _drain(self, conn: asyncpg.Connection, wait: bool
                     ) -> tuple[list[asyncpg.Record], list[LiveEvent]]:
        rows = await conn.fetch(
            "SELECT id, type, data, created_at FROM outbox WHERE processed_at IS NULL"
            f" ORDER BY id LIMIT $1 FOR UPDATE{'' if wait else ' SKIP LOCKED'}",
            self.config.pipeline.batch_size,
        )
        if not rows:
            return rows, []
        live = await self._handle(conn, [(r["type"], r["data"]) for r in rows], self.now())
        await conn.execute(
            # The database's clock at the end of the work (not the transaction's start),
            # so processed_at - created_at (the owner's outbox row, also the database's
            # clock) is the whole deal-to-ledger lag: a metric, never a business time.
            "UPDATE outbox SET processed_at = clock_timestamp() WHERE id = ANY($1::bigint[])",
            [r["id"] for r in rows],
        )
        return rows, live

    def now(self) -> datetime:
        """The pipeline's clock's time."""
        return moment(self._clock)

    async def deliver_notices(self) -> int:
        """Send what games are owed about orders (see actors.notices); how many taken."""
        if self._send is None:
            return 0
        total = 0
        while (taken := await notices.deliver(self._pool, self._send)) > 0:
            total += taken
        return total

    async def send_refunds(self) -> int:
        """Ask the provider for the refunds decided so far (see actors.refunds), and
        about the lapsed holds (actors.checks); how many it answered."""
        total = 0
        while (sent := await refunds.dispatch(self._pool, self._gateway, self.now())) > 0:
            total += sent
        while (asked := await provider_checks.dispatch(self._pool, self._gateway,
                                                       self.config, self.now())) > 0:
            total += asked
        if asked or total:
            await self.deliver_notices()  # the answers go to their games at once
        return total

    async def settle_once(self, now: datetime | None = None) -> int:
        """Settle one batch of commissions due by `now`; how many.

        Without `now`, the pipeline clock's time, and only when the earliest known due
        time has come (the timer's path: no query while nothing is due). A test that
        moved the clock calls `settle` (or this) instead of waiting for the timer.
        """
        at = self.now() if now is None else now
        if now is None and (self._next_due is None or self._next_due > at):
            return 0

        async def work(conn: asyncpg.Connection) -> tuple[int, list[LiveEvent]]:
            settled, live = await commissions.settle(conn, at,
                                                     self.config.pipeline.batch_size,
                                                     self.config.commission)
            self._next_due = await ledger.next_due(conn)
            return len(settled), live

        async with self._settling:
            count: int = await self._transaction(work)
        self.settled_total += count
        return count

    async def settle(self) -> int:
        """Settle everything due by the pipeline clock's time now (the timer's work, done
        at once: a test that moved the clock calls this); how many."""
        total = 0
        while (n := await self.settle_once()) > 0:
            total += n
        await self.published()
        return total

    async def bind(self, user: str, referrer: str) -> Answer:
        """Bind `user` to `referrer` as the binding mode allows, at the pipeline's clock
        (see `actors.commissions.bind`)."""
        policy = self.config.commission.binding
        return await self._answer(lambda conn: commissions.bind(conn, user, referrer,
                                                                policy, self.now))

    async def distributor(self, user: str, action: str, actor: str) -> Answer:
        """Apply for, approve or revoke `user`'s distributor status (see
        `actors.commissions.distributor`)."""
        return await self._answer(lambda conn: commissions.distributor(conn, user, action,
                                                                       actor, self.now()))

    async def refund(self, user: str, order_id: int, amount: int | None = None,
                     key: str | None = None) -> Answer:
        """Refund `amount` fen (None: the rest) of `user`'s order inside its return window
        (see `actors.commissions.refund`); `key` makes a repeat answer the first."""
        return await self._refund(user, order_id, amount, key, False, None)

    async def refund_after_sales(self, marketer: str, order_id: int, amount: int | None,
                                 key: str | None, note: str | None) -> Answer:
        """A marketer refunds `amount` fen (None: the rest) of any confirmed order, after
        its commission settled too (what available lacks becomes the earner's debt)."""
        return await self._refund(marketer, order_id, amount, key, True, note)

    async def _refund(self, user: str, order_id: int, amount: int | None, key: str | None,
                      after_sales: bool, note: str | None) -> Answer:
        async def work(conn: asyncpg.Connection) -> tuple[Answer, list[LiveEvent]]:
            answer, live = await commissions.refund(
                conn, self._payments, user, order_id, self.config.commission, self.now(),
                amount=amount, key=key, after_sales=after_sales, note=note)
            if live:  # refunded by this call (a repeat changes nothing and tells nobody)
                order = await conn.fetchrow(
                    "SELECT user_id, amount, created_at, status FROM orders WHERE id = $1",
                    order_id)
                # Games hear of the whole refund (a lottery takes back the draw the order
                # earned only then; a board all the order still scores) and of each piece
                # before it (a board ranking sales or commission takes that much back).
                if order["status"] == "refunded":
                    await notices.write(conn, self.config, notices.REFUNDED, [
                        (order_id, order["user_id"], order["amount"], order["created_at"])])
                else:
                    piece = await conn.fetchval(
                        "SELECT max(piece) FROM order_refunds WHERE order_id = $1", order_id)
                    await notices.write_part(conn, self.config, order_id, order["user_id"],
                                             order["amount"], order["created_at"], piece)
            return answer, live

        answer = await self._answer(work)
        self._wake.set()  # its notices and the provider's refund go out from the loops
        return answer

    async def give_back(self, campaign: str, payment: str, payer: str, amount: int
                        ) -> Answer:
        """Money the provider took for `payment`, which its game no longer holds (a
        campaign let go of after its end): given back whole, once, unless our books
        already hold it (a redelivery of a payment that bought something)."""
        async def work(conn: asyncpg.Connection) -> tuple[Answer, list[LiveEvent]]:
            if await conn.fetchval("SELECT 1 FROM payments WHERE kind = 'payment'"
                                   " AND payment_id = $1", payment):
                return answers.ok({"given_back": False}), []
            taken = Movement("payment", campaign, "released", payment, payer, amount,
                             payment)
            await self._payments.record(conn, [taken, Movement(
                "refund", campaign, "released", payment, payer, amount, payment)])
            await refunds.request(conn, [refunds.Wanted(payment, payer, amount, amount)],
                                  self.now())
            log.error("payment %s (%d fen) named nothing its game holds: refunded",
                      payment, amount)
            return answers.ok({"given_back": True}), []

        answer = await self._answer(work)
        self._wake.set()  # the refund goes out from the drain loop
        return answer

    async def refund_outcome(self, refund_id: str, status: str) -> Answer:
        """How the provider says a refund ended (`succeeded`, `closed`, `abnormal`):
        recorded, moving its status only forward."""
        async def work(conn: asyncpg.Connection) -> tuple[Answer, list[LiveEvent]]:
            if status == "abnormal":
                log.error("refund %s is abnormal at the provider: an operator must act",
                          refund_id)
            await conn.execute(
                "UPDATE provider_refunds SET status = $2, updated_at = now()"
                " WHERE refund_id = $1 AND status IN ('requested', 'processing')",
                refund_id, status)
            return answers.ok({}), []
        return await self._answer(work)

    async def withdraw(self, user: str, key: str, amount: int) -> Answer:
        """`user` withdraws `amount` fen of settled commission (see actors.withdrawals)."""
        return await self._answer(lambda conn: withdrawals.request(
            conn, self._payments, user, key, amount, self.config.commission.withdrawals,
            self.now()))

    async def review(self, reviewer: str, withdrawal_id: int, approve: bool,
                     note: str | None) -> Answer:
        """A marketer pays or rejects a withdrawal waiting for review."""
        return await self._answer(lambda conn: withdrawals.review(
            conn, self._payments, reviewer, withdrawal_id, approve, note, self.now()))

    async def _answer(self, work: Callable[[asyncpg.Connection],
                                           Awaitable[tuple[Answer, list[LiveEvent]]]]) -> Answer:
        try:
            answer: Answer = await self._transaction(work)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("pipeline command failed: %r", exc)
            return answers.unavailable("the order service is unavailable; try again")
        return answer

    async def _handle(self, conn: asyncpg.Connection, items: list[tuple[str, dict[str, Any]]],
                      now: datetime) -> list[LiveEvent]:
        """The effects of a batch of outbox rows, set-based: a few statements per batch.

        Kinds (games.core.Outbox): "paid" money taken, an order made that waits for its
        deal; "deal" the orders confirmed (made now where no payment came first) and
        their commissions earned; "refund" money back for lines (their orders refunded);
        "return" money taken too late, given back (no order); "check" lapsed holds, whose
        payments the provider is asked about.
        """
        movements: list[Movement] = []
        # What each line's order is, where one is made: the game's kind and the sku, and
        # whether the order is confirmed (a deal) or waits for its deal (paid).
        sources: dict[tuple[str, str, str], tuple[str, str, bool]] = {}
        confirm: list[tuple[str, str, str]] = []
        refund_orders: list[tuple[str, str, str]] = []
        checks: list[tuple[str, dict[str, Any]]] = []
        for kind, data in items:
            if kind not in ("deal", "refund", "paid", "return", "check"):
                log.warning("outbox row of unknown type %s skipped", kind)
                continue
            campaign = data["campaign"]
            for line in data["lines"]:
                key = (campaign, line["instance"], line["line"])
                payment = line.get("payment", "")
                if kind == "check":
                    checks.append((campaign, line))
                    continue
                take = Movement("payment", campaign, key[1], key[2], line["user"],
                                line["amount"], payment)
                back = Movement("refund", campaign, key[1], key[2], line["user"],
                                line["amount"], payment)
                if kind == "deal":
                    # Money taken before (a seat paid) was recorded then, with its order:
                    # the movement is no longer fresh and only the confirmation is left.
                    # Otherwise it is taken with the deal (a bargain bought), order and all.
                    confirm.append(key)
                    movements.append(take)
                    sources[key] = (data["kind"], line["sku"], True)
                elif kind == "paid":
                    movements.append(take)
                    sources[key] = (data["kind"], line["sku"], False)
                elif kind == "refund":
                    movements.append(back)
                    refund_orders.append(key)
                else:  # return: taken and given back, never an order
                    movements += [take, back]
        recorded = await self._payments.record(conn, movements)
        # A payment recorded by an earlier pass already has its order: only fresh ones do.
        paid = [(m, ref) for m, ref in recorded.items()
                if m.kind == "payment" and (m.campaign, m.instance, m.line) in sources]
        live: list[LiveEvent] = []
        confirmed: list[FreshOrder] = []
        if paid:
            found = [sources[(m.campaign, m.instance, m.line)] for m, _ in paid]
            # Made and confirmed at the pipeline's clock: confirmed_at starts the return
            # window (settle_at), created_at dates the order for its notices' campaigns.
            rows = await conn.fetch(
                "INSERT INTO orders (campaign, kind, instance, line, user_id, sku, amount,"
                " status, payment_ref, created_at, confirmed_at) SELECT c, k, i, l, u, s, a,"
                " 'paid', r, $10, CASE WHEN f THEN $10::timestamptz END FROM unnest($1::text[],"
                " $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[],"
                " $8::text[], $9::bool[]) AS o(c, k, i, l, u, s, a, r, f)"
                " ON CONFLICT (campaign, instance, line) DO NOTHING RETURNING *",
                [m.campaign for m, _ in paid], [kind for kind, _, _ in found],
                [m.instance for m, _ in paid], [m.line for m, _ in paid],
                [m.user for m, _ in paid], [sku for _, sku, _ in found],
                [m.amount for m, _ in paid], [ref for _, ref in paid],
                [confirmed for _, _, confirmed in found], now,
            )
            made = [r for r in rows if r["confirmed_at"] is not None]
            confirmed += [_fresh(r) for r in made]
            # Each buyer sees their order appear once its deal is done (the deal's frame
            # came before it existed); an order waiting for its deal is not news yet: the
            # buyer's answer said they paid.
            live = [LiveEvent(user_topic(r['user_id']), 0,
                              {"type": "order_created", "order": reads.order_view(r)})
                    for r in made]
        if confirm:
            # Orders made when their money was taken, confirmed now that the deal is done
            # (once: a replayed deal finds them confirmed).
            rows = await conn.fetch(
                "UPDATE orders o SET confirmed_at = $4 FROM unnest($1::text[], $2::text[],"
                " $3::text[]) AS d(c, i, l) WHERE o.campaign = d.c AND o.instance = d.i"
                " AND o.line = d.l AND o.confirmed_at IS NULL AND o.status = 'paid'"
                " RETURNING o.*", *(list(column) for column in zip(*confirm, strict=True)),
                now)
            confirmed += [_fresh(r) for r in rows]
            live += [LiveEvent(user_topic(r["user_id"]), 0,
                               {"type": "order_created", "order": reads.order_view(r)})
                     for r in rows]
        fresh_refunds = [m for m in recorded if m.kind == "refund"]
        if refund_orders:
            rows = await conn.fetch(
                "UPDATE orders o SET status = 'refunded', refunded_at = $4,"
                " refunded_amount = o.amount FROM"
                " unnest($1::text[], $2::text[], $3::text[]) AS d(c, i, l)"
                " WHERE o.campaign = d.c AND o.instance = d.i AND o.line = d.l"
                " AND o.status = 'paid' AND o.confirmed_at IS NULL RETURNING o.*",
                *(list(column) for column in zip(*refund_orders, strict=True)), now)
            # A failed deal's refund is the order's one piece, whole.
            await conn.execute(
                "INSERT INTO order_refunds (order_id, piece, amount, asked_by, after_sales)"
                " SELECT unnest($1::bigint[]), 1, unnest($2::bigint[]), unnest($3::text[]),"
                " false", [r["id"] for r in rows], [r["amount"] for r in rows],
                [r["user_id"] for r in rows])
            live += [LiveEvent(user_topic(r["user_id"]), 0,
                               {"type": "order_refunded", "order": reads.order_view(r)})
                     for r in rows]
        if isinstance(self._gateway, SandboxBooks) and self.config.pipeline.sandbox_pays \
                == "immediate":
            # A seat the sandbox's payer paid at once (server.paydesk.PayDesk.prepay): its
            # books record the payment with the order it made.
            taken = [m for m in recorded if m.kind == "payment" and m.payment]
            await SandboxBooks.paid_at_once(conn, [
                (m.payment, m.user, m.amount, to_ms(now)) for m in taken])
        await refunds.request(conn, [refunds.Wanted(m.payment, m.user, m.amount, m.amount)
                                     for m in fresh_refunds if m.payment], now)
        for campaign, line in checks:
            # Asked after this commits (actors.checks): never a provider call in here.
            await provider_checks.ask(conn, campaign, line["user"], line["payment"], now)
        earned, earned_live = await commissions.earn(conn, confirmed, self.config)
        # After the commissions: a notice's facts tell who earned what on the order.
        await notices.write(conn, self.config, notices.PAID,
                            [(o.id, o.buyer, o.amount, o.created_at) for o in confirmed])
        if earned:
            due = min(c.settle_at for c in earned)
            if self._next_due is None or due < self._next_due:
                self._next_due = due
        self.orders_total += len(paid)
        self.refunds_total += len(fresh_refunds)
        self.commissions_total += len(earned)
        return live + earned_live

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics."""
        return {"processed_total": self.processed_total, "orders_total": self.orders_total,
                "refunds_total": self.refunds_total,
                "commissions_total": self.commissions_total,
                "settled_total": self.settled_total, "last_lag_ms": self.last_lag_ms}


def _fresh(row: asyncpg.Record) -> FreshOrder:
    """A confirmed order as commissions take it: its return window runs from confirmation."""
    return FreshOrder(row["id"], row["campaign"], row["user_id"], row["amount"],
                      row["confirmed_at"])
