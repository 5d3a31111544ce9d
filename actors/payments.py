"""Payment adapters. `sandbox` records payments and refunds locally and moves no money.

An adapter writes inside the pipeline's transaction, so a payment is recorded exactly
when the order it pays for is, and its reference is deterministic: replaying the same
deal produces the same reference and the unique constraint refuses the copy.
"""

from __future__ import annotations

import hashlib
from typing import Protocol

import asyncpg


class PaymentAdapter(Protocol):
    """What the pipeline needs from a payment provider."""

    name: str

    async def charge(self, conn: asyncpg.Connection, campaign: str, group: str, user: str,
                     amount: int) -> str | None:
        """Record a payment; its reference, or None when it was recorded before."""

    async def refund(self, conn: asyncpg.Connection, campaign: str, group: str, user: str,
                     amount: int) -> str | None:
        """Record a refund; its reference, or None when it was recorded before."""


class SandboxPayments:
    """Records every movement in `payments`, with a reference derived from what it pays."""

    name = "sandbox"

    async def _record(self, conn: asyncpg.Connection, kind: str, campaign: str, group: str,
                      user: str, amount: int) -> str | None:
        digest = hashlib.sha256(f"{kind}|{campaign}|{group}|{user}".encode()).hexdigest()
        reference = f"sbx_{kind[:3]}_{digest[:20]}"
        inserted = await conn.fetchval(
            "INSERT INTO payments (kind, campaign, group_id, user_id, amount, adapter, reference)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
            " ON CONFLICT (kind, campaign, group_id, user_id) DO NOTHING RETURNING reference",
            kind, campaign, group, user, amount, self.name, reference,
        )
        return str(inserted) if inserted is not None else None

    async def charge(self, conn: asyncpg.Connection, campaign: str, group: str, user: str,
                     amount: int) -> str | None:
        return await self._record(conn, "payment", campaign, group, user, amount)

    async def refund(self, conn: asyncpg.Connection, campaign: str, group: str, user: str,
                     amount: int) -> str | None:
        return await self._record(conn, "refund", campaign, group, user, amount)


def adapter(name: str) -> PaymentAdapter:
    """The adapter config names (config validation keeps this to known names)."""
    if name == "sandbox":
        return SandboxPayments()
    raise ValueError(f"unknown payment adapter {name!r}")
