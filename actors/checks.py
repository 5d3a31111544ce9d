"""Asking the provider about lapsed holds, after the commit that decided to ask.

A hold that ended unpaid (a seat, a purchase) is not given up on the owner's word alone:
its payment may have been paid with its notification lost. The pipeline records the
question (`provider_checks`) in the transaction that read the hold's end from the outbox,
and asks the provider here, outside any transaction, so a provider that is slow or down
holds up no order, commission or refund: a failed ask is tried again after a growing
pause (actors.retries). The answer becomes a notice to the hold's game (its
`on="payment"` method: "paid" with the amount taken, or "closed"), written with the
question marked answered, in one short transaction.
"""

from __future__ import annotations

import logging

import asyncpg

from actors import notices, retries
from actors.paygate import PaymentGateway, PaymentNotFound, PaymentStatus
from storage.config import Config

log = logging.getLogger("fission.checks")


async def ask(conn: asyncpg.Connection, campaign: str, user: str, payment: str) -> None:
    """Record that the provider must be asked about `payment`, in the caller's
    transaction (once: a replayed outbox row asks nothing twice)."""
    await conn.execute(
        "INSERT INTO provider_checks (payment_id, campaign, user_id) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING", payment, campaign, user)


async def dispatch(pool: asyncpg.Pool, gateway: PaymentGateway, config: Config,
                   limit: int = 200) -> int:
    """Ask the provider about the checks due; how many it answered."""
    rows = await pool.fetch(
        "SELECT payment_id, campaign, user_id, attempts FROM provider_checks"
        " WHERE answered_at IS NULL AND next_attempt_at <= now()"
        " ORDER BY next_attempt_at LIMIT $1", limit)
    answered = 0
    for row in rows:
        payment = row["payment_id"]
        try:
            state = await gateway.query(payment)
        except PaymentNotFound:
            outcome, amount = "closed", 0  # never created at the provider: never paid
        except Exception as exc:
            attempts = row["attempts"] + 1
            log.warning("asking about payment %s failed (%r); again in %.0f s", payment,
                        exc, retries.pause(attempts))
            await pool.execute(
                "UPDATE provider_checks SET attempts = $2, last_error = $3,"
                " next_attempt_at = now() + make_interval(secs => $4)"
                " WHERE payment_id = $1", payment, attempts, str(exc)[:500],
                retries.pause(attempts))
            continue
        else:
            # Paid (or refunded since: the game finds it given back and does nothing),
            # else not paid; the provider closes a payment at its time_expire, the
            # hold's end, so it cannot be paid from now on.
            taken = state.status in (PaymentStatus.PAID, PaymentStatus.REFUNDED)
            outcome, amount = ("paid", state.amount) if taken else ("closed", 0)
        async with pool.acquire() as conn, conn.transaction():
            await notices.payment(conn, config, row["campaign"], row["user_id"], payment,
                                  outcome, amount)
            await conn.execute("UPDATE provider_checks SET answered_at = now()"
                               " WHERE payment_id = $1", payment)
        answered += 1
    return answered
