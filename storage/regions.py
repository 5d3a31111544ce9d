"""Where users are: the `region` claim of each user's token, as a gateway last saw it.

A leaderboard ranks a seller in the region recorded for them when their order's notice
is written (actors.notices). A gateway records the claim when the user acts, remembering
what it wrote for a while (`TTL_S`), so a user's calls cost a write per change of region
and per minute, not one per call. The while is bounded because another gateway may have
recorded another region for the user since: the claim this gateway sees wins again
within a minute.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

import asyncpg

log = logging.getLogger("fission.regions")

CACHED = 100_000  # users a gateway remembers the recorded region of
TTL_S = 60.0  # seconds a gateway trusts what it wrote


class Regions:
    """Records users' regions in `user_regions`, skipping what is recorded already."""

    def __init__(self, pool: asyncpg.Pool, cached: int = CACHED, ttl: float = TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._pool = pool
        self._cached = cached
        self._ttl = ttl
        self._clock = clock
        self._known: OrderedDict[str, tuple[str, float]] = OrderedDict()  # user: (region, until)

    async def note(self, user: str, region: str | None) -> None:
        """Record that `user` acts from `region` (None: the token has no region; what was
        recorded stays)."""
        if region is None:
            return
        known = self._known.get(user)
        if known is not None and known[0] == region and self._clock() < known[1]:
            return
        try:
            await self._pool.execute(
                "INSERT INTO user_regions (user_id, region) VALUES ($1, $2)"
                " ON CONFLICT (user_id) DO UPDATE SET region = EXCLUDED.region,"
                " updated_at = now() WHERE user_regions.region IS DISTINCT FROM"
                " EXCLUDED.region", user, region)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            # A record for the boards, not the user's call: that goes on (if it can
            # without Postgres), and the next call records it.
            log.warning("the region of %s could not be recorded", user, exc_info=True)
            return
        self._known[user] = (region, self._clock() + self._ttl)
        self._known.move_to_end(user)
        if len(self._known) > self._cached:
            self._known.popitem(last=False)


async def region_of(conn: asyncpg.Connection | asyncpg.Pool, user: str) -> str | None:
    """The region recorded for `user`, if any."""
    found: str | None = await conn.fetchval(
        "SELECT region FROM user_regions WHERE user_id = $1", user)
    return found
