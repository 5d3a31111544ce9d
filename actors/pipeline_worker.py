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

from actors import backoff
from actors.payments import Movement, adapter
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

    async def start(self, *, retry: bool = False) -> None:
        """Connect, listen for commits, start draining (with `retry`, wait for Postgres)."""
        await backoff.until_started(self._connect, self._close_connections, retry=retry,
                                    what="pipeline", errors=(OSError, asyncpg.PostgresError))
        # If the LISTEN connection is lost later, the poll still drains the outbox.
        self._task = asyncio.create_task(self._run())

    async def _connect(self) -> None:
        self._pool = await db.create_pool(self._database_url, min_size=1, max_size=2)
        self._listener = await db.connect(self._database_url)
        await self._listener.add_listener(OUTBOX_CHANNEL, self._notified)

    async def _close_connections(self) -> None:
        for name in ("_listener", "_pool"):
            resource = getattr(self, name, None)
            if resource is not None:
                with contextlib.suppress(Exception):
                    await resource.close()
            setattr(self, name, None)

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def stop(self) -> None:
        """Stop draining and close connections."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._close_connections()

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
            if rows:
                await self._handle(conn, [(r["type"], r["data"]) for r in rows])
                await conn.execute(
                    # The clock at the end of the work (not the transaction's start), so
                    # processed_at - created_at is the whole deal-to-ledger lag.
                    "UPDATE outbox SET processed_at = clock_timestamp()"
                    " WHERE id = ANY($1::bigint[])",
                    [r["id"] for r in rows],
                )
        if rows:
            self.processed_total += len(rows)
            newest = max(r["created_at"] for r in rows).timestamp()
            self.last_lag_ms = max(0.0, (time.time() - newest) * 1000)
        return len(rows)

    async def _handle(self, conn: asyncpg.Connection, items: list[tuple[str, dict[str, Any]]]
                      ) -> None:
        """The effects of a batch of outbox rows, set-based: a few statements per batch."""
        movements: list[Movement] = []
        skus: dict[tuple[str, str], str] = {}
        for kind, data in items:
            if kind == "deal_completed":
                skus[(data["campaign"], data["group"])] = data["sku"]
                movements += [Movement("payment", data["campaign"], data["group"], user,
                                       data["price"]) for user in data["members"]]
            elif kind == "refunded":
                movements.append(Movement("refund", data["campaign"], data["group"],
                                          data["user"], data["amount"]))
            else:
                log.warning("outbox row of unknown type %s skipped", kind)
        recorded = await self._payments.record(conn, movements)
        # A payment recorded by an earlier pass already has its order: only fresh ones do.
        paid = [(m, ref) for m, ref in recorded.items() if m.kind == "payment"]
        if paid:
            await conn.execute(
                "INSERT INTO orders (campaign, group_id, user_id, sku, amount, status,"
                " payment_ref) SELECT c, g, u, s, a, 'paid', r FROM unnest($1::text[],"
                " $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])"
                " AS o(c, g, u, s, a, r) ON CONFLICT (campaign, group_id, user_id) DO NOTHING",
                [m.campaign for m, _ in paid], [m.group for m, _ in paid],
                [m.user for m, _ in paid], [skus[(m.campaign, m.group)] for m, _ in paid],
                [m.amount for m, _ in paid], [ref for _, ref in paid],
            )
        self.orders_total += len(paid)
        self.refunds_total += len(recorded) - len(paid)

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics."""
        return {"processed_total": self.processed_total, "orders_total": self.orders_total,
                "refunds_total": self.refunds_total, "last_lag_ms": self.last_lag_ms}
