"""The event store: load a stream, and commit a batch of commands in one transaction.

A batch carries the events of many commands, the read-model rows they changed, the
outbox rows for the pipeline and the idempotency answers. Committing all of it in one
transaction is the group commit: one fsync for every command that arrived together.
"""

from __future__ import annotations

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
    results: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.events or self.results)


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


async def commit(conn: asyncpg.Connection, batch: Batch) -> None:
    """Write `batch` atomically; wakes the pipeline when it carries outbox rows."""
    async with conn.transaction():
        if batch.events:
            await conn.executemany(
                "INSERT INTO events (stream, version, type, data) VALUES ($1, $2, $3, $4)",
                [(e.stream, e.version, e.type, e.data) for e in batch.events],
            )
        if batch.groups:
            await conn.executemany(
                """
                INSERT INTO groups (campaign, id, status, leader, members, size,
                                    virtual_members, price, created_at, expires_at, version)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                ON CONFLICT (campaign, id) DO UPDATE SET
                    status = EXCLUDED.status, members = EXCLUDED.members,
                    virtual_members = EXCLUDED.virtual_members, version = EXCLUDED.version,
                    updated_at = now()
                """,
                [
                    (g.campaign, g.id, g.status, g.leader, list(g.members), g.size,
                     g.virtual_members, g.price, _ts(g.created_at), _ts(g.expires_at), g.version)
                    for g in batch.groups.values()
                ],
            )
        if batch.outbox:
            await conn.executemany(
                "INSERT INTO outbox (stream, version, type, data) VALUES ($1, $2, $3, $4)",
                [(e.stream, e.version, e.type, e.data) for e in batch.outbox],
            )
            await conn.execute(f"NOTIFY {OUTBOX_CHANNEL}")
        if batch.results:
            await conn.executemany(
                "INSERT INTO command_results (stream, user_id, key, result)"
                " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                batch.results,
            )


async def load_stream(conn: asyncpg.Connection | asyncpg.Pool, stream: str) -> list[StoredEvent]:
    """Every event of `stream`, in order."""
    rows = await conn.fetch(
        "SELECT version, type, data FROM events WHERE stream = $1 ORDER BY version", stream
    )
    return [StoredEvent(stream, r["version"], r["type"], r["data"]) for r in rows]


async def load_results(
    conn: asyncpg.Connection | asyncpg.Pool, stream: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """Stored answers of `stream`'s commands, by (user, key)."""
    rows = await conn.fetch(
        "SELECT user_id, key, result FROM command_results WHERE stream = $1", stream
    )
    return {(r["user_id"], r["key"]): r["result"] for r in rows}
