"""Payment adapters. `sandbox` records payments and refunds locally and moves no money.

An adapter writes inside the pipeline's transaction, so a payment is recorded exactly
when the order it pays for is, and its reference is deterministic: replaying the same
deal produces the same reference and the unique constraint refuses the copy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import asyncpg


@dataclass(frozen=True)
class Movement:
    """Money moving for one line of a deal (a group's member, a bargain's purchase): a
    `payment` or a `refund`, in fen."""

    kind: str
    campaign: str
    instance: str
    line: str
    user: str
    amount: int
    payment: str = ""  # the provider's payment it took or gives back, if there was one
    # Which refund of the line this is: an order refunds in pieces, each its own
    # movement (a payment, and a whole refund, is piece 1).
    piece: int = 1


class PaymentAdapter(Protocol):
    """What the pipeline needs from a payment provider."""

    name: str

    async def record(self, conn: asyncpg.Connection, movements: Sequence[Movement]
                     ) -> dict[Movement, str]:
        """Record `movements`; the references of those not recorded before."""

    async def payout(self, conn: asyncpg.Connection, withdrawal_id: int, user: str,
                     amount: int) -> str:
        """Pay a withdrawal out to `user`; its reference (the same for the same one).

        Called inside the pipeline's transaction. A provider that moves real money would
        record the intent here and confirm it after the commit, so that a rolled-back
        transaction never leaves a payment behind.
        """


class SandboxPayments:
    """Records every movement in `payments`, with a reference derived from what it pays
    (the provider's own ids, such as the payment's, travel in `payment_id`)."""

    def __init__(self, name: str = "sandbox") -> None:
        self.name = name  # the provider the movements went through

    @staticmethod
    def reference(movement: Movement) -> str:
        key = f"{movement.kind}|{movement.campaign}|{movement.instance}|{movement.line}"
        if movement.piece != 1:  # the first piece keeps the reference it always had
            key += f"|{movement.piece}"
        return f"sbx_{movement.kind[:3]}_{hashlib.sha256(key.encode()).hexdigest()[:20]}"

    async def record(self, conn: asyncpg.Connection, movements: Sequence[Movement]
                     ) -> dict[Movement, str]:
        if not movements:
            return {}
        references = [self.reference(m) for m in movements]
        rows = await conn.fetch(
            "INSERT INTO payments (kind, campaign, instance, line, user_id, amount, adapter,"
            " reference, payment_id, piece) SELECT k, c, i, l, u, a, $6, r, nullif(p, ''), n"
            " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[],"
            " $7::text[], $8::text[], $9::text[], $10::int[]) AS m(k, c, i, u, a, r, l, p, n)"
            " ON CONFLICT (kind, campaign, instance, line, piece) DO NOTHING"
            " RETURNING reference",
            [m.kind for m in movements], [m.campaign for m in movements],
            [m.instance for m in movements], [m.user for m in movements],
            [m.amount for m in movements], self.name, references,
            [m.line for m in movements], [m.payment for m in movements],
            [m.piece for m in movements],
        )
        fresh = {r["reference"] for r in rows}
        return {m: ref for m, ref in zip(movements, references, strict=True) if ref in fresh}


    async def payout(self, conn: asyncpg.Connection, withdrawal_id: int, user: str,
                     amount: int) -> str:
        # The withdrawal row keeps the reference; the sandbox moves nothing.
        digest = hashlib.sha256(f"payout|{withdrawal_id}|{user}".encode()).hexdigest()[:20]
        return f"sbx_out_{digest}"


def adapter(name: str) -> PaymentAdapter:
    """The adapter config names (config validation keeps this to known names)."""
    if name in ("sandbox", "wechatpay"):
        return SandboxPayments(name)
    raise ValueError(f"unknown payment adapter {name!r}")
