"""The gateway's way to the shard actors: batch the commands of one loop tick per shard.

One Ray call costs about a millisecond and caps near 3k calls/s, while a call carrying
100 commands moves 80k+ commands/s. So commands bound for one shard wait at most one
loop tick, or until one of the few calls in flight returns, and travel together.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from actors.routing import shard_of

# An answer as the shard's JSON text (`{"ok":true,"result":...}` or `{"ok":false,...}`).
Answer = str
Observer = Callable[[int, float, int], None]  # shard, seconds, batch size


def unavailable(message: str = "the game service is unavailable; try again") -> Answer:
    """The answer when the actor cannot be reached."""
    return json.dumps({"ok": False, "error": {"code": "unavailable", "message": message}})


class ShardClient:
    """Routes commands to the shard owning their campaign, in batches."""

    def __init__(self, handles: list[Any], *, max_inflight: int = 2, max_batch: int = 512,
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
        self._tasks: set[asyncio.Task[None]] = set()

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
        self._scheduled[index] = False
        while self._queues[index] and self._inflight[index] < self._max_inflight:
            queue = self._queues[index]
            batch, self._queues[index] = queue[: self._max_batch], queue[self._max_batch :]
            self._inflight[index] += 1
            task = asyncio.get_running_loop().create_task(self._send(index, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, index: int, batch: list[tuple[dict[str, Any], asyncio.Future[Answer]]]
                    ) -> None:
        started = time.perf_counter()
        try:
            ref = self._handles[index].submit.remote([command for command, _ in batch])
            results: list[Answer] = await asyncio.wait_for(ref, self._timeout)
        except Exception:
            results = [unavailable() for _ in batch]
        finally:
            self._inflight[index] -= 1
            if self._observe is not None:
                self._observe(index, time.perf_counter() - started, len(batch))
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)
        if self._queues[index]:
            self._flush(index)
