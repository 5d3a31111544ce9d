"""Python's cyclic garbage collector in a long-running process: measured, kept short.

Every full collection walks every tracked object. A gateway or an owner carries a large
heap that never becomes garbage: the modules of Ray, gRPC and protobuf, and in an owner
the state it rebuilt from Postgres. Measured in the join storm before this: the gateway
spent 7% of its time in the collector with pauses up to 100 ms, the shard 6% with pauses
up to 113 ms, straight into the ack latency's tail. So, once started, a process freezes
what it holds (moved out of the collector's reach; still freed by reference counting),
and the young generation is collected less often, in larger, cheaper steps.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

# The young generation's threshold (CPython's default is 700 allocations).
THRESHOLDS = (20_000, 10, 10)

_started: list[float] = [0.0]
seconds = [0.0, 0.0, 0.0]
collections = [0, 0, 0]
longest = [0.0]


def _callback(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
        return
    took = time.perf_counter() - _started[0]
    generation = int(info.get("generation", 0))
    seconds[generation] += took
    collections[generation] += 1
    longest[0] = max(longest[0], took)


def install() -> None:
    """Measure collections and set the thresholds (idempotent)."""
    gc.set_threshold(*THRESHOLDS)
    if _callback not in gc.callbacks:
        gc.callbacks.append(_callback)


def settle() -> None:
    """Collect once, then freeze everything alive: call when start-up is done."""
    measured = _callback in gc.callbacks
    if measured:
        gc.callbacks.remove(_callback)  # start-up's own collection: no one waited on it
    try:
        gc.collect()
    finally:
        if measured:
            gc.callbacks.append(_callback)
    gc.freeze()


def freeze() -> None:
    """Freeze what is alive now, without a collection (cheap: it moves a list).

    An owner's state grows while its campaigns run; freezing it now and then keeps each
    full collection to what is new since. The cost: a reference cycle alive at this
    moment and dropped later is never collected (the state holds none; an in-flight
    task's may), a small, bounded price for pauses that stop growing with age.
    """
    gc.freeze()


def snapshot() -> dict[str, Any]:
    """Seconds and collections per generation so far, and the longest pause.

    Not the frozen count: `gc.get_freeze_count` walks the whole frozen heap (32 ms for 3
    million objects here), and a scrape of /metrics asks every owner for this, which
    would stall each of them, and every command waiting on it, that long."""
    return {"gc_seconds": list(seconds), "gc_collections": list(collections),
            "gc_longest_seconds": longest[0]}


class Population:
    """Freezes a gateway's heap as its population of long-lived objects (sockets) grows.

    A socket holds a few hundred objects the collector tracks, alive as long as it is
    open; frozen once at start-up, a gateway still gains them with every socket after, and
    each full collection walks them all: measured in the bargain's 16-team storm (1,648
    sockets) the gateway paused up to 148-175 ms. So, each `step` sockets more than at the
    last freeze, what is alive is frozen (cheap: it moves a list). The price: the
    reference cycles of a frozen socket closed later are not collected (asyncio and aiohttp
    break their own on close; an exception's traceback may not). So after `refresh_after`
    closes, at most once per `refresh_every` seconds, the frozen heap is collected once
    (one full pause, rare) and frozen again: memory stays bounded under churn, and a
    steady population never pays that pause.
    """

    def __init__(self, step: int = 256, refresh_after: int = 1024,
                 refresh_every: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.step = step
        self.refresh_after = refresh_after
        self.refresh_every = refresh_every
        self._clock = clock
        self._at_freeze = 0  # the population at the last freeze
        self._closed = 0  # closes since the last refresh
        self._refreshed = clock()
        self.freezes = 0
        self.refreshes = 0

    def opened(self, live: int) -> None:
        """One more (now `live`): freeze once `step` more than at the last freeze."""
        if live - self._at_freeze >= self.step:
            gc.freeze()
            self._at_freeze = live
            self.freezes += 1

    def closed(self, live: int) -> None:
        """One fewer (now `live`): refresh once enough closed, not too often."""
        self._at_freeze = min(self._at_freeze, live)  # regrowth freezes its newcomers
        self._closed += 1
        now = self._clock()
        if self._closed >= self.refresh_after and now - self._refreshed >= self.refresh_every:
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._closed = 0
            self._refreshed = now
            self.refreshes += 1
