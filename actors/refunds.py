"""Refunds to the payment provider: decided in a pipeline transaction, sent after it.

The transaction that decides a refund (a failed group's paid member, a payment that came
too late, an order returned) writes a `provider_refunds` row with its refund id, derived
from the payment, so deciding twice asks once. After the commit `dispatch` sends what is
requested to the provider, which refunds a refund id once however often it is asked; a
refused or failed request is kept and asked again after a growing pause (actors.retries:
an outage of hours is waited out), and one that fails for days is set `abnormal` for an
operator, never dropped. A status only moves forward: a notification that told how a
refund ended is never overwritten by a slower dispatch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from actors import retries
from actors.paygate import PaymentError, PaymentGateway, RefundRequest, RefundStatus

log = logging.getLogger("fission.refunds")


@dataclass(frozen=True)
class Wanted:
    """A refund to ask for: `amount` of `payment` (whose total was `total`), to `user`;
    `piece` numbers the refunds of one payment (an order refunded in pieces)."""

    payment: str
    user: str
    amount: int
    total: int
    piece: int = 1

    @property
    def refund_id(self) -> str:
        """The provider's out_refund_no, derived from the payment and the piece, so a
        replay asks for the same refund: `r{payment}` for the first (the id every refund
        had when they were all whole), `r{payment}-{piece}` after it. WeChat refunds one
        payment several times under distinct out_refund_no, their sum at most the total."""
        return f"r{self.payment}" if self.piece == 1 else f"r{self.payment}-{self.piece}"


async def request(conn: asyncpg.Connection, wanted: Sequence[Wanted], now: datetime) -> int:
    """Record `wanted` in the caller's transaction, due at once (`now`, the pipeline's
    clock); how many were new."""
    if not wanted:
        return 0
    rows = await conn.fetch(
        "INSERT INTO provider_refunds (refund_id, payment_id, user_id, amount, total,"
        " next_attempt_at) SELECT *, $6::timestamptz FROM unnest($1::text[], $2::text[],"
        " $3::text[], $4::bigint[], $5::bigint[]) ON CONFLICT DO NOTHING RETURNING refund_id",
        [w.refund_id for w in wanted], [w.payment for w in wanted],
        [w.user for w in wanted], [w.amount for w in wanted], [w.total for w in wanted], now)
    return len(rows)


async def dispatch(pool: asyncpg.Pool, gateway: PaymentGateway, now: datetime,
                   limit: int = 200) -> int:
    """Send the refunds requested and due by `now` (the pipeline's clock) to the
    provider; how many it accepted. (`updated_at` is the database's: an audit time.)"""
    rows = await pool.fetch(
        "SELECT refund_id, payment_id, amount, total, attempts FROM provider_refunds"
        " WHERE status = 'requested' AND next_attempt_at <= $2"
        " ORDER BY next_attempt_at LIMIT $1", limit, now)
    accepted = 0
    for row in rows:
        try:
            result = await gateway.refund(RefundRequest(
                payment_id=row["payment_id"], refund_id=row["refund_id"],
                amount=row["amount"], total=row["total"], reason="拼团退款"))
        except Exception as exc:
            attempts = row["attempts"] + 1
            given_up = attempts >= retries.GIVE_UP_AFTER or (
                isinstance(exc, PaymentError) and 400 <= exc.status < 500
                and exc.status != 429 and attempts >= 3)
            (log.error if given_up else log.warning)(
                "refund %s of %s failed (%r)%s", row["refund_id"], row["payment_id"], exc,
                "; set abnormal for an operator" if given_up else "; asking again later")
            await pool.execute(
                "UPDATE provider_refunds SET attempts = $2, last_error = $3,"
                " status = CASE WHEN $4 THEN 'abnormal' ELSE status END,"
                " next_attempt_at = $6::timestamptz + make_interval(secs => $5), updated_at = now()"
                " WHERE refund_id = $1 AND status = 'requested'",
                row["refund_id"], attempts, str(exc)[:500], given_up,
                retries.pause(attempts), now)
            continue
        status = ("succeeded" if result.status is RefundStatus.SUCCEEDED
                  else "processing" if result.status is RefundStatus.PROCESSING
                  else result.status.value)
        if status == "abnormal":
            log.error("refund %s of %s is abnormal at the provider: an operator must act",
                      row["refund_id"], row["payment_id"])
        await pool.execute(
            "UPDATE provider_refunds SET status = $2, attempts = attempts + 1,"
            " updated_at = now() WHERE refund_id = $1 AND status = 'requested'",
            row["refund_id"], status)
        accepted += 1
    return accepted
