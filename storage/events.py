"""The event store: load a stream, and commit a batch of commands in one transaction.

A batch carries the events of many commands, the read-model rows they changed, the
outbox rows for the pipeline and the idempotency answers. Committing all of it in one
transaction is the group commit: one fsync for every command that arrived together.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

OUTBOX_CHANNEL = "fission_outbox"


@dataclass(frozen=True)
class StoredEvent:
    stream: str
    version: int
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class GroupRow:
    """A group's read-model row (times in epoch ms)."""

    campaign: str
    id: str
    status: str
    leader: str
    members: tuple[str, ...]
    size: int
    virtual_members: int
    price: int
    created_at: int
    expires_at: int
    version: int


@dataclass
class Batch:
    """Everything one group commit writes."""

    events: list[StoredEvent] = field(default_factory=list)
    groups: dict[tuple[str, str], GroupRow] = field(default_factory=dict)
    outbox: list[StoredEvent] = field(default_factory=list)
    # (stream, user, key, the answer record as JSON text: the owner keeps that same text)
    results: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.results)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# One statement, so one round trip and one implicit transaction: every data-modifying
# CTE runs to completion, atomically, whether or not the final SELECT reads it.
_COMMIT = f"""
WITH ev AS (
    INSERT INTO events (stream, version, type, data)
    SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[])
), gr AS (
    INSERT INTO groups (campaign, id, status, leader, members, size, virtual_members, price,
                        created_at, expires_at, version)
    SELECT g.campaign, g.id, g.status, g.leader,
           ARRAY(SELECT jsonb_array_elements_text(g.members::jsonb)),
           g.size, g.virtual_members, g.price, g.created_at, g.expires_at, g.version
    FROM unnest($5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::int[],
                $11::int[], $12::bigint[], $13::timestamptz[], $14::timestamptz[], $15::int[])
         AS g(campaign, id, status, leader, members, size, virtual_members, price,
              created_at, expires_at, version)
    ON CONFLICT (campaign, id) DO UPDATE SET
        status = EXCLUDED.status, members = EXCLUDED.members,
        virtual_members = EXCLUDED.virtual_members, version = EXCLUDED.version,
        updated_at = now()
), ob AS (
    INSERT INTO outbox (stream, version, type, data)
    SELECT * FROM unnest($16::text[], $17::bigint[], $18::text[], $19::jsonb[])
), cr AS (
    INSERT INTO command_results (stream, user_id, key, result)
    SELECT s, u, k, r::jsonb FROM unnest($20::text[], $21::text[], $22::text[], $23::text[])
        AS t(s, u, k, r)
    ON CONFLICT DO NOTHING
)
SELECT pg_notify('{OUTBOX_CHANNEL}', '') WHERE $24::bool
"""


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)] if rows else [[]] * width


async def commit(conn: asyncpg.Connection, batch: Batch) -> None:
    """Write `batch` atomically in one statement; wakes the pipeline if it has outbox rows."""
    events = _columns([(e.stream, e.version, e.type, e.data) for e in batch.events], 4)
    groups = _columns([
        (g.campaign, g.id, g.status, g.leader, json.dumps(list(g.members)), g.size,
         g.virtual_members, g.price, _ts(g.created_at), _ts(g.expires_at), g.version)
        for g in batch.groups.values()
    ], 11)
    outbox = _columns([(e.stream, e.version, e.type, e.data) for e in batch.outbox], 4)
    results = _columns(list(batch.results), 4)
    await conn.execute(_COMMIT, *events, *groups, *outbox, *results, bool(batch.outbox))


async def load_stream(conn: asyncpg.Connection | asyncpg.Pool, stream: str) -> list[StoredEvent]:
    """Every event of `stream`, in order."""
    rows = await conn.fetch(
        "SELECT version, type, data FROM events WHERE stream = $1 ORDER BY version", stream
    )
    return [StoredEvent(stream, r["version"], r["type"], r["data"]) for r in rows]


# How long an idempotency key is remembered across owner restarts.
RESULT_RETENTION_DAYS = 1


async def load_results(
    conn: asyncpg.Connection | asyncpg.Pool, stream: str, days: int = RESULT_RETENTION_DAYS
) -> list[tuple[str, str, str, str, int]]:
    """Stored answers of `stream`'s commands from the last `days` days, oldest first:
    (user, key, fingerprint, the answer as JSON text, stored at in epoch ms). Text as
    Postgres renders it: the owner keeps answers as text and parses one only on a retry."""
    rows = await conn.fetch(
        "SELECT user_id, key, result->>'fingerprint' AS fingerprint,"
        " (result->'answer')::text AS answer, created_at FROM command_results"
        " WHERE stream = $1 AND created_at > now() - make_interval(days => $2)"
        " ORDER BY created_at",
        stream, days,
    )
    return [(r["user_id"], r["key"], r["fingerprint"], r["answer"], _ms(r["created_at"]))
            for r in rows]


async def forget_results(conn: asyncpg.Connection | asyncpg.Pool, stream: str,
                         days: int = RESULT_RETENTION_DAYS) -> int:
    """Delete answers older than the retention (plus a day of slack); how many."""
    status = await conn.execute(
        "DELETE FROM command_results WHERE stream = $1"
        " AND created_at < now() - make_interval(days => $2)", stream, days + 1,
    )
    return int(status.split()[-1])


async def load_groups(conn: asyncpg.Connection | asyncpg.Pool, campaign: str) -> list[GroupRow]:
    """Every stored group of a campaign (the read model doubles as the owner's snapshot)."""
    rows = await conn.fetch("SELECT * FROM groups WHERE campaign = $1", campaign)
    return [
        GroupRow(
            campaign=r["campaign"], id=r["id"], status=r["status"], leader=r["leader"],
            members=tuple(r["members"]), size=r["size"], virtual_members=r["virtual_members"],
            price=r["price"], created_at=_ms(r["created_at"]), expires_at=_ms(r["expires_at"]),
            version=r["version"],
        )
        for r in rows
    ]


async def stream_version(conn: asyncpg.Connection | asyncpg.Pool, stream: str) -> int:
    """The number of events in `stream` (versions run 1..n)."""
    value = await conn.fetchval(
        "SELECT coalesce(max(version), 0) FROM events WHERE stream = $1", stream)
    return int(value)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
