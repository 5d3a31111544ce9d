"""Live topics in Redis: numbered events, a bounded history per topic, pub/sub fan-out.

One Lua script per event appends the frame to the topic's history, trims it, and
publishes it, so history and live delivery never disagree about a seq.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from storage import redis_keys

# KEYS: per event its history, seq and channel keys. ARGV: max len, ttl, then per event
# its topic, seq (0 = next) and data JSON. One call publishes a whole commit's events, in
# order; each event's seq and history entry are written before it is published.
_PUBLISH = """
local size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local n = (#ARGV - 2) / 3
for i = 0, n - 1 do
  local hist, seqkey, chan = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local topic, seq, data = ARGV[3 * i + 3], tonumber(ARGV[3 * i + 4]), ARGV[3 * i + 5]
  if seq <= 0 then
    seq = redis.call('INCR', seqkey)
  else
    local cur = tonumber(redis.call('GET', seqkey) or '0')
    if seq > cur then redis.call('SET', seqkey, seq) end
  end
  local frame = '{"op":"event","topic":' .. cjson.encode(topic) .. ',"seq":' .. seq ..
    ',"data":' .. data .. '}'
  redis.call('RPUSH', hist, frame)
  redis.call('LTRIM', hist, -size, -1)
  redis.call('EXPIRE', hist, ttl)
  redis.call('EXPIRE', seqkey, ttl)
  redis.call('PUBLISH', chan, frame)
end
return n
"""

# Events per script call: bounds how long one call holds Redis (a script blocks it).
_CHUNK = 200


@dataclass(frozen=True)
class LiveEvent:
    """An event for a topic; `seq` 0 lets Redis number it (topics with no durable seq)."""

    topic: str
    seq: int
    data: dict[str, Any]


class Live:
    """Publisher and history reader over one Redis client."""

    def __init__(self, client: aioredis.Redis, history_size: int, ttl_seconds: int) -> None:
        self.client = client
        self.history_size = history_size
        self.ttl_seconds = ttl_seconds
        self._script = client.register_script(_PUBLISH)

    async def publish(self, events: Sequence[LiveEvent]) -> None:
        """Publish `events` in order, one script call per chunk of them."""
        for start in range(0, len(events), _CHUNK):
            chunk = events[start : start + _CHUNK]
            keys: list[str] = []
            args: list[str | int] = [self.history_size, self.ttl_seconds]
            for event in chunk:
                keys += [redis_keys.history(event.topic), redis_keys.seq(event.topic),
                         redis_keys.channel(event.topic)]
                args += [event.topic, event.seq,
                         json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)]
            await self._script(keys=keys, args=args)

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
