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
from dataclasses import dataclass
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


class HoldStatus(StrEnum):
    """Something held for its payment (a group-buy's seat, a bargain's purchase)."""

    HELD = "held"          # waiting for its payment until `until`
    CHECKING = "checking"  # its hold lapsed: the provider is asked whether it was paid
    PAID = "paid"          # paid: it is its payer's
    RELEASED = "released"  # never paid: what it held went back
    RETURNED = "returned"  # paid when what it held was gone: the money went back at once
    REFUNDED = "refunded"  # paid, then refunded (a failed group)

    @property
    def holding(self) -> bool:
        """Whether it still holds what it was for (a place, a unit of stock) unpaid."""
        return self is HoldStatus.HELD or self is HoldStatus.CHECKING


_PAYMENT_STATUS = {
    HoldStatus.HELD: PaymentStatus.PENDING, HoldStatus.CHECKING: PaymentStatus.PENDING,
    HoldStatus.PAID: PaymentStatus.PAID, HoldStatus.RELEASED: PaymentStatus.EXPIRED,
    HoldStatus.RETURNED: PaymentStatus.REFUNDED, HoldStatus.REFUNDED: PaymentStatus.REFUNDED,
}


@dataclass(frozen=True)
class Hold:
    """One payment for something held: who pays, how much, until when it is held."""

    user: str
    payment: str
    amount: int
    until: int
    status: HoldStatus = HoldStatus.HELD

    @property
    def payment_status(self) -> PaymentStatus:
        """The payment's status as the answer's `P` shows it."""
        return _PAYMENT_STATUS[self.status]

    def view(self) -> dict[str, object]:
        """The answer's `P` for this hold's payment."""
        return view(self.payment, self.amount, self.payment_status, self.until)

    def row(self) -> list[object]:
        """Its read-model form: [user, payment, amount, until, status]."""
        return [self.user, self.payment, self.amount, self.until, self.status.value]

    @classmethod
    def from_row(cls, row: Iterable[object]) -> Hold:
        """The inverse of `row`."""
        user, payment, amount, until, status = row
        return cls(str(user), str(payment), int(str(amount)), int(str(until)),
                   HoldStatus(str(status)))

    def becomes(self, status: HoldStatus) -> Hold:
        """This hold in `status`."""
        return Hold(self.user, self.payment, self.amount, self.until, status)


HOLD_KEY = "hold:"  # deadline keys of holds: "hold:{payment}"


@dataclass(frozen=True)
class ExpireHold:
    """The hold of `payment` lapsed: a due deadline's command (a no-op unless what it
    holds is still held and due)."""

    payment: str


@dataclass(frozen=True)
class SettlePayment:
    """The provider's word on `payment`: `paid` (with the `amount` taken) or `closed`
    (never paid; it will not be). Sent by the server only, from a verified notification
    or a reconciliation query; the same word twice changes nothing."""

    payment: str
    outcome: str  # "paid" or "closed"
    amount: int = 0


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
