"""The pipeline: outbox rows become orders, payments and refunds, exactly once.

Each batch is one transaction: lock pending outbox rows (SKIP LOCKED, so two workers
never take the same row), write their effects, mark them processed. Effects are keyed by
(campaign, group, user) with unique constraints, so replaying a processed row (an
operator resetting the outbox, a crash between commit and ack) creates nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import asyncpg

from actors.payments import adapter
from storage import db
from storage.config import Config
from storage.events import OUTBOX_CHANNEL

log = logging.getLogger("fission.pipeline")


class PipelineWorker:
    """Drains the outbox whenever a commit notifies it, and on a slow poll as a fallback."""

    def __init__(self, config: Config, database_url: str) -> None:
        self.config = config
        self._database_url = database_url
        self._payments = adapter(config.pipeline.payment_adapter)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.processed_total = 0
        self.orders_total = 0
        self.refunds_total = 0
        self.last_lag_ms = 0.0

    async def start(self) -> None:
        """Connect, listen for commits, start draining."""
        self._pool = await db.create_pool(self._database_url, min_size=1, max_size=2)
        self._listener = await db.connect(self._database_url)
        await self._listener.add_listener(OUTBOX_CHANNEL, self._notified)
        self._task = asyncio.create_task(self._run())

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop draining and close connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._listener.close()
        await self._pool.close()

    async def _run(self) -> None:
        interval = self.config.pipeline.poll_interval_ms / 1000
        while True:
            try:
                while await self.drain_once() > 0:
                    pass
            except Exception:
                log.exception("pipeline batch failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()

    async def drain_once(self) -> int:
        """Process one batch of pending outbox rows; how many it processed."""
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT id, type, data, created_at FROM outbox WHERE processed_at IS NULL"
                " ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                self.config.pipeline.batch_size,
            )
            for row in rows:
                await self._handle(conn, row["type"], row["data"])
            if rows:
                await conn.execute(
                    "UPDATE outbox SET processed_at = now() WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows],
                )
        if rows:
            self.processed_total += len(rows)
            newest = max(r["created_at"] for r in rows).timestamp()
            self.last_lag_ms = max(0.0, (time.time() - newest) * 1000)
        return len(rows)

    async def _handle(self, conn: asyncpg.Connection, kind: str, data: dict[str, Any]) -> None:
        if kind == "deal_completed":
            for user in data["members"]:
                reference = await self._payments.charge(
                    conn, data["campaign"], data["group"], user, data["price"])
                if reference is None:
                    continue  # recorded by an earlier pass: the order exists too
                await conn.execute(
                    "INSERT INTO orders (campaign, group_id, user_id, sku, amount, status,"
                    " payment_ref) VALUES ($1, $2, $3, $4, $5, 'paid', $6)"
                    " ON CONFLICT (campaign, group_id, user_id) DO NOTHING",
                    data["campaign"], data["group"], user, data["sku"], data["price"], reference,
                )
                self.orders_total += 1
        elif kind == "refunded":
            campaign = data.get("campaign") or ""
            if await self._payments.refund(conn, campaign, data["group"], data["user"],
                                           data["amount"]) is not None:
                self.refunds_total += 1
        else:
            log.warning("outbox row of unknown type %s skipped", kind)

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics."""
        return {"processed_total": self.processed_total, "orders_total": self.orders_total,
                "refunds_total": self.refunds_total, "last_lag_ms": self.last_lag_ms}
