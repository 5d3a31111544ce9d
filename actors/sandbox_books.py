"""The sandbox provider with its books in Postgres: every process sees the same payments.

`actors.paysandbox.SandboxGateway` signs like WeChat Pay and remembers what it did in
its own memory, which is one process's. A server has several (gateways take payments,
the pipeline refunds them and asks about them), so `SandboxBooks` keeps the provider's
side — payments created, paid, closed, refunded — in tables of its own
(`sandbox_payments`, `sandbox_keys`), apart from Fission's, and signs through a
`SandboxGateway` made from keys every process loads from the same row. Nothing here
moves money; everything downstream of the notify route runs as it would for WeChat's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

import asyncpg
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from actors import paysign
from actors.paygate import (
    ClientParams,
    Notification,
    PaymentError,
    PaymentNotFound,
    PaymentRequest,
    PaymentState,
    PaymentStatus,
    RefundRequest,
    RefundResult,
    RefundStatus,
    now_ms,
)
from actors.paysandbox import PaidAsk, SandboxGateway, refund_no, transaction_no
from storage.clock import Clock

_STATUS = {"pending": PaymentStatus.PENDING, "paid": PaymentStatus.PAID,
           "refunded": PaymentStatus.REFUNDED, "closed": PaymentStatus.CLOSED}


async def load_keys(pool: asyncpg.Pool) -> tuple[rsa.RSAPrivateKey, bytes]:
    """The sandbox's signing key and API v3 key, made by the first process to ask."""
    row = await pool.fetchrow("SELECT private_pem, api_v3_key FROM sandbox_keys WHERE id = 1")
    if row is None:
        key = rsa.generate_private_key(65537, 2048)
        pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        await pool.execute(
            "INSERT INTO sandbox_keys (id, private_pem, api_v3_key) VALUES (1, $1, $2)"
            " ON CONFLICT DO NOTHING", pem, paysign.random_nonce(32))
        row = await pool.fetchrow(
            "SELECT private_pem, api_v3_key FROM sandbox_keys WHERE id = 1")
    loaded = serialization.load_pem_private_key(row["private_pem"].encode(), None)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    return loaded, row["api_v3_key"].encode()


class SandboxBooks:
    """A `PaymentGateway` playing WeChat Pay over the sandbox's tables (see above)."""

    name = "sandbox"

    def __init__(self, pool: asyncpg.Pool, signer: SandboxGateway, *,
                 clock: Clock = now_ms) -> None:
        self._pool = pool
        self.signer = signer
        self._clock = clock
        # pay_at_once's requests waiting for the next statement, by payment id, and the
        # task writing them (None: none running).
        self._waiting: dict[str, list[tuple[PaymentRequest, asyncio.Future[asyncpg.Record]]]] = {}
        self._writer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, pool: asyncpg.Pool, *, clock: Clock = now_ms) -> SandboxBooks:
        """The sandbox over `pool`, signing with the keys stored there."""
        key, api_v3_key = await load_keys(pool)
        return cls(pool, SandboxGateway(key=key, api_v3_key=api_v3_key, clock=clock),
                   clock=clock)

    async def create(self, request: PaymentRequest) -> ClientParams:
        """Record the payment (once: the same request again is the same payment)."""
        row = await self._pool.fetchrow(
            "WITH made AS (INSERT INTO sandbox_payments (payment_id, payer, amount, status,"
            " expires_at) VALUES ($1, $2, $3, 'pending', $4) ON CONFLICT DO NOTHING"
            " RETURNING payer, amount) SELECT payer, amount FROM made UNION ALL"
            " SELECT payer, amount FROM sandbox_payments WHERE payment_id = $1 LIMIT 1",
            request.payment_id, request.user, request.amount, request.expires_at)
        if (row["payer"], row["amount"]) != (request.user, request.amount):
            # WeChat refuses an out_trade_no reused for another payment; so does this.
            raise PaymentError(400, "OUT_TRADE_NO_USED",
                               f"payment {request.payment_id} was created otherwise")
        return self.signer.client_params(request.payment_id)

    async def pay(self, payment_id: str, now: int | None = None) -> PaidAsk:
        """The payer pays: what the TRANSACTION.SUCCESS notification to deliver is to say
        (the same again for a payment paid or refunded already: a redelivery), for the
        caller to have it rendered, as `pay_at_once`'s."""
        now = self._clock() if now is None else now
        row = await self._pool.fetchrow(
            "UPDATE sandbox_payments SET status = CASE WHEN status = 'pending'"
            " AND expires_at > $2 THEN 'paid' WHEN status = 'pending' THEN 'closed'"
            " ELSE status END, paid_at = CASE WHEN status = 'pending' AND expires_at > $2"
            " THEN $2 ELSE paid_at END WHERE payment_id = $1"
            " RETURNING status, payer, amount, paid_at", payment_id, now)
        if row is None:
            raise PaymentNotFound(404, "ORDER_NOT_EXIST", f"no payment {payment_id}")
        if row["status"] == "closed":
            raise PaymentError(400, "ORDER_CLOSED", f"payment {payment_id} is closed")
        return PaidAsk(payment_id, row["amount"], now=now, at=row["paid_at"],
                       payer=row["payer"])

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Refund at once (SUCCEEDED); the same refund id again refunds nothing more."""
        row = await self._pool.fetchrow(
            "UPDATE sandbox_payments SET refunded = refunded + $3, status = 'refunded',"
            " refunds = refunds || jsonb_build_object($2::text, $3::bigint)"
            " WHERE payment_id = $1 AND status IN ('paid', 'refunded')"
            " AND NOT refunds ? $2 AND refunded + $3 <= amount RETURNING payment_id",
            request.payment_id, request.refund_id, request.amount)
        if row is None:
            known = await self._pool.fetchrow(
                "SELECT status, refunds FROM sandbox_payments WHERE payment_id = $1",
                request.payment_id)
            if known is None:
                raise PaymentNotFound(404, "ORDER_NOT_EXIST",
                                      f"no payment {request.payment_id}")
            refunds = known["refunds"]
            if request.refund_id not in (json.loads(refunds) if isinstance(refunds, str)
                                         else refunds):
                raise PaymentError(400, "INVALID_REQUEST",
                                   f"payment {request.payment_id} cannot refund"
                                   f" {request.amount} (it is {known['status']})")
        return RefundResult(refund_id=request.refund_id,
                            provider_refund_id=refund_no(request.refund_id),
                            payment_id=request.payment_id, status=RefundStatus.SUCCEEDED,
                            amount=request.amount, total=request.total,
                            refunded_at=self._clock())

    async def query(self, payment_id: str) -> PaymentState:
        """The payment as the sandbox's books have it (closed once its time is up)."""
        row = await self._pool.fetchrow(
            "UPDATE sandbox_payments SET status = CASE WHEN status = 'pending'"
            " AND expires_at <= $2 THEN 'closed' ELSE status END WHERE payment_id = $1"
            " RETURNING status, amount, payer, paid_at", payment_id, self._clock())
        if row is None:
            raise PaymentNotFound(404, "ORDER_NOT_EXIST", f"no payment {payment_id}")
        status = _STATUS[row["status"]]
        paid = status in (PaymentStatus.PAID, PaymentStatus.REFUNDED)
        return PaymentState(payment_id, status, row["amount"],
                            transaction_id=transaction_no(payment_id) if paid else None,
                            payer=row["payer"], paid_at=row["paid_at"])

    async def pay_at_once(self, request: PaymentRequest) -> PaidAsk:
        """Create the payment and pay it (the "immediate" default, whose payer pays as
        soon as asked): what its TRANSACTION.SUCCESS notification is to say, for the
        caller to have it rendered (`actors.sandbox_signer`: signing is the provider's
        work, kept off the gateway's event loop). The same request again pays nothing
        more and says the same (a redelivery); one whose time is up is closed, as `pay`
        closes it.

        Payments asked for at once are written together, one statement for all that
        arrived while the previous one ran (as an owner's group commit): a join storm
        pays a commit per batch of joins, not one per join."""
        future: asyncio.Future[asyncpg.Record] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(request.payment_id, []).append((request, future))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_paid())
        row = await future
        if (row["payer"], row["amount"]) != (request.user, request.amount):
            raise PaymentError(400, "OUT_TRADE_NO_USED",
                               f"payment {request.payment_id} was created otherwise")
        if row["status"] == "closed":
            raise PaymentError(400, "ORDER_CLOSED", f"payment {request.payment_id} is closed")
        return PaidAsk(request.payment_id, row["amount"], now=row["now"], at=row["paid_at"],
                       payer=row["payer"])

    async def _write_paid(self) -> None:
        """Write what `pay_at_once` was asked, batch after batch until none waits."""
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                # One row per payment (a statement may not update a row twice): a request
                # repeated within the batch is answered by the same row.
                first = [asks[0][0] for asks in batch.values()]
                try:
                    rows = await self._pool.fetch(
                        "INSERT INTO sandbox_payments AS p (payment_id, payer, amount, status,"
                        " expires_at, paid_at) SELECT i, u, a, CASE WHEN e > $5::bigint"
                        " THEN 'paid' ELSE 'closed' END, e, CASE WHEN e > $5 THEN $5 END"
                        " FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[])"
                        " AS x(i, u, a, e) ON CONFLICT (payment_id) DO UPDATE SET"
                        " status = CASE WHEN p.status = 'pending' AND p.expires_at > $5"
                        " THEN 'paid' WHEN p.status = 'pending' THEN 'closed' ELSE p.status"
                        " END, paid_at = CASE WHEN p.status = 'pending' AND p.expires_at > $5"
                        " THEN $5 ELSE p.paid_at END"
                        " RETURNING payment_id, status, payer, amount, paid_at, $5 AS now",
                        [r.payment_id for r in first], [r.user for r in first],
                        [r.amount for r in first], [r.expires_at for r in first],
                        self._clock())
                except Exception as exc:  # every request of the batch hears it
                    for asks in batch.values():
                        for _, future in asks:
                            if not future.done():
                                future.set_exception(exc)
                    continue
                found = {row["payment_id"]: row for row in rows}
                for payment_id, asks in batch.items():
                    for _, future in asks:
                        if not future.done():
                            future.set_result(found[payment_id])
        finally:
            self._writer = None

    @staticmethod
    async def paid_at_once(conn: asyncpg.Connection,
                           paid: list[tuple[str, str, int, int]]) -> None:
        """Record payments (id, payer, fen, epoch ms) its payer made at once, before the
        command they paid (server.paydesk.PayDesk.prepay), in the caller's transaction,
        the one making their orders: the books then hold every payment the
        games took, to be queried and refunded. (A payment written already, by
        `pay_at_once`, stays as it is.)"""
        if paid:
            await conn.execute(
                "INSERT INTO sandbox_payments (payment_id, payer, amount, status, expires_at,"
                " paid_at) SELECT p, u, a, 'paid', t, t FROM unnest($1::text[], $2::text[],"
                " $3::bigint[], $4::bigint[]) AS x(p, u, a, t) ON CONFLICT DO NOTHING",
                [p for p, _, _, _ in paid], [u for _, u, _, _ in paid],
                [a for _, _, a, _ in paid], [t for _, _, _, t in paid])

    async def payer(self, payment_id: str) -> str | None:
        """Who `payment_id` was created for (None: the sandbox has no such payment)."""
        found: str | None = await self._pool.fetchval(
            "SELECT payer FROM sandbox_payments WHERE payment_id = $1", payment_id)
        return found

    def verify(self, headers: Mapping[str, str], body: bytes, now: int) -> Notification:
        """A notification the sandbox signed, checked as WeChat's are."""
        return self.signer.verify(headers, body, now)
