"""Waiting for an asyncio event with a time limit, without losing a cancellation.

On Python 3.11, `asyncio.wait_for(event.wait(), timeout)` in a task cancelled at the
moment its event was set returns the event's result instead of raising CancelledError:
the cancellation is lost. A loop stopped that way (the pipeline's drain woken by a
commit, an owner's timer woken by a new deadline) goes round again, and the `stop` that
awaits it waits forever; the suite saw it as an integration test hanging in teardown.
`asyncio.timeout` keeps the cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until `event` is set or `timeout` seconds pass; whether it is set."""
    if event.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()
