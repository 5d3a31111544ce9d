"""Withdrawals (提现) of settled commission: who may take out what, and the ledger lines.

Pure rules, no I/O. A withdrawal holds its amount out of the user's available account
the moment it is asked for, so two requests can never spend the same fen; small ones
are paid at once, large ones wait for a marketer's review, which pays them or releases
the hold back to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from games.commission import Line, available, debt_first, move
from games.errors import GameError

PAYOUTS = "shop:payouts"
FEES = "shop:withdrawal_fees"  # what the shop keeps of each paid withdrawal


def withdrawing(user: str) -> str:
    """The account holding a user's withdrawals that are not yet paid or released."""
    return f"user:{user}:withdrawing"


@dataclass(frozen=True)
class Limits:
    """The smallest withdrawal, the amount from which a marketer must review it, and the
    fee: `fee_bps` basis points of the amount, rounded up to the fen, and at least
    `min_fee_fen` (both 0: no fee)."""

    min_fen: int
    review_fen: int
    fee_bps: int = 0
    min_fee_fen: int = 0

    def __post_init__(self) -> None:
        if any(type(v) is not int for v in (self.min_fen, self.review_fen, self.fee_bps,
                                             self.min_fee_fen)):
            raise TypeError("withdrawal limits are integer fen and basis points")
        if not 1 <= self.min_fen <= self.review_fen:
            raise ValueError("withdrawal limits need 1 <= min_fen <= review_fen")
        if not 0 <= self.fee_bps < 10_000 or self.min_fee_fen < 0:
            raise ValueError("a withdrawal fee is 0-9,999 basis points, its minimum >= 0")

    def fee(self, amount: int) -> int:
        """The fee on withdrawing `amount` fen. Rounded up, so a fee is never a fraction
        of a fen the shop gives away; the user is shown it before asking (a quote)."""
        if self.fee_bps == 0 and self.min_fee_fen == 0:
            return 0
        return max(self.min_fee_fen, -(-amount * self.fee_bps // 10_000))


class Decision(Enum):
    """What happens to a withdrawal request the balance allows."""

    PAY = "pay"
    REVIEW = "review"


def decide(amount: int, balance: int, limits: Limits) -> Decision:
    """Whether a request for `amount` fen against `balance` available is paid at once or
    reviewed; GameError when it is refused."""
    if type(amount) is not int or amount < limits.min_fen:
        raise GameError("invalid_request", f"a withdrawal is at least {limits.min_fen} fen")
    if limits.fee(amount) >= amount:
        raise GameError("invalid_request",
                        f"a withdrawal of {amount} fen would all go to its fee"
                        f" ({limits.fee(amount)} fen)")
    if amount > balance:
        raise GameError("insufficient_balance",
                        f"you have {balance} fen available, not {amount}")
    return Decision.REVIEW if amount >= limits.review_fen else Decision.PAY


def hold(user: str, amount: int) -> list[Line]:
    """Lines that take a requested amount out of reach: available → withdrawing."""
    return move(available(user), withdrawing(user), amount)


def pay(user: str, amount: int, fee: int = 0) -> list[Line]:
    """Lines for a paid withdrawal: the held amount leaves the ledger's users, the payee
    getting `amount - fee` and the fee its own line to the shop's fee account."""
    if not fee:
        return move(withdrawing(user), PAYOUTS, amount)
    return move(withdrawing(user), PAYOUTS, amount - fee) + move(withdrawing(user), FEES, fee)


def release(user: str, amount: int, owed: int = 0) -> list[Line]:
    """Lines for a rejected withdrawal of a user who owes `owed` fen (their debt, from an
    after-sales refund made while the amount was held): the held amount pays the debt
    first, as a settlement would, and the rest is available again, so no one withdraws
    again while they owe the shop."""
    return debt_first(withdrawing(user), user, amount, owed)

