"""Read queries the gateway may run directly (never writes)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from games.campaign import iso
from games.commission import available, debt, pending
from games.withdrawal import withdrawing


async def ordered_among(pool: asyncpg.Pool, users: list[str]) -> set[str]:
    """Those of `users` who have ever had an order (one query for all of them)."""
    rows = await pool.fetch("SELECT DISTINCT user_id FROM orders WHERE user_id = ANY($1::text[])",
                            users)
    return {row["user_id"] for row in rows}


def iso_time(moment: datetime | None) -> str | None:
    """A timestamp from Postgres in the API's time format (None stays None)."""
    return None if moment is None else iso(int(moment.timestamp() * 1000))


def order_view(row: asyncpg.Record) -> dict[str, Any]:
    """An order as the API shows it."""
    return {
        "id": row["id"], "campaign": row["campaign"], "kind": row["kind"],
        "instance": row["instance"],
        # A group-buy order's group (the field clients of the group-buy have read).
        "group": row["instance"] if row["kind"] == "groupbuy" else None,
        "sku": row["sku"], "amount": row["amount"], "status": row["status"],
        "payment_ref": row["payment_ref"], "created_at": iso_time(row["created_at"]),
        # When its deal completed (null while it waits for its group).
        "confirmed_at": iso_time(row["confirmed_at"]),
        "refunded_at": iso_time(row["refunded_at"]),
        # Fen refunded so far: an order refunds in pieces; `status` is `refunded` (and
        # `refunded_at` set) once this is all of `amount`.
        "refunded_amount": row["refunded_amount"],
    }


async def list_orders(pool: asyncpg.Pool, user: str, limit: int) -> list[dict[str, Any]]:
    """A user's orders, newest first."""
    rows = await pool.fetch("SELECT * FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
                            user, limit)
    return [order_view(r) for r in rows]


def referral_view(row: asyncpg.Record) -> dict[str, Any]:
    """A referral binding as the API shows it."""
    return {"user": row["user_id"], "referrer": row["referrer"],
            "bound_at": iso_time(row["bound_at"])}


async def referral(pool: asyncpg.Pool, user: str) -> dict[str, Any]:
    """Who brought `user` in (None if nobody), and how many `user` brought in."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT user_id, referrer, bound_at FROM referrals WHERE user_id = $1", user)
        invited = await conn.fetchval("SELECT count(*) FROM referrals WHERE referrer = $1", user)
    return {"referral": None if row is None else referral_view(row), "invited": invited}


def _binding_view(row: asyncpg.Record) -> dict[str, Any]:
    return {"user": row["user_id"], "referrer": row["referrer"],
            "bound_at": iso_time(row["bound_at"]), "ended_at": iso_time(row["ended_at"]),
            "ended_by": row["ended_by"]}


async def referral_history(pool: asyncpg.Pool, user: str, limit: int) -> dict[str, Any]:
    """For an operator's audit: `user`'s own bindings (who brought them in, from when to
    when, and who took them over) and the bindings ever made to `user` as the referrer,
    each newest first, at most `limit` of each."""
    columns = "SELECT user_id, referrer, bound_at, ended_at, ended_by FROM referral_history"
    async with pool.acquire() as conn:
        own = await conn.fetch(f"{columns} WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
                               user, limit)
        brought = await conn.fetch(f"{columns} WHERE referrer = $1 ORDER BY id DESC LIMIT $2",
                                   user, limit)
    return {"user": user, "bindings": [_binding_view(r) for r in own],
            "brought": [_binding_view(r) for r in brought]}


async def team(pool: asyncpg.Pool, user: str, limit: int) -> dict[str, Any]:
    """`user`'s team: the direct members they brought in (newest first, with whether each
    has bought: a paid order not refunded), how many there are, and how many members those
    brought in (level 2, the last level that earns)."""
    async with pool.acquire() as conn:
        members = await conn.fetch(
            "SELECT r.user_id, r.bound_at, EXISTS (SELECT 1 FROM orders o"
            " WHERE o.user_id = r.user_id AND o.status = 'paid' AND o.amount > 0) AS bought"
            " FROM referrals r WHERE r.referrer = $1 ORDER BY r.bound_at DESC, r.user_id"
            " LIMIT $2", user, limit)
        counts = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM referrals WHERE referrer = $1) AS direct,"
            " (SELECT count(*) FROM referrals l2 JOIN referrals l1 ON l2.referrer = l1.user_id"
            "  WHERE l1.referrer = $1) AS level2", user)
    return {"user": user, "direct": counts["direct"], "level2": counts["level2"],
            "members": [{"user": r["user_id"], "bound_at": iso_time(r["bound_at"]),
                         "bought": r["bought"]} for r in members]}


async def tax_report(pool: asyncpg.Pool, year: int) -> list[dict[str, Any]]:
    """The users flagged for `year`'s tax (个税), with the income that flagged them and
    their settled commission that year so far, in the order they were flagged."""
    rows = await pool.fetch(
        "SELECT user_id, income, flagged_at FROM tax_flags WHERE year = $1"
        " ORDER BY flagged_at, user_id", year)
    return [{"user": r["user_id"], "income": int(r["income"]),
             "flagged_at": iso_time(r["flagged_at"])} for r in rows]


async def commissions(pool: asyncpg.Pool, user: str, limit: int) -> dict[str, Any]:
    """A user's commission balances (fen: pending, available, held by withdrawals not
    yet paid, and `debt`: what they owe after a refund of settled commission their
    available balance could not cover, from 0 up) and their newest commissions."""
    accounts = {"pending": pending(user), "available": available(user),
                "withdrawing": withdrawing(user), "debt": debt(user)}
    async with pool.acquire() as conn:
        sums = await conn.fetch(
            "SELECT account, sum(amount) AS total FROM ledger_entries"
            " WHERE account = ANY($1::text[]) GROUP BY account", list(accounts.values()))
        rows = await conn.fetch(
            "SELECT * FROM commissions WHERE beneficiary = $1 ORDER BY id DESC LIMIT $2",
            user, limit)
    totals = {r["account"]: int(r["total"]) for r in sums}
    balance = {name: totals.get(account, 0) for name, account in accounts.items()}
    balance["debt"] = -balance["debt"]  # the account is negative by what is owed
    return {
        "balance": balance,
        "commissions": [
            {"id": r["id"], "order": r["order_id"], "level": r["level"], "buyer": r["buyer"],
             "campaign": r["campaign"], "base": r["base"], "rate_bps": r["rate_bps"],
             "amount": r["amount"], "status": r["status"],
             # Fen taken back by refunds so far (in pieces, or after it settled).
             "reversed": r["reversed"],
             "settle_at": iso_time(r["settle_at"]), "created_at": iso_time(r["created_at"]),
             "closed_at": iso_time(r["closed_at"])}
            for r in rows
        ],
    }


async def outbox_lag(pool: asyncpg.Pool) -> tuple[int, float]:
    """Pending outbox rows and the age in seconds of the oldest one."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
        " FROM outbox WHERE processed_at IS NULL"
    )
    return int(row["n"]), float(row["age"])


def withdrawal_view(row: asyncpg.Record) -> dict[str, Any]:
    """A withdrawal as the API shows it."""
    return {"id": row["id"], "user": row["user_id"], "amount": row["amount"],
            "fee": row["fee"], "net": row["amount"] - row["fee"],
            "status": row["status"], "payout_ref": row["payout_ref"],
            "reviewer": row["reviewer"], "note": row["note"],
            "created_at": iso_time(row["created_at"]), "closed_at": iso_time(row["closed_at"])}


async def user_withdrawals(pool: asyncpg.Pool, user: str, limit: int) -> list[dict[str, Any]]:
    """A user's withdrawals, newest first."""
    rows = await pool.fetch(
        "SELECT * FROM withdrawals WHERE user_id = $1 ORDER BY id DESC LIMIT $2", user, limit)
    return [withdrawal_view(r) for r in rows]


async def withdrawals_in(pool: asyncpg.Pool, status: str, limit: int) -> list[dict[str, Any]]:
    """Everyone's withdrawals in `status`, newest first (what marketers review)."""
    rows = await pool.fetch(
        "SELECT * FROM withdrawals WHERE status = $1 ORDER BY id DESC LIMIT $2", status, limit)
    return [withdrawal_view(r) for r in rows]
