"""The gateway's way to the pipeline actor: referral binds, order refunds, withdrawals.

These are rare next to game commands (a user binds once, refunds and withdraws seldom),
so each is its own actor call; no batching.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from actors.answers import Answer, unavailable

log = logging.getLogger("fission.pipeline_client")

_DOWN = "the order service is unavailable; try again"


class PipelineClient:
    """Calls the pipeline actor; an unreachable actor answers `unavailable`."""

    def __init__(self, handle: Any, *, timeout: float = 15.0) -> None:
        self._handle = handle
        self._timeout = timeout

    async def bind(self, user: str, referrer: str) -> Answer:
        """Bind `user` to `referrer`, as the configured binding mode allows."""
        return await self._call("bind", user, referrer)

    async def distributor(self, user: str, action: str, actor: str) -> Answer:
        """`action` ("apply", "approve", "revoke") on `user`'s distributor status."""
        return await self._call("distributor", user, action, actor)

    async def refund(self, user: str, order_id: int, amount: int | None = None,
                     key: str | None = None) -> Answer:
        """Refund `amount` fen (None: the rest) of `user`'s order inside its return
        window; `key` makes a repeat answer the first."""
        return await self._call("refund", user, order_id, amount, key)

    async def refund_after_sales(self, marketer: str, order_id: int, amount: int | None,
                                 key: str | None, note: str | None) -> Answer:
        """A marketer refunds `amount` fen (None: the rest) of an order, settled or not."""
        return await self._call("refund_after_sales", marketer, order_id, amount, key, note)

    async def give_back(self, campaign: str, payment: str, payer: str, amount: int
                        ) -> Answer:
        """Give back money for a payment its game no longer holds."""
        return await self._call("give_back", campaign, payment, payer, amount)

    async def refund_outcome(self, refund_id: str, status: str) -> Answer:
        """Record how the provider says a refund ended."""
        return await self._call("refund_outcome", refund_id, status)

    async def withdraw(self, user: str, key: str, amount: int) -> Answer:
        """`user` withdraws `amount` fen; `key` makes a repeat answer the first."""
        return await self._call("withdraw", user, key, amount)

    async def review(self, reviewer: str, withdrawal_id: int, approve: bool,
                     note: str | None) -> Answer:
        """A marketer pays or rejects a withdrawal waiting for review."""
        return await self._call("review", reviewer, withdrawal_id, approve, note)

    async def _call(self, method: str, *args: Any) -> Answer:
        try:
            answer: Answer = await asyncio.wait_for(getattr(self._handle, method).remote(*args),
                                                    self._timeout)
        except Exception as exc:  # a dead or restarting actor: the client retries
            log.warning("pipeline call %s failed: %r", method, exc)
            return unavailable(_DOWN)
        return answer
