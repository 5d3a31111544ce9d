"""Start-up that waits out an unreachable database: one attempt after another, with backoff.

An owner restarted by Ray while Postgres or Redis is down must come up once they are back,
not stay broken; without `retry`, the first failure is final (tests, the CLI).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("fission.backoff")

FIRST_DELAY = 0.5  # seconds
LONGEST_DELAY = 5.0


async def until_started(attempt: Callable[[], Awaitable[None]],
                        undo: Callable[[], Awaitable[None]], *, retry: bool, what: str,
                        errors: tuple[type[BaseException], ...] = (Exception,)) -> None:
    """Run `attempt` until it succeeds; after each failure `undo` its partial work, then
    re-raise (without `retry`) or wait a growing delay and try again."""
    delay = FIRST_DELAY
    while True:
        try:
            await attempt()
            return
        except errors as exc:
            await undo()
            if not retry:
                raise
            log.warning("%s cannot start yet (%r); retrying in %.1f s", what, exc, delay)
            await asyncio.sleep(delay)  # backoff before reconnecting
            delay = min(delay * 2, LONGEST_DELAY)
