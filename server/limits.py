"""The token bucket: one rate limit for sockets' frames and users' HTTP requests.

A refusal says how long until the next token, so a client that waits that long before
retrying is let through (`retry_after_ms` in the error, `Retry-After` over HTTP).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict


class Bucket:
    """`rate` tokens a second, up to `burst` held at once; starts full."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float | None = None) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens = self.burst
        self.stamp = time.monotonic() if now is None else now

    def take(self, now: float | None = None) -> float:
        """Take a token: 0.0 when one was there, else the seconds until there is one."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        # A token short by float rounding only (a client that waited exactly as told
        # refills to 0.9999999999999998) is a whole one.
        if self.tokens >= 1 - 1e-9:
            self.tokens = max(0.0, self.tokens - 1)
            return 0.0
        return (1 - self.tokens) / self.rate


def retry_after_ms(wait: float) -> int:
    """A bucket's wait as the whole milliseconds a client is told to wait (at least 1)."""
    return max(1, math.ceil(wait * 1000))


class UserLimiter:
    """A bucket per user (bounded memory: the least recently seen are forgotten)."""

    def __init__(self, rate: float, burst: int, capacity: int = 100_000) -> None:
        self.rate, self.burst, self.capacity = rate, burst, capacity
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def take(self, user: str) -> float:
        """`Bucket.take` for `user`'s bucket."""
        bucket = self._buckets.pop(user, None)
        if bucket is None:
            bucket = Bucket(self.rate, self.burst)
        self._buckets[user] = bucket  # most recently seen last
        if len(self._buckets) > self.capacity:
            self._buckets.popitem(last=False)
        return bucket.take()
