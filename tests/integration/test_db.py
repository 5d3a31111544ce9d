"""Pooled Postgres connections come back clean without a reset statement per release."""

from __future__ import annotations

import pytest

from storage import db
from tests.support.services import Services

pytestmark = pytest.mark.integration


async def test_a_transaction_left_open_is_rolled_back_on_release(migrated: Services) -> None:
    pool = await db.create_pool(migrated.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TEMP TABLE IF NOT EXISTS pool_probe (n int)")
            await conn.execute("BEGIN")
            await conn.execute("INSERT INTO pool_probe VALUES (1)")
            # released mid-transaction, as a cancelled commit would leave it
        async with pool.acquire() as conn:  # the same session: the pool holds one
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SELECT count(*) FROM pool_probe") == 0
    finally:
        await pool.close()


async def test_release_sends_no_reset_statement(migrated: Services) -> None:
    """One statement per use: a shard commit or a gateway read is one round trip."""
    pool = await db.create_pool(migrated.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            before = conn._protocol.queries_count  # asyncpg's own count of statements sent
        for _ in range(3):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
        async with pool.acquire() as conn:
            assert conn._protocol.queries_count - before == 3
    finally:
        await pool.close()
