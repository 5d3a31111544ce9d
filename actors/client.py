"""The gateway's way to the shard actors: batch the commands of one loop tick per shard.

One Ray call costs about a millisecond and caps near 3k calls/s, while a call carrying
100 commands moves 80k+ commands/s. So commands bound for one shard wait at most one
loop tick, or until one of the few calls in flight returns, and travel together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from actors.answers import Answer, unavailable
from actors.routing import shard_of

Observer = Callable[[int, float, int], None]  # shard, seconds, batch size


class ShardClient:
    """Routes commands to the shard owning their campaign, in batches."""

    def __init__(self, handles: list[Any], *, max_inflight: int = 1, max_batch: int = 512,
                 timeout: float = 15.0, observe: Observer | None = None) -> None:
        self._handles = handles
        self._queues: list[list[tuple[dict[str, Any], asyncio.Future[Answer]]]] = [
            [] for _ in handles
        ]
        self._inflight = [0] * len(handles)
        self._scheduled = [False] * len(handles)
        self._max_inflight = max_inflight
        self._max_batch = max_batch
        self._timeout = timeout
        self._observe = observe

    @property
    def shards(self) -> int:
        return len(self._handles)

    async def call(self, command: dict[str, Any]) -> Answer:
        """Send one command (it carries `campaign`); its answer once durable."""
        index = shard_of(str(command["campaign"]), len(self._handles))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._queues[index].append((command, future))
        if not self._scheduled[index] and self._inflight[index] < self._max_inflight:
            self._scheduled[index] = True
            loop.call_soon(self._flush, index)
        return await future

    def _flush(self, index: int) -> None:
        # The call goes out from here and its answers are handed out from a callback: no
        # task per call, no loop iteration between a batch closing and its call leaving.
        self._scheduled[index] = False
        loop = asyncio.get_running_loop()
        while self._queues[index] and self._inflight[index] < self._max_inflight:
            queue = self._queues[index]
            batch, self._queues[index] = queue[: self._max_batch], queue[self._max_batch :]
            self._inflight[index] += 1
            started = time.perf_counter()
            try:
                # (`ref.as_future()` logs a deprecation warning on every call.)
                reply = asyncio.wrap_future(self._handles[index].submit.remote(
                    [command for command, _ in batch]).future())
            except Exception:
                self._answer(index, batch, started, None)
                continue
            timer = loop.call_later(self._timeout, reply.cancel)
            reply.add_done_callback(partial(self._replied, index, batch, started, timer))

    def _replied(self, index: int, batch: list[tuple[dict[str, Any], asyncio.Future[Answer]]],
                 started: float, timer: asyncio.TimerHandle,
                 reply: asyncio.Future[list[Answer]]) -> None:
        timer.cancel()
        self._answer(index, batch, started, reply)

    def _answer(self, index: int, batch: list[tuple[dict[str, Any], asyncio.Future[Answer]]],
                started: float, reply: asyncio.Future[list[Answer]] | None) -> None:
        """Hand out a call's answers (every one `unavailable` if it failed or timed out)."""
        self._inflight[index] -= 1
        if self._observe is not None:
            self._observe(index, time.perf_counter() - started, len(batch))
        results: list[Answer] | None = None
        if reply is not None and not reply.cancelled() and reply.exception() is None:
            results = reply.result()
        if results is None or len(results) != len(batch):
            results = [unavailable() for _ in batch]
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self._queues[index] and not self._scheduled[index]:
            self._flush(index)
