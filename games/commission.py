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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

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


def shares(buyer: str, amount: int, chain: Sequence[str], rates: Rates, *,
           self_purchase: bool = False, eligible: Callable[[str], bool] | None = None,
           graded: Mapping[str, Rates] | None = None) -> list[Share]:
    """The commissions an order of `amount` fen by `buyer` earns along `chain`.

    `chain` is the buyer's referrer, then that referrer's referrer (either may be
    missing). Only two levels ever earn. Level 1 is the buyer's referrer, level 2 that
    referrer's referrer; with `self_purchase`, an eligible buyer is their own level 1
    and their referrer is level 2 (the chain's second is then never reached: never a
    third level). Nobody earns twice on one order (binding refuses cycles; this guards
    anyway), and without `self_purchase` nobody earns on their own order.

    `eligible` says who may earn (None: everyone): an ineligible beneficiary's level is
    skipped, never passed on to someone further up. A share's rate is its beneficiary's
    grade's in `graded`, else `rates`'; a share that rounds to 0 fen is not earned.
    """
    if type(amount) is not int or amount < 0:
        raise ValueError("an order amount is an integer of fen, never negative")
    allowed = eligible or (lambda _: True)
    own = self_purchase and allowed(buyer)
    beneficiaries = [buyer, *chain[:1]] if own else list(chain[:LEVELS])
    earned: list[Share] = []
    seen: set[str] = set() if own else {buyer}
    for level, beneficiary in enumerate(beneficiaries[:LEVELS], start=1):
        if beneficiary in seen:
            break
        seen.add(beneficiary)
        if not allowed(beneficiary):
            continue  # this level is not earned; nobody else takes it
        rate = (graded or {}).get(beneficiary, rates).of(level)
        fen = amount * rate // BPS
        if fen > 0:
            earned.append(Share(level, beneficiary, rate, fen))
    return earned


# Who may earn commission ([commission] earners).
EARNERS = ("everyone", "approved", "spend")


def may_earn(earners: str, status: str | None, spend: int, min_spend: int) -> bool:
    """Whether a user may earn commission under the `earners` rule: "everyone";
    "approved" (their distributor `status` is "approved"); "spend" (their own paid,
    confirmed, unrefunded orders come to at least `min_spend` fen)."""
    if earners == "everyone":
        return True
    if earners == "approved":
        return status == "approved"
    if earners == "spend":
        return spend >= min_spend
    raise ValueError(f"earners must be one of {EARNERS}, not {earners!r}")


@dataclass(frozen=True)
class GradeStats:
    """What a user's grade is judged on, at one settlement.

    `sales_month`: the commission base (the order amounts) of their level-1 commissions
    settled this calendar month; `direct_buyers`: users they brought in directly who have
    a paid, confirmed, unrefunded order; `own_spend`: their own such orders' amounts.
    """

    sales_month: int = 0
    direct_buyers: int = 0
    own_spend: int = 0


@dataclass(frozen=True)
class Grade:
    """A distributor grade (分销等级): its rates and what reaching it takes.

    Conditions that are None are not asked; `match` "all" needs every asked one, "any"
    one of them. A grade that asks nothing is reached by everyone (the first grade).
    """

    id: str
    title: str
    rates: Rates
    min_settled_sales_month_fen: int | None = None
    min_direct_buyers: int | None = None
    min_own_spend_fen: int | None = None
    match: str = "all"

    def conditions(self, stats: GradeStats) -> list[bool]:
        """Each asked condition's outcome for `stats`."""
        asked = ((self.min_settled_sales_month_fen, stats.sales_month),
                 (self.min_direct_buyers, stats.direct_buyers),
                 (self.min_own_spend_fen, stats.own_spend))
        return [have >= need for need, have in asked if need is not None]

    def reached(self, stats: GradeStats) -> bool:
        """Whether `stats` meet this grade's conditions."""
        outcomes = self.conditions(stats)
        if not outcomes:
            return True
        return all(outcomes) if self.match == "all" else any(outcomes)


def grade_of(grades: Sequence[Grade], current: str | None) -> Grade | None:
    """The grade called `current` (None, or an id no longer configured: the first grade);
    None when no grades are configured."""
    if not grades:
        return None
    return next((g for g in grades if g.id == current), grades[0])


def upgrade(grades: Sequence[Grade], current: str | None, stats: GradeStats) -> Grade | None:
    """The grade a user at `current` moves up to on `stats`, or None to stay.

    `grades` run from the lowest. The highest grade above the current one whose
    conditions `stats` meet wins (a user may skip grades). Grades never go down here: a
    quiet month does not demote anyone (a marketer's decision, not a rule's).
    """
    now = grade_of(grades, current)
    if now is None:
        return None
    start = grades.index(now)
    for grade in reversed(grades[start + 1:]):
        if grade.reached(stats):
            return grade
    return None


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
    fen (their debt): the debt is paid first, the rest goes to available."""
    return debt_first(pending(beneficiary), beneficiary, amount, owed)


def debt_first(source: str, user: str, amount: int, owed: int) -> list[Line]:
    """Lines that give `user` `amount` fen from `source` when they owe `owed` fen (their
    debt): the debt is paid first, the rest goes to available (a settlement, a rejected
    withdrawal's release). A step of 0 fen writes no line (the ledger keeps no empty
    lines)."""
    if type(amount) is not int or amount <= 0 or type(owed) is not int or owed < 0:
        raise ValueError("an amount given is a positive integer of fen, a debt not negative")
    paid = min(amount, owed)
    lines = [Line(source, -amount)]
    if paid:
        lines.append(Line(debt(user), paid))
    if amount - paid:
        lines.append(Line(available(user), amount - paid))
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


# How a user's binding to a referrer may change (`[commission] binding_mode`):
# "permanent" the first binding stands for good; "expiring" a binding is its referrer's
# alone for `valid_days`, after which another referrer may take the user over (until
# then it stays in force); "latest" every other referrer's share takes the user over.
# Outside "permanent", a binding younger than `protect_minutes` is never taken over.
BINDING_MODES = ("permanent", "expiring", "latest")


@dataclass(frozen=True)
class BindingPolicy:
    """When a bound user may be taken over by another referrer."""

    mode: str = "permanent"
    valid_days: int = 30  # "expiring": how long a binding is the referrer's alone
    protect_minutes: int = 0  # "expiring", "latest": no takeover this soon after a bind

    def __post_init__(self) -> None:
        if self.mode not in BINDING_MODES:
            raise ValueError(f"binding mode is one of {BINDING_MODES}, not {self.mode!r}")
        if type(self.valid_days) is not int or self.valid_days < 1:
            raise ValueError("binding_valid_days is a whole number of days, at least 1")
        if type(self.protect_minutes) is not int or self.protect_minutes < 0:
            raise ValueError("binding_protect_minutes is a whole number of minutes, at least 0")

    def free_at(self, bound_at: datetime) -> datetime | None:
        """From when a binding made at `bound_at` may be taken over (None: never)."""
        if self.mode == "permanent":
            return None
        protect = bound_at + timedelta(minutes=self.protect_minutes)
        if self.mode == "expiring":
            return max(protect, bound_at + timedelta(days=self.valid_days))
        return protect


@dataclass(frozen=True)
class Bound:
    """A user's binding in force: to `referrer`, since `bound_at`."""

    referrer: str
    bound_at: datetime


@dataclass(frozen=True)
class BindDecision:
    """What a bind does: "unchanged" (that binding is in force already), "bound" (a
    first binding), "moved" (a takeover: `current` ends, the new one starts) or
    "refused" (with the contract's `code` and a `message`)."""

    outcome: str
    code: str = ""
    message: str = ""


def _iso(moment: datetime) -> str:
    # The API's time format (games.campaign.iso, which imports this module).
    utc = moment.astimezone(UTC)
    return utc.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def bind_refusal(user: str, referrer: str, referrer_chain: Sequence[str]) -> str | None:
    """Why `user` may not bind to `referrer` whoever they are bound to, or None.

    `referrer_chain` is the referrer's own referrers in force, nearest first, as far as
    they go: binding to someone who was (indirectly) brought in by `user` would make a
    loop. This holds in every mode, so a chain of bindings in force never loops.
    """
    if referrer == user:
        return "you cannot be your own referrer"
    if user in referrer_chain:
        return f"{referrer!r} was brought in through you; a referral may not loop"
    return None


def needs_chain(referrer: str, current: Bound | None, policy: BindingPolicy,
                now: datetime) -> bool:
    """Whether `decide_bind` needs the referrer's chain: False when the binding in force
    decides alone (the same referrer again, or a binding not free to move), so the
    common case of a bound user following another share link costs no chain walk."""
    if current is None:
        return True
    if current.referrer == referrer:
        return False
    free_at = policy.free_at(current.bound_at)
    return free_at is not None and free_at <= now


def decide_bind(user: str, referrer: str, current: Bound | None,
                referrer_chain: Sequence[str], policy: BindingPolicy, now: datetime
                ) -> BindDecision:
    """Whether `user`, bound as `current` (None: unbound), may bind to `referrer` at
    `now` under `policy`; `referrer_chain` as for `bind_refusal`.

    The same referrer again changes nothing (a re-share restarts neither the validity
    nor the protection); another referrer is `already_bound` until the policy frees the
    user; self-binding and loops are `invalid_request` in every mode (self-binding first:
    it is wrong whoever the user is bound to).
    """
    if referrer == user:
        return BindDecision("refused", "invalid_request", str(bind_refusal(user, referrer, ())))
    if current is not None:
        if current.referrer == referrer:
            return BindDecision("unchanged")
        free_at = policy.free_at(current.bound_at)
        if free_at is None:
            return BindDecision("refused", "already_bound",
                                f"you were brought in by {current.referrer!r} already")
        if now < free_at:
            return BindDecision("refused", "already_bound",
                                f"you were brought in by {current.referrer!r}; another"
                                f" referrer may take you over from {_iso(free_at)}")
    refusal = bind_refusal(user, referrer, referrer_chain)
    if refusal is not None:
        return BindDecision("refused", "invalid_request", refusal)
    return BindDecision("bound" if current is None else "moved")
