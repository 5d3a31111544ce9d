"""actors.waits: an event waited for with a time limit, the cancellation never lost."""

from __future__ import annotations

import asyncio

from actors.waits import wait_set


async def test_set_or_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_set(event, 0.0) is False
    event.set()
    assert await wait_set(event, 0.0) is True


async def test_a_loop_cancelled_as_its_event_is_set_stops() -> None:
    """The pipeline's and the owners' loops wait so; their `stop` cancels them and awaits
    them. With `asyncio.wait_for` on Python 3.11, the cancel that comes as the event is
    set is lost, and the loop waits again (here, a minute) instead of ending."""
    event = asyncio.Event()

    async def loop() -> None:
        while True:
            await wait_set(event, 60.0)
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop now waits on the event
    event.set()
    await asyncio.sleep(0)  # the event's waiter has woken; the loop has not run yet
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=30.0)
    assert task in done and task.cancelled()
