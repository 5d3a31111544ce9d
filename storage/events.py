"""The event store: load a stream, and commit a batch of commands in one transaction.

A batch carries the events of many commands, the read-model rows they changed, the
outbox rows for the pipeline and the idempotency answers. Committing all of it in one
transaction is the group commit: one fsync for every command that arrived together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import asyncpg

from games.core import ANSWERS_KEPT_DAYS, ReadModel
from storage import read_models

OUTBOX_CHANNEL = "fission_outbox"


@dataclass(frozen=True)
class StoredEvent:
    stream: str
    version: int
    type: str
    data: dict[str, Any]


@dataclass
class Batch:
    """Everything one group commit writes."""

    events: list[StoredEvent] = field(default_factory=list)
    # Read-model rows by (table, campaign, instance): the latest row of each instance.
    rows: dict[tuple[str, str, str], tuple[ReadModel, tuple[Any, ...]]] = field(
        default_factory=dict)
    outbox: list[StoredEvent] = field(default_factory=list)
    # (stream, user, key, the answer record as JSON text: the owner keeps that same text)
    results: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.results)


# One statement, so one round trip and one implicit transaction: every data-modifying
# CTE runs to completion, atomically, whether or not the final SELECT reads it.
@lru_cache(maxsize=64)
def _commit_sql(models: tuple[ReadModel, ...]) -> str:
    parts = [
        "ev AS (INSERT INTO events (stream, version, type, data)"
        " SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::jsonb[]))",
        "ob AS (INSERT INTO outbox (stream, version, type, data)"
        " SELECT * FROM unnest($5::text[], $6::bigint[], $7::text[], $8::jsonb[]))",
        "cr AS (INSERT INTO command_results (stream, user_id, key, result)"
        " SELECT s, u, k, r::jsonb FROM unnest($9::text[], $10::text[], $11::text[],"
        " $12::text[]) AS t(s, u, k, r) ON CONFLICT DO NOTHING)",
    ]
    first = 14  # $13 says whether to wake the pipeline
    for index, model in enumerate(models):
        body, width = read_models.upsert(model, first)
        parts.append(f"rm{index} AS ({body})")
        first += width
    return (f"WITH {', '.join(parts)} "
            f"SELECT pg_notify('{OUTBOX_CHANNEL}', '') WHERE $13::bool")


def _columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    return [[row[i] for row in rows] for i in range(width)] if rows else [[]] * width


async def commit(conn: asyncpg.Connection, batch: Batch) -> None:
    """Write `batch` atomically in one statement; wakes the pipeline if it has outbox rows."""
    events = _columns([(e.stream, e.version, e.type, e.data) for e in batch.events], 4)
    outbox = _columns([(e.stream, e.version, e.type, e.data) for e in batch.outbox], 4)
    results = _columns(list(batch.results), 4)
    by_model: dict[ReadModel, list[tuple[Any, ...]]] = {}
    for model, row in batch.rows.values():
        by_model.setdefault(model, []).append(row)
    models = read_models.tables(by_model)
    rows = [column for model in models for column in read_models.arguments(model,
                                                                            by_model[model])]
    await conn.execute(_commit_sql(models), *events, *outbox, *results, bool(batch.outbox),
                       *rows)


async def load_stream(conn: asyncpg.Connection | asyncpg.Pool, stream: str) -> list[StoredEvent]:
    """Every event of `stream`, in order."""
    rows = await conn.fetch(
        "SELECT version, type, data FROM events WHERE stream = $1 ORDER BY version", stream
    )
    return [StoredEvent(stream, r["version"], r["type"], r["data"]) for r in rows]


# How long an idempotency key is remembered across owner restarts.
RESULT_RETENTION_DAYS = ANSWERS_KEPT_DAYS


async def load_results(
    conn: asyncpg.Connection | asyncpg.Pool, stream: str, days: int = RESULT_RETENTION_DAYS
) -> list[tuple[str, str, str, str | None, str | None, int]]:
    """Stored answers of `stream`'s commands from the last `days` days, oldest first:
    (user, key, fingerprint, the answer as JSON text or None, the game's note instead of
    it or None, stored at in epoch ms). Text as Postgres renders it: the owner keeps
    answers as text and parses one only on a retry."""
    rows = await conn.fetch(
        "SELECT user_id, key, result->>'fingerprint' AS fingerprint,"
        " (result->'answer')::text AS answer, result->>'note' AS note,"
        " created_at FROM command_results"
        " WHERE stream = $1 AND created_at > now() - make_interval(days => $2)"
        " ORDER BY created_at",
        stream, days,
    )
    return [(r["user_id"], r["key"], r["fingerprint"], r["answer"], r["note"],
             read_models.epoch_ms(r["created_at"])) for r in rows]


async def forget_results(conn: asyncpg.Connection | asyncpg.Pool, stream: str,
                         days: int = RESULT_RETENTION_DAYS) -> int:
    """Delete answers older than the retention (plus a day of slack); how many."""
    status = await conn.execute(
        "DELETE FROM command_results WHERE stream = $1"
        " AND created_at < now() - make_interval(days => $2)", stream, days + 1,
    )
    return int(status.split()[-1])


async def stream_version(conn: asyncpg.Connection | asyncpg.Pool, stream: str) -> int:
    """The number of events in `stream` (versions run 1..n)."""
    value = await conn.fetchval(
        "SELECT coalesce(max(version), 0) FROM events WHERE stream = $1", stream)
    return int(value)

