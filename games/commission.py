"""Two-level distribution commission (分销佣金): who earns what, and the ledger lines.

Pure rules, no I/O. A buyer bound to a referrer earns that referrer a level-1 share of
each order, and the referrer's own referrer a level-2 share; never more levels (the law
allows two). Every movement of commission money is a set of ledger lines that sums to
zero: the shop's commission expense pays into a user's *pending* account when a deal
completes; pending moves to *available* when the return window has passed, or back to
the shop when the order is refunded within it.

Refunds may come in pieces (a partial refund), and after settlement (an after-sales
refund a marketer approves). A commission goes back in proportion to what its order has
refunded so far, cumulatively (`reversed_through`), so the pieces never take back more
than was earned and a whole refund in pieces takes back exactly all of it. After
settlement the reversal comes out of *available*; what available cannot cover is a
*debt* (`user:{id}:debt`, a negative balance: owed to the shop), recovered from the
user's next settlements before they credit available.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from games.errors import GameError

# Basis points: 10,000 bps = 100%. Rates are integers so the split is exact in fen.
BPS = 10_000
LEVELS = 2
SHOP = "shop:commission"


@dataclass(frozen=True)
class Rates:
    """What each level earns, in basis points of the order's amount."""

    level1_bps: int
    level2_bps: int

    def __post_init__(self) -> None:
        if any(type(rate) is not int for rate in (self.level1_bps, self.level2_bps)):
            raise TypeError("commission rates are integer basis points")
        if self.level1_bps < 0 or self.level2_bps < 0:
            raise ValueError("commission rates must not be negative")
        if self.level1_bps + self.level2_bps > BPS:
            raise ValueError("commission rates must not add up to more than the order")

    def of(self, level: int) -> int:
        """The rate of `level` (1 or 2)."""
        if level == 1:
            return self.level1_bps
        if level == 2:
            return self.level2_bps
        raise ValueError(f"commission has levels 1 and 2, not {level}")


@dataclass(frozen=True)
class Share:
    """One beneficiary's commission on one order."""

    level: int
    beneficiary: str
    rate_bps: int
    amount: int  # fen, floor of amount * rate: never more than the rate allows


@dataclass(frozen=True)
class Line:
    """One ledger line: `amount` fen into `account` (negative: out of it)."""

    account: str
    amount: int


def pending(user: str) -> str:
    """The account of a user's commission still inside its return window."""
    return f"user:{user}:pending"


def available(user: str) -> str:
    """The account of a user's settled commission, free to withdraw."""
    return f"user:{user}:available"


def debt(user: str) -> str:
    """The account of what a user owes the shop: commission taken back after it settled
    that their available balance could not cover (never above zero; negative = owed)."""
    return f"user:{user}:debt"


def refund_amount(order_amount: int, refunded: int, wanted: int | None) -> int:
    """The fen a refund of an order of `order_amount`, `refunded` of it refunded before,
    gives back when `wanted` is asked for (None: the rest).

    Raises GameError: `invalid_request` for an amount that is not a positive integer,
    `refund_exceeds_order` for one above the rest (a well-formed request the order's
    state refuses, as a withdrawal above the balance is).
    """
    rest = order_amount - refunded
    if wanted is None:
        return rest
    if type(wanted) is not int or wanted < 1:
        raise GameError("invalid_request", "a refund's amount is a positive integer of fen")
    if wanted > rest:
        raise GameError("refund_exceeds_order",
                        f"a refund of {wanted} fen is more than the {rest} fen of the order"
                        " not yet refunded")
    return wanted


def reversed_through(commission: int, order_amount: int, refunded: int) -> int:
    """How much of a `commission` earned on an order of `order_amount` fen is taken back
    once `refunded` fen of that order have been refunded in all.

    floor(commission × refunded / order_amount): cumulative, so a refund's own reversal
    is this minus what earlier refunds reversed. Every piece is then at least 0 (the
    floor only rises with `refunded`), the pieces never add up to more than the
    commission, and the last piece of a whole refund (refunded = order_amount) brings the
    sum to exactly the commission, whatever the pieces were.
    """
    if not 0 <= refunded <= order_amount:
        raise ValueError("an order refunds from 0 to its amount")
    if order_amount == 0:
        return 0  # nothing was paid, nothing earned
    return commission * refunded // order_amount


def shares(buyer: str, amount: int, chain: Sequence[str], rates: Rates) -> list[Share]:
    """The commissions an order of `amount` fen by `buyer` earns along `chain`.

    `chain` is the buyer's referrer, then that referrer's referrer (either may be
    missing). Only the first two count; a share that rounds to 0 fen is not earned, and
    nobody earns on their own order (binding refuses cycles; this guards anyway).
    """
    if type(amount) is not int or amount < 0:
        raise ValueError("an order amount is an integer of fen, never negative")
    earned: list[Share] = []
    seen = {buyer}
    for level, beneficiary in enumerate(chain[:LEVELS], start=1):
        if beneficiary in seen:
            break
        seen.add(beneficiary)
        rate = rates.of(level)
        fen = amount * rate // BPS
        if fen > 0:
            earned.append(Share(level, beneficiary, rate, fen))
    return earned


def move(source: str, target: str, amount: int) -> list[Line]:
    """The two lines of `amount` fen moving from `source` to `target`: every step of
    commission and withdrawal money is one. A zero or negative step would be a bug
    upstream (a step in the other direction is a step of its own), so it is refused."""
    if type(amount) is not int or amount <= 0:
        raise ValueError("an amount moved between accounts is a positive integer of fen")
    return [Line(source, -amount), Line(target, amount)]


def post(beneficiary: str, amount: int) -> list[Line]:
    """Lines that credit a fresh commission to its beneficiary's pending account."""
    return move(SHOP, pending(beneficiary), amount)


def post_all(credits: Sequence[tuple[str, int]]) -> list[Line]:
    """One compound entry crediting many fresh commissions `(beneficiary, amount)`: the
    shop's line for their sum first, then each credit's line in the order given."""
    lines = [post(beneficiary, amount)[1] for beneficiary, amount in credits]
    return [Line(SHOP, -sum(line.amount for line in lines)), *lines] if lines else []


def settle(beneficiary: str, amount: int) -> list[Line]:
    """Lines that move a commission past its return window to the available account."""
    return move(pending(beneficiary), available(beneficiary), amount)


def reverse(beneficiary: str, amount: int) -> list[Line]:
    """Lines that take a refunded order's commission back from pending to the shop."""
    return move(pending(beneficiary), SHOP, amount)


def settle_owing(beneficiary: str, amount: int, owed: int) -> list[Line]:
    """Lines that settle `amount` fen of a commission for a beneficiary who owes `owed`
    fen (their debt): the debt is paid first, the rest goes to available. A step of 0 fen
    writes no line (the ledger keeps no empty lines)."""
    if type(amount) is not int or amount <= 0 or owed < 0:
        raise ValueError("a settlement is a positive integer of fen, a debt not negative")
    paid = min(amount, owed)
    lines = [Line(pending(beneficiary), -amount)]
    if paid:
        lines.append(Line(debt(beneficiary), paid))
    if amount - paid:
        lines.append(Line(available(beneficiary), amount - paid))
    return lines


def claw_back(beneficiary: str, amount: int, balance: int) -> list[Line]:
    """Lines that take `amount` fen of a settled commission back to the shop from a
    beneficiary whose available balance is `balance`: from available as far as it goes,
    the rest recorded as debt (never capped at the balance: the shop is owed it)."""
    if type(amount) is not int or amount <= 0:
        raise ValueError("an amount taken back is a positive integer of fen")
    taken = min(amount, max(0, balance))
    lines = [Line(SHOP, amount)]
    if taken:
        lines.append(Line(available(beneficiary), -taken))
    if amount - taken:
        lines.append(Line(debt(beneficiary), -(amount - taken)))
    return lines


def balanced(lines: Sequence[Line]) -> bool:
    """True when `lines` move no money into or out of the ledger as a whole."""
    return sum(line.amount for line in lines) == 0


def bind_refusal(user: str, referrer: str, referrer_chain: Sequence[str]) -> str | None:
    """Why `user` may not bind to `referrer`, or None when they may.

    `referrer_chain` is the referrer's own referrers, nearest first, as far as they go:
    binding to someone who was (indirectly) brought in by `user` would make a loop.
    """
    if referrer == user:
        return "you cannot be your own referrer"
    if user in referrer_chain:
        return f"{referrer!r} was brought in through you; a referral may not loop"
    return None
