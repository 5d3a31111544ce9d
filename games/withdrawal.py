"""Withdrawals (提现) of settled commission: who may take out what, and the ledger lines.

Pure rules, no I/O. A withdrawal holds its amount out of the user's available account
the moment it is asked for, so two requests can never spend the same fen; small ones
are paid at once, large ones wait for a marketer's review, which pays them or releases
the hold back to the user.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from games.commission import Line, available, move
from games.errors import GameError

PAYOUTS = "shop:payouts"


def withdrawing(user: str) -> str:
    """The account holding a user's withdrawals that are not yet paid or released."""
    return f"user:{user}:withdrawing"


@dataclass(frozen=True)
class Limits:
    """The smallest withdrawal, and the amount from which a marketer must review it."""

    min_fen: int
    review_fen: int

    def __post_init__(self) -> None:
        if type(self.min_fen) is not int or type(self.review_fen) is not int:
            raise TypeError("withdrawal limits are integer fen")
        if not 1 <= self.min_fen <= self.review_fen:
            raise ValueError("withdrawal limits need 1 <= min_fen <= review_fen")


class Decision(Enum):
    """What happens to a withdrawal request the balance allows."""

    PAY = "pay"
    REVIEW = "review"


def decide(amount: int, balance: int, limits: Limits) -> Decision:
    """Whether a request for `amount` fen against `balance` available is paid at once or
    reviewed; GameError when it is refused."""
    if type(amount) is not int or amount < limits.min_fen:
        raise GameError("invalid_request", f"a withdrawal is at least {limits.min_fen} fen")
    if amount > balance:
        raise GameError("insufficient_balance",
                        f"you have {balance} fen available, not {amount}")
    return Decision.REVIEW if amount >= limits.review_fen else Decision.PAY


def hold(user: str, amount: int) -> list[Line]:
    """Lines that take a requested amount out of reach: available → withdrawing."""
    return move(available(user), withdrawing(user), amount)


def pay(user: str, amount: int) -> list[Line]:
    """Lines for a paid withdrawal: the held amount leaves the ledger's users."""
    return move(withdrawing(user), PAYOUTS, amount)


def release(user: str, amount: int) -> list[Line]:
    """Lines for a rejected withdrawal: the held amount is available again."""
    return move(withdrawing(user), available(user), amount)

