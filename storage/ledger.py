"""Referrals, commissions and ledger lines in Postgres: the pipeline's writes.

Every function runs on a connection inside the caller's transaction, set-based (a few
statements per batch whatever its size). The rules of who earns what live in
`games.commission`; this module only stores and finds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import asyncpg

from games.commission import Line

# Binds take one transaction-scoped advisory lock: two users binding to each other at
# once must not both pass the loop check. Binding is rare next to everything else.
_BIND_LOCK = 0x46495352  # "FISR"
# Deeper referral chains than this are not followed when looking for a loop.
_MAX_DEPTH = 10_000


@dataclass(frozen=True)
class NewCommission:
    """A commission to write: what `order_id` earns `beneficiary` at `level`."""

    order_id: int
    level: int
    beneficiary: str
    buyer: str
    campaign: str
    base: int
    rate_bps: int
    amount: int
    settle_at: datetime


@dataclass(frozen=True)
class Commission:
    """A commission as stored."""

    id: int
    order_id: int
    level: int
    beneficiary: str
    buyer: str
    campaign: str
    amount: int
    status: str
    settle_at: datetime
    reversed: int = 0  # fen taken back so far (refunds in pieces, or after settlement)

    @property
    def rest(self) -> int:
        """What is left of it: its amount less what refunds took back."""
        return self.amount - self.reversed

    @classmethod
    def of(cls, row: asyncpg.Record) -> Commission:
        return cls(row["id"], row["order_id"], row["level"], row["beneficiary"], row["buyer"],
                   row["campaign"], row["amount"], row["status"], row["settle_at"],
                   row["reversed"])


_COLUMNS = ("id, order_id, level, beneficiary, buyer, campaign, amount, status, settle_at,"
            " reversed")
_RETURNING = f"RETURNING {_COLUMNS}"


async def write_lines(conn: asyncpg.Connection,
                      lines: Sequence[tuple[str, int | None, Line]]) -> None:
    """Append ledger lines `(txn, commission id, line)`, all in one statement.

    One statement, because the database checks each statement's transactions balance.
    """
    if lines:
        await conn.execute(
            "INSERT INTO ledger_entries (txn, commission_id, account, amount)"
            " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bigint[])",
            [txn for txn, _, _ in lines], [cid for _, cid, _ in lines],
            [line.account for _, _, line in lines], [line.amount for _, _, line in lines],
        )


async def referral_chains(conn: asyncpg.Connection, users: Sequence[str]
                          ) -> dict[str, tuple[str, ...]]:
    """Each bound user's referrer and that referrer's referrer (the two that earn), as
    bound now: one statement, so both levels are read at the same moment of the
    binding history (a takeover that commits meanwhile is seen whole or not at all)."""
    rows = await conn.fetch(
        "SELECT r1.user_id, r1.referrer AS first, r2.referrer AS second FROM referrals r1"
        " LEFT JOIN referrals r2 ON r2.user_id = r1.referrer WHERE r1.user_id = ANY($1::text[])",
        list(set(users)),
    )
    return {r["user_id"]: (r["first"],) if r["second"] is None else (r["first"], r["second"])
            for r in rows}


async def insert_commissions(conn: asyncpg.Connection, fresh: Sequence[NewCommission]
                             ) -> list[Commission]:
    """Write `fresh` commissions; those not written before (an order earns once)."""
    if not fresh:
        return []
    rows = await conn.fetch(
        "INSERT INTO commissions (order_id, level, beneficiary, buyer, campaign, base, rate_bps,"
        " amount, status, settle_at) SELECT o, l, b, u, c, base, r, a, 'pending', s FROM"
        " unnest($1::bigint[], $2::smallint[], $3::text[], $4::text[], $5::text[], $6::bigint[],"
        " $7::int[], $8::bigint[], $9::timestamptz[]) AS n(o, l, b, u, c, base, r, a, s)"
        f" ON CONFLICT (order_id, level) DO NOTHING {_RETURNING}",
        [c.order_id for c in fresh], [c.level for c in fresh], [c.beneficiary for c in fresh],
        [c.buyer for c in fresh], [c.campaign for c in fresh], [c.base for c in fresh],
        [c.rate_bps for c in fresh], [c.amount for c in fresh], [c.settle_at for c in fresh],
    )
    return [Commission.of(r) for r in rows]


async def settle_due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[Commission]:
    """Mark up to `limit` pending commissions whose window ended by `now` settled, each
    settling its rest (`settled`: its amount less what partial refunds took back).

    SKIP LOCKED: a commission a refund holds is left to it (it will be reversed).
    """
    rows = await conn.fetch(
        "UPDATE commissions SET status = 'settled', closed_at = $1, settled = amount - reversed"
        " WHERE id IN ("
        " SELECT id FROM commissions WHERE status = 'pending' AND settle_at <= $1"
        f" ORDER BY settle_at LIMIT $2 FOR UPDATE SKIP LOCKED) {_RETURNING}",
        now, limit,
    )
    return [Commission.of(r) for r in rows]


async def flag_tax(conn: asyncpg.Connection, users: list[str], now: datetime,
                   threshold: int, zone: str) -> list[tuple[str, int, int]]:
    """Flag, once a year, those of `users` whose commission settled in `now`'s calendar
    year (in `zone`) reached `threshold` fen; the ones flagged now: (user, year, income).

    Income is what they keep: a settled commission counts less all that refunds took back
    (before settlement and clawed back after), so income returned is never taxed."""
    year = now.astimezone(ZoneInfo(zone)).year
    start = datetime(year, 1, 1, tzinfo=ZoneInfo(zone))
    end = datetime(year + 1, 1, 1, tzinfo=ZoneInfo(zone))
    rows = await conn.fetch(
        "INSERT INTO tax_flags (user_id, year, income, flagged_at)"
        " SELECT beneficiary, $2, sum(amount - reversed), $5 FROM commissions"
        " WHERE beneficiary = ANY($1::text[]) AND status = 'settled'"
        " AND closed_at >= $3 AND closed_at < $4"
        " GROUP BY beneficiary HAVING sum(amount - reversed) >= $6"
        " ON CONFLICT (user_id, year) DO NOTHING RETURNING user_id, year, income",
        users, year, start, end, now, threshold)
    return [(r["user_id"], r["year"], int(r["income"])) for r in rows]


async def next_due(conn: asyncpg.Connection) -> datetime | None:
    """When the earliest pending commission's window ends (None: nothing pending)."""
    due: datetime | None = await conn.fetchval(
        "SELECT min(settle_at) FROM commissions WHERE status = 'pending'")
    return due


async def lock_order(conn: asyncpg.Connection, order_id: int) -> asyncpg.Record | None:
    """An order's row, locked for the rest of the transaction."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM orders WHERE id = $1 FOR UPDATE", order_id)
    return row


async def order_commissions(conn: asyncpg.Connection, order_id: int) -> list[Commission]:
    """An order's commissions, locked for the rest of the transaction."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM commissions WHERE order_id = $1 ORDER BY level FOR UPDATE",
        order_id)
    return [Commission.of(r) for r in rows]


async def refund_by_key(conn: asyncpg.Connection, order_id: int, asked_by: str, key: str
                        ) -> asyncpg.Record | None:
    """The piece of `order_id` that `asked_by` asked for with idempotency key `key`."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM order_refunds WHERE order_id = $1 AND asked_by = $2 AND key = $3",
        order_id, asked_by, key)
    return row


async def add_refund(conn: asyncpg.Connection, order_id: int, amount: int, asked_by: str,
                     after_sales: bool, key: str | None, note: str | None, now: datetime
                     ) -> tuple[int, asyncpg.Record]:
    """Record the next piece refunded of `order_id` (the caller holds the order's lock, so
    pieces are numbered 1, 2, ... without gaps) and add it to the order's refunded amount,
    setting the order refunded (at `now`, the pipeline's clock) once that is all of it;
    (the piece's number, the order's row as it now is)."""
    piece: int = await conn.fetchval(
        "INSERT INTO order_refunds (order_id, piece, amount, asked_by, after_sales, key, note)"
        " SELECT $1, coalesce(max(piece), 0) + 1, $2, $3, $4, $5, $6 FROM order_refunds"
        " WHERE order_id = $1 RETURNING piece",
        order_id, amount, asked_by, after_sales, key, note)
    row: asyncpg.Record = await conn.fetchrow(
        "UPDATE orders SET refunded_amount = refunded_amount + $2,"
        " status = CASE WHEN refunded_amount + $2 = amount THEN 'refunded' ELSE status END,"
        " refunded_at = CASE WHEN refunded_amount + $2 = amount THEN $3 ELSE refunded_at"
        " END WHERE id = $1 RETURNING *", order_id, amount, now)
    return piece, row


async def add_reversed(conn: asyncpg.Connection, steps: Sequence[tuple[int, int]],
                       now: datetime) -> None:
    """Add `(commission id, fen)` to what each commission's refunds took back; a pending
    one taken back whole is reversed (it will never settle), closed at `now`."""
    if steps:
        await conn.execute(
            "UPDATE commissions c SET reversed = c.reversed + s.fen,"
            " status = CASE WHEN c.status = 'pending' AND c.reversed + s.fen = c.amount"
            " THEN 'reversed' ELSE c.status END,"
            " closed_at = CASE WHEN c.status = 'pending' AND c.reversed + s.fen = c.amount"
            " THEN $3 ELSE c.closed_at END"
            " FROM unnest($1::bigint[], $2::bigint[]) AS s(id, fen) WHERE c.id = s.id",
            [cid for cid, _ in steps], [fen for _, fen in steps], now)


async def balances(conn: asyncpg.Connection, accounts: Sequence[str]) -> dict[str, int]:
    """The balances (fen) of `accounts`; 0 for an account without lines."""
    rows = await conn.fetch(
        "SELECT account, sum(amount) AS total FROM ledger_entries"
        " WHERE account = ANY($1::text[]) GROUP BY account", list(set(accounts)))
    found = {r["account"]: int(r["total"]) for r in rows}
    return {account: found.get(account, 0) for account in accounts}


async def referral_of(conn: asyncpg.Connection, user: str) -> asyncpg.Record | None:
    """`user`'s binding in force, if bound."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT user_id, referrer, bound_at FROM referrals WHERE user_id = $1", user)
    return row


async def lock_referrals(conn: asyncpg.Connection) -> None:
    """Serialise binds until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _BIND_LOCK)


async def ancestors(conn: asyncpg.Connection, user: str) -> list[str]:
    """`user`'s referrer, its referrer, and so on up the chain of bindings in force,
    nearest first."""
    rows = await conn.fetch(
        "WITH RECURSIVE up(user_id, depth) AS ("
        " SELECT referrer, 1 FROM referrals WHERE user_id = $1"
        " UNION ALL SELECT r.referrer, up.depth + 1 FROM referrals r"
        " JOIN up ON r.user_id = up.user_id WHERE up.depth < $2)"
        " SELECT user_id FROM up ORDER BY depth", user, _MAX_DEPTH,
    )
    return [r["user_id"] for r in rows]


_REFERRAL = "RETURNING user_id, referrer, bound_at"


async def insert_referral(conn: asyncpg.Connection, user: str, referrer: str, now: datetime
                          ) -> asyncpg.Record:
    """Bind the unbound `user` to `referrer` from `now`, in force and in the history; the
    binding's row."""
    row: asyncpg.Record = await conn.fetchrow(
        f"INSERT INTO referrals (user_id, referrer, bound_at) VALUES ($1, $2, $3) {_REFERRAL}",
        user, referrer, now)
    await conn.execute("INSERT INTO referral_history (user_id, referrer, bound_at)"
                       " VALUES ($1, $2, $3)", user, referrer, now)
    return row


async def move_referral(conn: asyncpg.Connection, user: str, referrer: str, now: datetime
                        ) -> asyncpg.Record:
    """End the bound `user`'s binding at `now` and bind them to `referrer` from then; the
    new binding's row. Commissions already earned stay whose they are."""
    await conn.execute(
        "UPDATE referral_history SET ended_at = $3, ended_by = $2"
        " WHERE user_id = $1 AND ended_at IS NULL", user, referrer, now)
    await conn.execute("INSERT INTO referral_history (user_id, referrer, bound_at)"
                       " VALUES ($1, $2, $3)", user, referrer, now)
    row: asyncpg.Record = await conn.fetchrow(
        f"UPDATE referrals SET referrer = $2, bound_at = $3 WHERE user_id = $1 {_REFERRAL}",
        user, referrer, now)
    return row
