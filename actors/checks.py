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

import asyncio
import logging
from datetime import datetime

import asyncpg

from actors import notices, retries
from actors.paygate import PaymentGateway, PaymentNotFound, PaymentStatus
from storage.config import Config

log = logging.getLogger("fission.checks")

ASKED_AT_ONCE = 8  # questions in flight to the provider (its pool, its rate limits)


async def ask(conn: asyncpg.Connection, campaign: str, user: str, payment: str,
              now: datetime) -> None:
    """Record that the provider must be asked about `payment`, due at once (`now`, the
    pipeline's clock), in the caller's transaction (once: a replayed outbox row asks
    nothing twice)."""
    await conn.execute(
        "INSERT INTO provider_checks (payment_id, campaign, user_id, next_attempt_at)"
        " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", payment, campaign, user, now)


async def dispatch(pool: asyncpg.Pool, gateway: PaymentGateway, config: Config,
                   now: datetime, limit: int = 500) -> int:
    """Ask the provider about the checks due by `now` (the pipeline's clock; a few at a
    time); how many it answered. The answers' notices are written together, in one
    short transaction."""
    rows = await pool.fetch(
        "SELECT payment_id, campaign, user_id, attempts FROM provider_checks"
        " WHERE answered_at IS NULL AND next_attempt_at <= $2"
        " ORDER BY next_attempt_at LIMIT $1", limit, now)
    if not rows:
        return 0
    gate = asyncio.Semaphore(ASKED_AT_ONCE)

    async def one(row: asyncpg.Record) -> tuple[str, int] | None:
        async with gate:
            return await _answer(pool, gateway, row, now)

    found = await asyncio.gather(*(one(row) for row in rows))
    answered = [(row, answer) for row, answer in zip(rows, found, strict=True)
                if answer is not None]
    if answered:
        async with pool.acquire() as conn, conn.transaction():
            for row, (outcome, amount) in answered:
                await notices.payment(conn, config, row["campaign"], row["user_id"],
                                      row["payment_id"], outcome, amount)
            await conn.execute("UPDATE provider_checks SET answered_at = $2"
                               " WHERE payment_id = ANY($1::text[])",
                               [row["payment_id"] for row, _ in answered], now)
    return len(answered)


async def _answer(pool: asyncpg.Pool, gateway: PaymentGateway, row: asyncpg.Record,
                  now: datetime) -> tuple[str, int] | None:
    """The provider's word on the row's payment: ("paid", fen) or ("closed", 0); None
    when it could not be asked (the row is then due again after a pause)."""
    payment = row["payment_id"]
    try:
        state = await gateway.query(payment)
    except PaymentNotFound:
        return "closed", 0  # never created at the provider: never paid
    except Exception as exc:  # any failure: asked again later
        attempts = row["attempts"] + 1
        log.warning("asking about payment %s failed (%r); again in %.0f s", payment, exc,
                    retries.pause(attempts))
        await pool.execute(
            "UPDATE provider_checks SET attempts = $2, last_error = $3,"
            " next_attempt_at = $5::timestamptz + make_interval(secs => $4) WHERE payment_id = $1",
            payment, attempts, str(exc)[:500], retries.pause(attempts), now)
        return None
    # Paid (or refunded since: the game finds it given back and does nothing), else not
    # paid; the provider closes a payment at its time_expire, the hold's end, so it
    # cannot be paid from now on.
    if state.status in (PaymentStatus.PAID, PaymentStatus.REFUNDED):
        return "paid", state.amount
    return "closed", 0
