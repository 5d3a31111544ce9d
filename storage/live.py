"""Live topics in Redis: numbered events, a bounded history per topic, pub/sub fan-out.

One Lua script call per commit appends each event's frame to its topic's history, trims
it, and publishes it, so history and live delivery never disagree about a seq.

A publish waits out a short Redis outage (a restart): the events of commits made
meanwhile reach history and every gateway once Redis is back, in order, instead of being
dropped (a watcher would then sit on a stale seq until its topic's next event). An event
with a durable seq is written once however often its call is retried.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from games import jsontext
from storage import redis_keys

# ARGV: max len, ttl, the history, seq and channel key prefixes (from redis_keys), then
# the events as one JSON array of [topic, seq (0 = next), data JSON text]. One argument
# for the lot, not six per event: packing arguments is pure Python in redis-py's asyncio
# client and cost a shard more than anything else per event. (Keys are built here, not
# declared: every topic's keys would sit in different cluster slots anyway.) One call
# publishes a commit's events in order; each event's seq and history entry are written
# before it is published. A durable seq the topic already reached was published by an
# earlier try of the same call (one whose reply the connection lost): it is skipped, so
# a retry never puts a seq in history twice.
_PUBLISH = """
local size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local hist_prefix, seq_prefix, chan_prefix = ARGV[3], ARGV[4], ARGV[5]
local batch = cjson.decode(ARGV[6])
for i = 1, #batch do
  local topic, seq, data = batch[i][1], tonumber(batch[i][2]), batch[i][3]
  local hist, seqkey, chan = hist_prefix .. topic, seq_prefix .. topic, chan_prefix .. topic
  local fresh = true
  if seq <= 0 then
    seq = redis.call('INCR', seqkey)
  else
    local cur = tonumber(redis.call('GET', seqkey) or '0')
    if seq > cur then redis.call('SET', seqkey, seq) else fresh = false end
  end
  if fresh then
    local frame = '{"op":"event","topic":' .. cjson.encode(topic) .. ',"seq":' .. seq ..
      ',"data":' .. data .. '}'
    redis.call('RPUSH', hist, frame)
    redis.call('LTRIM', hist, -size, -1)
    redis.call('EXPIRE', hist, ttl)
    redis.call('EXPIRE', seqkey, ttl)
    redis.call('PUBLISH', chan, frame)
  end
end
return #batch
"""

# Events per script call: bounds how long one call holds Redis (a script blocks it).
_CHUNK = 200

# How long publishes keep retrying once Redis stops answering (seconds from the first
# failure, shared by every publish of the outage: the calls queued behind the first one
# do not each wait that long again); after it, a publish fails at its first error.
RETRY_FOR = 30.0
_FIRST_DELAY = 0.1
_LONGEST_DELAY = 2.0


@dataclass(frozen=True)
class LiveEvent:
    """An event for a topic; `seq` 0 lets Redis number it (topics with no durable seq).

    `data` is the event's JSON object, or its text when the publisher encoded it already.
    """

    topic: str
    seq: int
    data: dict[str, Any] | str


_encode = jsontext.compact


class Live:
    """Publisher and history reader over one Redis client."""

    def __init__(self, client: aioredis.Redis, history_size: int, ttl_seconds: int, *,
                 retry_for: float = RETRY_FOR) -> None:
        self.client = client
        self.history_size = history_size
        self.ttl_seconds = ttl_seconds
        self.retry_for = retry_for
        self._script = client.register_script(_PUBLISH)
        self._down_since: float | None = None  # monotonic time Redis stopped answering

    async def publish(self, events: Sequence[LiveEvent]) -> None:
        """Publish `events` in order, one script call per chunk of them.

        While Redis is unreachable the call is retried (see `RETRY_FOR`); after that the
        connection error is raised.
        """
        prefixes = [redis_keys.history(""), redis_keys.seq(""), redis_keys.channel("")]
        for start in range(0, len(events), _CHUNK):
            batch = _encode([
                [e.topic, e.seq, e.data if isinstance(e.data, str) else _encode(e.data)]
                for e in events[start : start + _CHUNK]
            ])
            await self._run([self.history_size, self.ttl_seconds, *prefixes, batch])

    async def _run(self, args: list[Any]) -> None:
        """One script call, retried with backoff while Redis is unreachable."""
        delay = _FIRST_DELAY
        while True:
            try:
                await self._script(keys=[], args=args)
            except (RedisConnectionError, RedisTimeoutError):
                now = time.monotonic()
                if self._down_since is None:
                    self._down_since = now
                if now - self._down_since >= self.retry_for:
                    raise
                await asyncio.sleep(delay)  # backoff before reconnecting to Redis
                delay = min(delay * 2, _LONGEST_DELAY)
                continue
            self._down_since = None
            return

    async def history(self, topic: str) -> list[dict[str, Any]]:
        """The topic's held event frames, oldest first."""
        raw = await self.client.lrange(redis_keys.history(topic), 0, -1)
        return [json.loads(item) for item in raw]

    async def last_seq(self, topic: str) -> int:
        """The last seq published on `topic` (0 when none is held)."""
        value = await self.client.get(redis_keys.seq(topic))
        return int(value or 0)


def missed(
    history: Sequence[dict[str, Any]], after: int, upto: int | None
) -> list[dict[str, Any]] | None:
    """Frames with seq in (after, upto] when history holds every one of them, else None.

    `upto` is the newest seq the caller knows of (None: whatever history holds). An empty
    list means nothing was missed; None means history no longer covers the gap.
    """
    if upto is not None and upto <= after:
        return []
    wanted = [f for f in history if f["seq"] > after and (upto is None or f["seq"] <= upto)]
    seqs = [f["seq"] for f in wanted]
    if seqs != list(range(after + 1, after + 1 + len(seqs))):
        return None
    if upto is not None and (not seqs or seqs[-1] != upto):
        return None
    return wanted
