"""Payments as games see them: ids, statuses and the answer's `payment` object.

A game that holds something until it is paid (a group-buy's seat) names the payment in
the event that holds it. The id is derived from what is paid, so it is the same however
often the event is replayed, and it starts with its campaign's code, so a provider's
notification (which carries only the id) finds its campaign's owner. Ids fit WeChat
Pay's `out_trade_no` (6 to 32 of `[A-Za-z0-9_-|*]`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from enum import StrEnum

from games.campaign import iso

CODE_LENGTH = 8  # hex digits of a campaign's code
ID_LENGTH = CODE_LENGTH + 22


class PaymentStatus(StrEnum):
    """A payment as the answer's `P` shows it."""

    PENDING = "pending"    # created, waiting for the payer (or for the provider's word)
    PAID = "paid"          # taken: the seat is the payer's
    REFUNDED = "refunded"  # taken and given back (a failed group, a payment too late)
    EXPIRED = "expired"    # never paid within its hold: nothing was taken


def campaign_code(campaign: str) -> str:
    """The prefix of every payment id of `campaign`."""
    return hashlib.sha256(f"campaign|{campaign}".encode()).hexdigest()[:CODE_LENGTH]


def payment_id(campaign: str, *parts: str) -> str:
    """The id of the payment for `parts` (an instance, a user, a version) of `campaign`."""
    digest = hashlib.sha256("|".join((campaign, *parts)).encode()).hexdigest()
    return campaign_code(campaign) + digest[: ID_LENGTH - CODE_LENGTH]


def campaign_of(payment: str, campaigns: Iterable[str]) -> str | None:
    """The campaign among `campaigns` whose code starts `payment`, if any."""
    if len(payment) != ID_LENGTH:
        return None
    code = payment[:CODE_LENGTH]
    for campaign in campaigns:
        if campaign_code(campaign) == code:
            return campaign
    return None


def view(payment: str, amount: int, status: PaymentStatus, expires_at: int
         ) -> dict[str, object]:
    """The answer's `P`: `id`, `amount` (fen), `status`, `expires_at` (when a pending
    payment's hold ends). The server adds what the client needs to pay (`params`)."""
    return {"id": payment, "amount": amount, "status": status.value,
            "expires_at": iso(expires_at)}
