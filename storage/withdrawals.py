"""Withdrawals in Postgres: the pipeline's writes, inside the caller's transaction."""

from __future__ import annotations

from datetime import datetime

import asyncpg

# A user's withdrawals are serialised by a transaction-scoped advisory lock on the user:
# the balance a request is checked against is then the one it holds against.
_LOCK_SPACE = 0x46495357  # "FISW"


async def lock_user(conn: asyncpg.Connection, user: str) -> None:
    """Serialise `user`'s withdrawals until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_SPACE, user)


async def by_key(conn: asyncpg.Connection, user: str, key: str) -> asyncpg.Record | None:
    """The withdrawal `user` asked for with idempotency key `key`, if any."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM withdrawals WHERE user_id = $1 AND key = $2", user, key)
    return row


async def insert(conn: asyncpg.Connection, user: str, key: str, amount: int, status: str,
                 fee: int, now: datetime) -> asyncpg.Record:
    """A new withdrawal row, asked for at `now` (the pipeline's clock)."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO withdrawals (user_id, key, amount, status, fee, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) RETURNING *", user, key, amount, status, fee, now)
    return row


async def lock(conn: asyncpg.Connection, withdrawal_id: int) -> asyncpg.Record | None:
    """A withdrawal's row, locked for the rest of the transaction."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM withdrawals WHERE id = $1 FOR UPDATE", withdrawal_id)
    return row


async def close(conn: asyncpg.Connection, withdrawal_id: int, status: str,
                payout_ref: str | None, reviewer: str | None, note: str | None,
                now: datetime) -> asyncpg.Record:
    """Mark a withdrawal paid or rejected at `now` (the pipeline's clock); its row as it
    now is."""
    row: asyncpg.Record = await conn.fetchrow(
        "UPDATE withdrawals SET status = $2, payout_ref = $3, reviewer = $4, note = $5,"
        " closed_at = $6 WHERE id = $1 RETURNING *",
        withdrawal_id, status, payout_ref, reviewer, note, now)
    return row
