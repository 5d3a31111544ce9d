"""Who has ever had an order: the `newcomer` fact a game may ask of a helper.

Asked once per bargain help, so it is coalesced: the lookups that arrive while one query
runs go together in the next (one round trip for a burst, not one each), and under a
steady stream two queries start at least `SPACING` apart, so the asks of those
milliseconds go together too. Measured in the bargain's paced run with helpers arriving
one by one (~1,700 helps/s): without the spacing, 531 queries a second of 3.3 users each,
~0.3 ms of gateway and Postgres time apiece. The first ask after a quiet spell is not
held: the wait only starts counting from the query before. Having ordered is
permanent (orders are never deleted, a refunded one still counts), so users found to have
ordered are remembered and never asked about again; users who have not are asked again
next time, since they may have ordered meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import asyncpg

from storage import reads

REMEMBERED = 100_000  # users known to have ordered, least recently asked dropped first
# Seconds between two queries' starts at the least. The wait is the help's own (its fact
# comes before its command), but short beside the shard call in flight a help then
# waits for (one per shard, ~15 ms under load).
SPACING = 0.004


class Customers:
    """`has_ordered(user)` over one read pool, batched and remembered."""

    def __init__(self, pool: asyncpg.Pool, remembered: int = REMEMBERED,
                 spacing: float = SPACING,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._pool = pool
        self._remembered = remembered
        self._spacing = spacing
        self._sleep = sleep  # how the spacing is waited out (a test holds it)
        self._last_query = float("-inf")  # the loop's time the last query started
        self._ordered: OrderedDict[str, None] = OrderedDict()
        self._waiting: dict[str, asyncio.Future[bool]] = {}
        self._running = False
        self.queries = 0  # round trips made (for tests and metrics)

    async def has_ordered(self, user: str) -> bool:
        """Whether `user` has ever had an order. Raises what the pool raises when
        Postgres does not answer (nothing is remembered then)."""
        if user in self._ordered:
            self._ordered.move_to_end(user)
            return True
        waiting = self._waiting.get(user)
        if waiting is None:
            waiting = asyncio.get_running_loop().create_future()
            self._waiting[user] = waiting
            if not self._running:
                self._running = True
                asyncio.get_running_loop().create_task(self._drain())
        # Shielded: one caller giving up (its socket closed) must not cancel the answer
        # the other callers asking about the same user wait for.
        return await asyncio.shield(waiting)

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting:
                early = self._last_query + self._spacing - loop.time()
                if early > 0:
                    await self._sleep(early)  # the asks of these moments join this one
                self._last_query = loop.time()
                batch, self._waiting = self._waiting, {}
                self.queries += 1
                try:
                    found = await reads.ordered_among(self._pool, list(batch))
                except Exception as exc:  # every asker gets the storage's error
                    for future in batch.values():
                        if not future.done():
                            future.set_exception(exc)
                            future.exception()  # retrieved: askers who left log nothing
                    continue
                for user, future in batch.items():
                    if user in found:
                        self._remember(user)
                    if not future.done():
                        future.set_result(user in found)
        finally:
            self._running = False

    def _remember(self, user: str) -> None:
        self._ordered[user] = None
        self._ordered.move_to_end(user)
        while len(self._ordered) > self._remembered:
            self._ordered.popitem(last=False)
