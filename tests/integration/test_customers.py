"""The `newcomer` fact's lookups (server.customers) against a real Postgres: a burst of
asks is one round trip, users who ordered are remembered, the others asked again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from server.customers import Customers
from storage import db
from tests.support.services import Services


@pytest.fixture
async def pool(clean: Services) -> AsyncIterator[asyncpg.Pool]:
    created = await db.create_pool(clean.database_url, min_size=1, max_size=2)
    yield created
    await created.close()


async def _order(pool: asyncpg.Pool, user: str) -> None:
    await pool.execute(
        "INSERT INTO orders (campaign, kind, instance, line, user_id, sku, amount, status,"
        " payment_ref) VALUES ('c1', 'groupbuy', 'g-' || $1, $1, $1, 'SKU', 100, 'paid', 'p')",
        user)


async def test_a_burst_of_asks_is_one_query_with_each_answer_right(
        pool: asyncpg.Pool) -> None:
    for user in ("buyer-0", "buyer-1", "buyer-2"):
        await _order(pool, user)
    customers = Customers(pool)
    users = [f"buyer-{i}" for i in range(3)] + [f"new-{i}" for i in range(200)]
    answers = await asyncio.gather(*(customers.has_ordered(u) for u in users * 2))
    assert answers == [u.startswith("buyer-") for u in users * 2]
    assert customers.queries == 1


async def test_a_steady_stream_of_asks_goes_in_spaced_queries(pool: asyncpg.Pool) -> None:
    """Asks arriving one loop turn after another, as helps arriving one by one do, wait
    out the spacing after the query before and go in one query together (without it,
    the first would go alone and the rest in a third)."""
    await _order(pool, "u-3")
    spaced = asyncio.Event()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the spacing, until the test says it is over
        waits.append(seconds)
        await spaced.wait()

    customers = Customers(pool, spacing=60.0, sleep=sleep)
    assert await customers.has_ordered("first") is False
    asks = []
    for n in range(20):
        asks.append(asyncio.ensure_future(customers.has_ordered(f"u-{n}")))
        await asyncio.sleep(0)  # the next ask arrives on the loop's next turn
    assert customers.queries == 1 and len(waits) == 1 and 0 < waits[0] <= 60.0
    spaced.set()
    assert await asyncio.gather(*asks) == [n == 3 for n in range(20)]
    assert customers.queries == 2


async def test_the_first_ask_after_a_quiet_spell_is_not_held(pool: asyncpg.Pool) -> None:
    held: list[float] = []

    async def sleep(seconds: float) -> None:
        held.append(seconds)

    customers = Customers(pool, spacing=3600.0, sleep=sleep)
    assert await customers.has_ordered("first") is False
    assert held == []  # no query before it: asked at once
    assert await customers.has_ordered("second") is False
    assert len(held) == 1 and 3599.0 < held[0] <= 3600.0  # within the first's spacing
    assert customers.queries == 2


async def test_who_ordered_is_remembered_and_who_did_not_is_asked_again(
        pool: asyncpg.Pool) -> None:
    customers = Customers(pool)
    assert await customers.has_ordered("later") is False
    await _order(pool, "later")
    assert await customers.has_ordered("later") is True  # asked again: not remembered
    asked = customers.queries
    await pool.execute("DELETE FROM orders")  # never happens; proves no query is made
    assert await customers.has_ordered("later") is True
    assert customers.queries == asked


async def test_memory_is_bounded(pool: asyncpg.Pool) -> None:
    for user in ("a", "b", "c"):
        await _order(pool, user)
    customers = Customers(pool, remembered=2)
    for user in ("a", "b", "c"):
        assert await customers.has_ordered(user)
    asked = customers.queries
    assert await customers.has_ordered("c") and await customers.has_ordered("b")
    assert customers.queries == asked
    assert await customers.has_ordered("a")  # the least recently asked was let go
    assert customers.queries == asked + 1


async def test_a_caller_that_gives_up_leaves_the_others_their_answer(
        pool: asyncpg.Pool) -> None:
    await _order(pool, "shared")
    customers = Customers(pool)
    leaving = asyncio.ensure_future(customers.has_ordered("shared"))
    staying = asyncio.ensure_future(customers.has_ordered("shared"))
    await asyncio.sleep(0)  # one turn of the loop: both now wait on the one lookup
    leaving.cancel()
    assert await staying is True
    with pytest.raises(asyncio.CancelledError):
        await leaving


async def test_postgres_down_is_the_pools_error_for_every_asker(clean: Services) -> None:
    broken = await db.create_pool(clean.database_url, min_size=1, max_size=1)
    customers = Customers(broken)
    await broken.close()
    results = await asyncio.gather(customers.has_ordered("x"), customers.has_ordered("y"),
                                   return_exceptions=True)
    assert all(isinstance(r, asyncpg.InterfaceError) for r in results), results
    assert customers.queries == 1
