"""The rank cache: a Redis sorted set per ranking of a ranked read model (games.core.Ranked).

Postgres holds the truth (the read model's entry rows); the cache answers rank reads in
O(log n). An entry is the member `{order:020d}|{member}` at score `-score`: Redis orders
a sorted set by score and equal scores by member bytes, so ascending order is exactly
higher score first, then lower `order` (the ranking's tie-break), then member, and
ZRANK is the exact rank. A hash per ranking maps each member to its current entry, so an
update removes the old one. The owner writes the rows each commit changed, after the
commit, with the stream version they bring the cache to; at start, a cache whose version
is not the stream's (missing, or behind after a failed write) is rebuilt from Postgres,
and so is one the owner finds, while it runs, at another version than it last wrote
(gone, or restored from an older snapshot).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import asyncpg
import redis.asyncio as aioredis

from games.core import RankRead, ReadModel
from storage import redis_keys

# One entry: drop the member's old entry, add the new one (score 0: leave the ranking).
_PUT = """
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then redis.call('ZREM', KEYS[1], old) end
if ARGV[3] == '0' then
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], '-' .. ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
end
return 1
"""
# A member's (0-based rank, score), or nil.
_MINE = """
local entry = redis.call('HGET', KEYS[2], ARGV[1])
if not entry then return false end
return {redis.call('ZRANK', KEYS[1], entry), redis.call('ZSCORE', KEYS[1], entry)}
"""
_GROUP_SEP = ":"


def _entry(order: int, member: str) -> str:
    return f"{order:020d}|{member}"


def _member(entry: bytes | str) -> str:
    text = entry.decode() if isinstance(entry, bytes) else entry
    return text.split("|", 1)[1]


def _score(raw: Any) -> int:
    return -int(float(raw))


def entries(model: ReadModel, rows: Iterable[Mapping[str, Any] | Sequence[Any]]
            ) -> list[tuple[tuple[str, ...], str, int, int]]:
    """The ranking entries among `rows` (mappings, or tuples in the model's column
    order): (group, member, score, order)."""
    ranked = model.ranked
    if ranked is None:
        return []
    names = [c.name for c in model.columns]
    found = []
    for row in rows:
        values = row if isinstance(row, Mapping) else dict(zip(names, row, strict=True))
        if values["status"] != ranked.status:
            continue
        group = tuple(str(values[c]) for c in ranked.group)
        found.append((group, str(values[ranked.member]), int(values[ranked.score] or 0),
                      int(values[ranked.order] or 0)))
    return found


class RankCache:
    """The rank cache of ranked read models, on one Redis client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._put = client.register_script(_PUT)
        self._mine = client.register_script(_MINE)

    async def write(self, campaign: str, found: Sequence[tuple[tuple[str, ...], str, int, int]],
                    version: int) -> int | None:
        """Apply `found` entries (see `entries`) and mark the cache at stream `version`;
        the version it was at before (None: Redis lost it, say by a restart without
        persistence). A writer that finds a version other than the one it last wrote
        knows the cache is not what it wrote (lost, or restored from an older snapshot)
        and holds only part of the truth: it rebuilds it."""
        async with self.client.pipeline(transaction=True) as pipe:
            groups = set()
            for group, member, score, order in found:
                groups.add(_GROUP_SEP.join(group))
                await self._put(keys=[redis_keys.ranking(campaign, group),
                                      redis_keys.ranking_members(campaign, group)],
                                args=[member, _entry(order, member), score], client=pipe)
            if groups:
                pipe.sadd(redis_keys.rankings(campaign), *sorted(groups))
            pipe.getset(redis_keys.ranks_version(campaign), version)
            replies = await pipe.execute()
        return None if replies[-1] is None else int(replies[-1])

    async def version(self, campaign: str) -> int | None:
        """The stream version the campaign's cache is at (None: no cache)."""
        raw = await self.client.get(redis_keys.ranks_version(campaign))
        return None if raw is None else int(raw)

    async def forget(self, campaign: str) -> None:
        """Mark the campaign's cache stale (a failed write): whoever next finds it at no
        version (the owner's next commit, or its next start) rebuilds it."""
        await self.client.delete(redis_keys.ranks_version(campaign))

    async def rebuild(self, pool: asyncpg.Pool | asyncpg.Connection, model: ReadModel,
                      campaign: str, version: int) -> int:
        """Replace the campaign's cache by its rows in Postgres; how many entries."""
        ranked = model.ranked
        assert ranked is not None
        known = await self.client.smembers(redis_keys.rankings(campaign))
        stale = [redis_keys.rankings(campaign), redis_keys.ranks_version(campaign)]
        for raw in known:
            group = tuple((raw.decode() if isinstance(raw, bytes) else raw).split(_GROUP_SEP))
            stale += [redis_keys.ranking(campaign, group),
                      redis_keys.ranking_members(campaign, group)]
        rows = await pool.fetch(
            f"SELECT * FROM {model.table} WHERE campaign = $1 AND status = $2", campaign,
            ranked.status)
        found = [e for e in entries(model, [dict(r) for r in rows]) if e[2] > 0]
        by_group: dict[tuple[str, ...], list[tuple[str, int, int]]] = defaultdict(list)
        for group, member, score, order in found:
            by_group[group].append((member, score, order))
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(*stale)
            for group, members in by_group.items():
                pipe.zadd(redis_keys.ranking(campaign, group),
                          {_entry(order, m): -score for m, score, order in members})
                pipe.hset(redis_keys.ranking_members(campaign, group),
                          mapping={m: _entry(order, m) for m, _, order in members})
            if by_group:
                pipe.sadd(redis_keys.rankings(campaign),
                          *sorted(_GROUP_SEP.join(g) for g in by_group))
            pipe.set(redis_keys.ranks_version(campaign), version)
            await pipe.execute()
        return len(found)

    async def read(self, campaign: str, read: RankRead
                   ) -> tuple[int, list[tuple[str, int]], tuple[int, int] | None]:
        """Answer `read`: (first position, entries (member, score), the member's own
        (0-based rank, score) or None)."""
        key = redis_keys.ranking(campaign, read.group)
        found = await self._mine(keys=[key, redis_keys.ranking_members(campaign, read.group)],
                                 args=[read.member])
        me = None if not found else (int(found[0]), _score(found[1]))
        if read.around is None:
            first, last = read.start, read.start + read.count - 1
        elif me is None:
            return 0, [], None
        else:
            first, last = max(0, me[0] - read.around), me[0] + read.around
        rows = cast(list[tuple[bytes, float]],
                    await self.client.zrange(key, first, last, withscores=True))
        return first, [(_member(entry), _score(score)) for entry, score in rows], me
