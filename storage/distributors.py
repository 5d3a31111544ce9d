"""Distributors (分销员) in Postgres: applications, marketers' decisions, grades.

The writes run on a connection inside the pipeline's transaction (the pipeline is the
one writer of who earns what); the reads take a pool, for the gateway. Set-based: the
pipeline asks about a whole batch's users in one statement. The rules (who may earn,
what a grade takes) live in `games.commission`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from games.commission import GradeStats
from storage.reads import iso_time

STATUSES = ("applied", "approved", "revoked")
# Grades are raised under one transaction-scoped advisory lock: two settlements at once
# must not both raise a user from the same grade (nor the slower lower a higher one).
_GRADE_LOCK = 0x46495347  # "FISG"

# A user's own spend: what their orders whose deal is done kept, refunded pieces off.
_SPEND = ("SELECT user_id, sum(amount - refunded_amount) AS spend FROM orders"
          " WHERE user_id = ANY($1::text[]) AND status = 'paid' AND confirmed_at IS NOT NULL"
          " GROUP BY user_id")


@dataclass(frozen=True)
class GradeChange:
    """A user's grade raised from `before` to `after` on `stats`."""

    user: str
    before: str
    after: str
    stats: GradeStats


def view(row: asyncpg.Record) -> dict[str, Any]:
    """A distributor row as the API shows it."""
    return {"user": row["user_id"], "status": row["status"],
            "applied_at": iso_time(row["applied_at"]),
            "decided_at": iso_time(row["decided_at"]), "decided_by": row["decided_by"]}


async def lock(conn: asyncpg.Connection, user: str) -> asyncpg.Record | None:
    """`user`'s distributor row, locked for the rest of the transaction."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM distributors WHERE user_id = $1 FOR UPDATE", user)
    return row


async def apply(conn: asyncpg.Connection, user: str, now: datetime) -> asyncpg.Record:
    """Record `user`'s application (a first one, or again after a revocation) at `now`
    (the pipeline's clock)."""
    row: asyncpg.Record = await conn.fetchrow(
        "INSERT INTO distributors (user_id, status, applied_at) VALUES ($1, 'applied', $2)"
        " ON CONFLICT (user_id) DO UPDATE SET status = 'applied', applied_at = $2"
        " RETURNING *", user, now)
    await _changed(conn, user, "applied", user, now)
    return row


async def decide(conn: asyncpg.Connection, user: str, status: str, marketer: str,
                 now: datetime) -> asyncpg.Record:
    """Set `user`'s status to `status` ("approved" or "revoked") by `marketer` at `now`
    (the pipeline's clock)."""
    row: asyncpg.Record = await conn.fetchrow(
        "UPDATE distributors SET status = $2, decided_at = $4, decided_by = $3"
        " WHERE user_id = $1 RETURNING *", user, status, marketer, now)
    await _changed(conn, user, status, marketer, now)
    return row


async def _changed(conn: asyncpg.Connection, user: str, status: str, actor: str,
                   now: datetime) -> None:
    await conn.execute("INSERT INTO distributor_changes (user_id, status, actor, at)"
                       " VALUES ($1, $2, $3, $4)", user, status, actor, now)


async def eligible(conn: asyncpg.Connection, users: Sequence[str], earners: str,
                   min_spend: int) -> set[str]:
    """Those of `users` who may earn under `earners` (games.commission.may_earn), in
    one statement whatever the batch."""
    wanted = sorted(set(users))
    if earners == "everyone" or not wanted:
        return set(wanted)
    if earners == "approved":
        rows = await conn.fetch("SELECT user_id FROM distributors WHERE status = 'approved'"
                                " AND user_id = ANY($1::text[])", wanted)
        return {r["user_id"] for r in rows}
    rows = await conn.fetch(f"{_SPEND} HAVING sum(amount) >= $2", wanted, min_spend)
    return {r["user_id"] for r in rows}


async def lock_grades(conn: asyncpg.Connection) -> None:
    """Serialise grade changes until the transaction ends."""
    await conn.execute("SELECT pg_advisory_xact_lock($1)", _GRADE_LOCK)


async def grades(conn: asyncpg.Connection, users: Sequence[str]) -> dict[str, str]:
    """The recorded grade of those of `users` who have one."""
    rows = await conn.fetch("SELECT user_id, grade FROM distributor_grades"
                            " WHERE user_id = ANY($1::text[])", sorted(set(users)))
    return {r["user_id"]: r["grade"] for r in rows}


def month_of(now: datetime, zone: str) -> tuple[datetime, datetime]:
    """The calendar month `now` falls in, in `zone`: its first instant and the next's."""
    local = now.astimezone(ZoneInfo(zone))
    start = datetime(local.year, local.month, 1, tzinfo=ZoneInfo(zone))
    year, month = (local.year + 1, 1) if local.month == 12 else (local.year, local.month + 1)
    return start, datetime(year, month, 1, tzinfo=ZoneInfo(zone))


async def grade_stats(conn: asyncpg.Connection, users: Sequence[str], now: datetime,
                      zone: str) -> dict[str, GradeStats]:
    """What each of `users` is graded on at `now` (games.commission.GradeStats): one
    statement for the batch. Settled sales count level-1 commissions (orders the user
    brought, or their own under self-purchase) whose settlement fell in `now`'s calendar
    month in `zone`, by what their orders kept (the order's amount less what it refunded,
    so a refunded sale lifts nobody)."""
    start, end = month_of(now, zone)
    rows = await conn.fetch(
        "WITH u AS (SELECT DISTINCT unnest($1::text[]) AS user_id),"
        " sales AS (SELECT c.beneficiary AS user_id, sum(c.base - o.refunded_amount) AS fen"
        "  FROM commissions c JOIN orders o ON o.id = c.order_id"
        "  WHERE c.beneficiary = ANY($1::text[]) AND c.level = 1 AND c.status = 'settled'"
        "  AND c.closed_at >= $2 AND c.closed_at < $3 GROUP BY c.beneficiary),"
        " buyers AS (SELECT r.referrer AS user_id, count(*) AS n FROM referrals r"
        "  WHERE r.referrer = ANY($1::text[]) AND EXISTS (SELECT 1 FROM orders o"
        "  WHERE o.user_id = r.user_id AND o.status = 'paid' AND o.amount > 0"
        "  AND o.confirmed_at IS NOT NULL) GROUP BY r.referrer),"
        f" spend AS ({_SPEND})"
        " SELECT u.user_id, coalesce(sales.fen, 0) AS sales, coalesce(buyers.n, 0) AS buyers,"
        " coalesce(spend.spend, 0) AS spend FROM u LEFT JOIN sales USING (user_id)"
        " LEFT JOIN buyers USING (user_id) LEFT JOIN spend USING (user_id)",
        sorted(set(users)), start, end)
    return {r["user_id"]: GradeStats(int(r["sales"]), int(r["buyers"]), int(r["spend"]))
            for r in rows}


async def raise_grades(conn: asyncpg.Connection, changes: Sequence[GradeChange],
                       now: datetime) -> None:
    """Record `changes`: each user's grade now, and a history row each."""
    if not changes:
        return
    await conn.execute(
        "INSERT INTO distributor_grades (user_id, grade, since)"
        " SELECT u, g, $3 FROM unnest($1::text[], $2::text[]) AS c(u, g)"
        " ON CONFLICT (user_id) DO UPDATE SET grade = excluded.grade, since = excluded.since",
        [c.user for c in changes], [c.after for c in changes], now)
    await conn.execute(
        "INSERT INTO grade_changes (user_id, from_grade, to_grade, sales_month,"
        " direct_buyers, own_spend, changed_at) SELECT *, $7::timestamptz FROM unnest("
        "$1::text[], $2::text[], $3::text[], $4::bigint[], $5::int[], $6::bigint[])",
        [c.user for c in changes], [c.before for c in changes], [c.after for c in changes],
        [c.stats.sales_month for c in changes], [c.stats.direct_buyers for c in changes],
        [c.stats.own_spend for c in changes], now)


async def listing(pool: asyncpg.Pool, status: str, limit: int) -> list[dict[str, Any]]:
    """Distributors of `status`, longest waiting (or applied) first."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM distributors WHERE status = $1 ORDER BY applied_at, user_id"
            " LIMIT $2", status, limit)
    return [view(r) for r in rows]


async def standing(pool: asyncpg.Pool, user: str) -> dict[str, Any]:
    """What the gateway shows a user of themselves: their distributor row (None: never
    applied), their own spend, their recorded grade and its history (newest first)."""
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM distributors WHERE user_id = $1", user)
        spend = await conn.fetchval(
            "SELECT coalesce(sum(amount), 0) FROM orders WHERE user_id = $1"
            " AND status = 'paid' AND confirmed_at IS NOT NULL", user)
        grade = await conn.fetchrow(
            "SELECT grade, since FROM distributor_grades WHERE user_id = $1", user)
        history = await conn.fetch(
            "SELECT from_grade, to_grade, changed_at FROM grade_changes WHERE user_id = $1"
            " ORDER BY id DESC LIMIT 20", user)
    return {"distributor": None if row is None else view(row), "own_spend": int(spend),
            "grade": None if grade is None else grade["grade"],
            "grade_since": None if grade is None else iso_time(grade["since"]),
            "grade_history": [{"from": h["from_grade"], "to": h["to_grade"],
                               "at": iso_time(h["changed_at"])} for h in history]}
