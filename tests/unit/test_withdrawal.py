"""Unit tests for games/withdrawal.py: who may withdraw what, and the ledger lines it posts.

Pure rules, so tables pin the edges of the limits and the exact lines, and hypothesis
checks that any sequence of requests and reviews, run the way the server runs them,
never spends a fen twice, never loses one and never makes one up.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from games.commission import SHOP, Line, available, balanced, debt, pending, post, settle
from games.errors import GameError
from games.withdrawal import (
    FEES,
    PAYOUTS,
    Decision,
    Limits,
    decide,
    hold,
    pay,
    release,
    withdrawing,
)

LIMITS = Limits(min_fen=100, review_fen=50_000)


def balance(lines: Sequence[Line], account: str) -> int:
    """The sum of `lines` on `account` (what the server sums in SQL)."""
    return sum(line.amount for line in lines if line.account == account)

USER = "u"
OTHER = "v"

# --- Limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_fen", "review_fen"),
    [
        pytest.param(1, 1, id="smallest-both"),
        pytest.param(1, 2, id="smallest-min"),
        pytest.param(100, 100, id="min-equals-review"),
        pytest.param(100, 50_000, id="defaults"),
        pytest.param(99, 10**15, id="huge-review"),
    ],
)
def test_limits_accept_edges(min_fen: int, review_fen: int) -> None:
    limits = Limits(min_fen=min_fen, review_fen=review_fen)
    assert (limits.min_fen, limits.review_fen) == (min_fen, review_fen)


@pytest.mark.parametrize(
    ("min_fen", "review_fen"),
    [
        pytest.param(0, 100, id="min-zero"),
        pytest.param(-1, 100, id="min-negative"),
        pytest.param(0, 0, id="both-zero"),
        pytest.param(101, 100, id="min-one-above-review"),
        pytest.param(2, 1, id="review-below-min"),
        pytest.param(1, 0, id="review-zero"),
        pytest.param(1, -5, id="review-negative"),
    ],
)
def test_limits_refuse_bad_values(min_fen: int, review_fen: int) -> None:
    with pytest.raises(ValueError):
        Limits(min_fen=min_fen, review_fen=review_fen)


@pytest.mark.parametrize(
    ("min_fen", "review_fen"),
    [
        pytest.param(100.0, 50_000, id="min-float"),
        pytest.param(100, 50_000.0, id="review-float"),
        pytest.param("100", 50_000, id="min-string"),
        pytest.param(100, "50000", id="review-string"),
        pytest.param(True, 50_000, id="min-bool"),
        pytest.param(1, True, id="review-bool"),
        pytest.param(None, 50_000, id="min-none"),
        pytest.param(100, Fraction(50_000), id="review-fraction"),
    ],
)
def test_limits_refuse_non_int(min_fen: Any, review_fen: Any) -> None:
    with pytest.raises(TypeError):
        Limits(min_fen=min_fen, review_fen=review_fen)


def test_limits_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        LIMITS.min_fen = 1  # type: ignore[misc]


# --- decide ---------------------------------------------------------------------------------

BALANCE = 100_000


def _refusal(amount: Any, balance_: int, limits: Limits) -> GameError:
    """The refusal `decide` raises (it must raise one)."""
    with pytest.raises(GameError) as refused:
        decide(amount, balance_, limits)
    return refused.value


@pytest.mark.parametrize(
    ("amount", "balance_", "expected"),
    [
        # the minimum
        pytest.param(99, BALANCE, "invalid_request", id="one-below-min"),
        pytest.param(100, BALANCE, Decision.PAY, id="exactly-min"),
        pytest.param(0, BALANCE, "invalid_request", id="zero"),
        pytest.param(-1, BALANCE, "invalid_request", id="negative"),
        pytest.param(-(10**12), BALANCE, "invalid_request", id="very-negative"),
        # the review threshold
        pytest.param(49_999, BALANCE, Decision.PAY, id="one-below-review"),
        pytest.param(50_000, BALANCE, Decision.REVIEW, id="exactly-review"),
        pytest.param(50_001, BALANCE, Decision.REVIEW, id="one-above-review"),
        # the balance
        pytest.param(BALANCE, BALANCE, Decision.REVIEW, id="all-of-a-large-balance"),
        pytest.param(BALANCE + 1, BALANCE, "insufficient_balance", id="one-over-balance"),
        pytest.param(10**12, BALANCE, "insufficient_balance", id="far-over-balance"),
        pytest.param(150, 150, Decision.PAY, id="all-of-a-small-balance"),
        pytest.param(151, 150, "insufficient_balance", id="one-over-small-balance"),
        pytest.param(49_999, 49_999, Decision.PAY, id="all-just-below-review"),
        pytest.param(50_000, 49_999, "insufficient_balance", id="review-size-over-balance"),
        pytest.param(50_000, 50_000, Decision.REVIEW, id="all-exactly-review"),
        # a balance below the minimum: nothing is withdrawable
        pytest.param(100, 99, "insufficient_balance", id="min-over-balance"),
        pytest.param(100, 0, "insufficient_balance", id="empty-balance"),
        # a too-small request is invalid whatever the balance
        pytest.param(99, 0, "invalid_request", id="below-min-and-over-balance"),
    ],
)
def test_decide_table(amount: int, balance_: int, expected: Decision | str) -> None:
    if isinstance(expected, Decision):
        assert decide(amount, balance_, LIMITS) is expected
    else:
        outcome = _refusal(amount, balance_, LIMITS)
        assert outcome.code == expected
        assert outcome.message


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(100.0, id="float"),
        pytest.param(1000.5, id="fractional-float"),
        pytest.param(float("inf"), id="infinity"),
        pytest.param(float("nan"), id="nan"),
        pytest.param("1000", id="string"),
        pytest.param(True, id="true"),
        pytest.param(None, id="none"),
        pytest.param(Fraction(1000), id="fraction"),
        pytest.param(10.0**12, id="float-over-balance"),
    ],
)
def test_decide_refuses_non_int_amount(amount: Any) -> None:
    outcome = _refusal(amount, BALANCE, LIMITS)
    assert outcome.code == "invalid_request"


@pytest.mark.parametrize(("amount", "balance_"), [(101, 100), (5_000, 1_234), (100, 0)])
def test_insufficient_balance_message_names_what_is_available(
    amount: int, balance_: int
) -> None:
    outcome = _refusal(amount, balance_, LIMITS)
    assert outcome.code == "insufficient_balance"
    assert str(balance_) in outcome.message


@pytest.mark.parametrize("min_fen", [1, 100, 777])
def test_invalid_request_message_names_the_minimum(min_fen: int) -> None:
    outcome = _refusal(0, BALANCE, Limits(min_fen, 50_000))
    assert outcome.code == "invalid_request"
    assert str(min_fen) in outcome.message


def test_decide_with_min_equal_to_review_always_reviews() -> None:
    limits = Limits(min_fen=500, review_fen=500)
    assert decide(500, 1_000, limits) is Decision.REVIEW
    assert decide(1_000, 1_000, limits) is Decision.REVIEW
    assert _refusal(499, 1_000, limits).code == "invalid_request"


@st.composite
def limits_(draw: st.DrawFn) -> Limits:
    least = draw(st.integers(1, 10_000))
    return Limits(least, draw(st.integers(least, least + 100_000)))


@settings(max_examples=500)
@given(amount=st.integers(-(10**6), 10**6), balance_=st.integers(-1_000, 10**6),
       limits=limits_())
def test_decide_matches_the_rules(amount: int, balance_: int, limits: Limits) -> None:
    if amount < limits.min_fen:
        assert _refusal(amount, balance_, limits).code == "invalid_request"
    elif amount > balance_:
        assert _refusal(amount, balance_, limits).code == "insufficient_balance"
    elif amount >= limits.review_fen:
        assert decide(amount, balance_, limits) is Decision.REVIEW
    else:
        assert decide(amount, balance_, limits) is Decision.PAY


# --- hold / pay / release -------------------------------------------------------------------

MOVES: list[Any] = [
    pytest.param(hold, available(USER), withdrawing(USER), id="hold"),
    pytest.param(pay, withdrawing(USER), PAYOUTS, id="pay"),
    pytest.param(release, withdrawing(USER), available(USER), id="release"),
]


def test_accounts_are_distinct() -> None:
    accounts = {available(USER), withdrawing(USER), pending(USER), PAYOUTS, SHOP,
                withdrawing(OTHER), available(OTHER)}
    assert len(accounts) == 7
    assert USER in withdrawing(USER)


@pytest.mark.parametrize(("move", "source", "target"), MOVES)
@pytest.mark.parametrize("amount", [1, 100, 49_999, 50_000, 10**12])
def test_move_lines(
    move: Callable[[str, int], list[Line]], source: str, target: str, amount: int
) -> None:
    lines = move(USER, amount)
    assert lines == [Line(source, -amount), Line(target, amount)]
    assert balanced(lines)


@pytest.mark.parametrize(("move", "source", "target"), MOVES)
def test_moves_touch_only_their_user(
    move: Callable[[str, int], list[Line]], source: str, target: str
) -> None:
    del source, target
    accounts = {line.account for line in move(OTHER, 500)}
    assert not accounts & {available(USER), withdrawing(USER)}


@pytest.mark.parametrize(("move", "source", "target"), MOVES)
@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1, id="minus-one"),
        pytest.param(-(10**12), id="very-negative"),
        pytest.param(100.0, id="float"),
        pytest.param(0.5, id="fractional"),
        pytest.param("100", id="string"),
        pytest.param(True, id="true"),
        pytest.param(None, id="none"),
        pytest.param(Fraction(100), id="fraction"),
    ],
)
def test_moves_refuse_bad_amounts(
    move: Callable[[str, Any], list[Line]], source: str, target: str, amount: Any
) -> None:
    del source, target
    with pytest.raises(ValueError):
        move(USER, amount)


@settings(max_examples=200)
@given(amount=st.integers(1, 10**15), user=st.text(min_size=1, max_size=8))
def test_hold_then_pay_or_release_round_trips(amount: int, user: str) -> None:
    paid = hold(user, amount) + pay(user, amount)
    released = hold(user, amount) + release(user, amount)
    for lines in (paid, released):
        assert balanced(lines)
        assert balance(lines, withdrawing(user)) == 0
    assert balance(paid, available(user)) == -amount
    assert balance(paid, PAYOUTS) == amount
    assert balance(released, available(user)) == 0
    assert balance(released, PAYOUTS) == 0


@pytest.mark.parametrize(
    ("lines", "account", "expected"),
    [
        ([], available(USER), 0),
        ([Line(available(USER), 5)], available(USER), 5),
        ([Line(available(USER), 5), Line(available(OTHER), 7)], available(USER), 5),
        ([Line(available(USER), 5), Line(available(USER), -3)], available(USER), 2),
        ([Line(withdrawing(USER), 5)], available(USER), 0),
    ],
)
def test_balance(lines: list[Line], account: str, expected: int) -> None:
    assert balance(lines, account) == expected


# --- the rules as the server runs them ------------------------------------------------------


def credit(user: str, amounts: list[int]) -> list[Line]:
    """Settled commissions: posted to pending, then settled to available."""
    lines: list[Line] = []
    for amount in amounts:
        lines += post(user, amount) + settle(user, amount)
    return lines


def totals(lines: list[Line]) -> dict[str, int]:
    summed: dict[str, int] = defaultdict(int)
    for line in lines:
        summed[line.account] += line.amount
    return summed


def test_two_reviewed_requests_cannot_spend_the_same_fen() -> None:
    lines = credit(USER, [80_000])
    first = decide(60_000, balance(lines, available(USER)), LIMITS)
    assert first is Decision.REVIEW
    lines += hold(USER, 60_000)
    # The first is still waiting for review, yet its amount is already out of reach.
    second = _refusal(60_000, balance(lines, available(USER)), LIMITS)
    assert second.code == "insufficient_balance"
    assert "20000" in second.message
    # Rejecting the first makes the money available again.
    lines += release(USER, 60_000)
    assert decide(60_000, balance(lines, available(USER)), LIMITS) is Decision.REVIEW
    assert balanced(lines)


@pytest.mark.parametrize(("held", "owed", "debt_after", "available_after"), [
    (600, 0, 0, 600),      # owing nothing: all of it available again
    (600, 200, 0, 400),    # the debt first, the rest available
    (600, 600, 0, 0),      # exactly the debt
    (600, 900, -300, 0),   # not enough: what is left is still owed
])
def test_a_rejected_withdrawal_pays_its_users_debt_first(
        held: int, owed: int, debt_after: int, available_after: int) -> None:
    lines = [Line(SHOP, owed), Line(debt(USER), -owed)] if owed else []
    lines += credit(USER, [held]) + hold(USER, held)
    lines += release(USER, held, owed)
    assert (balance(lines, debt(USER)), balance(lines, available(USER)),
            balance(lines, withdrawing(USER))) == (debt_after, available_after, 0)
    assert balanced(lines)
    assert all(line.amount for line in lines)  # no empty lines
    with pytest.raises(ValueError):
        release(USER, held, -1)


def test_a_walkthrough() -> None:
    lines = credit(USER, [30_000, 40_000])
    assert balance(lines, available(USER)) == 70_000
    # small: paid at once
    assert decide(1_000, balance(lines, available(USER)), LIMITS) is Decision.PAY
    lines += hold(USER, 1_000) + pay(USER, 1_000)
    # large: held for review, then approved
    assert decide(50_000, balance(lines, available(USER)), LIMITS) is Decision.REVIEW
    lines += hold(USER, 50_000)
    summed = totals(lines)
    assert summed[available(USER)] == 19_000
    assert summed[withdrawing(USER)] == 50_000
    assert summed[PAYOUTS] == 1_000
    lines += pay(USER, 50_000)
    summed = totals(lines)
    assert summed[available(USER)] == 19_000
    assert summed[withdrawing(USER)] == 0
    assert summed[PAYOUTS] == 51_000
    assert summed[SHOP] == -70_000
    assert balanced(lines)


Step = tuple[str, int, bool]  # ("request", amount, _) or ("review", pick, approve)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Limits, list[int], list[Step]]:
    """Limits, the settled commissions a user starts with, and requests and reviews."""
    limits = draw(limits_())
    credits = draw(st.lists(st.integers(1, 3 * limits.review_fen), min_size=1, max_size=4))
    initial = sum(credits)
    amounts = st.one_of(
        st.integers(-10, initial + 10),
        st.integers(limits.min_fen - 2, limits.min_fen + 2),
        st.integers(limits.review_fen - 2, limits.review_fen + 2),
        st.sampled_from([initial, initial + 1, 0]),
    )
    request = st.tuples(st.just("request"), amounts, st.just(False))
    review = st.tuples(st.just("review"), st.integers(0, 20), st.booleans())
    steps = draw(st.lists(st.one_of(request, review), max_size=30))
    return limits, credits, steps


@settings(max_examples=400)
@given(scenario=scenarios(), others=st.lists(st.integers(1, 10**6), max_size=2))
def test_any_sequence_of_requests_and_reviews_keeps_the_books(
    scenario: tuple[Limits, list[int], list[Step]], others: list[int]
) -> None:
    limits, credits, steps = scenario
    initial = sum(credits)
    lines = credit(USER, credits) + credit(OTHER, others)
    reviewing: list[int] = []  # amounts of requests waiting for review, oldest first
    paid: list[int] = []

    for kind, number, approve in steps:
        before = list(lines)
        if kind == "request":
            free = balance(lines, available(USER))
            try:
                outcome = decide(number, free, limits)
            except GameError as refused:
                assert number < limits.min_fen or number > free
                assert refused.code == (
                    "invalid_request" if number < limits.min_fen else "insufficient_balance")
            else:
                assert limits.min_fen <= number <= free
                assert (outcome is Decision.REVIEW) == (number >= limits.review_fen)
                lines += hold(USER, number)
                if outcome is Decision.PAY:
                    lines += pay(USER, number)
                    paid.append(number)
                else:
                    reviewing.append(number)
        elif reviewing:
            amount = reviewing.pop(number % len(reviewing))
            if approve:
                lines += pay(USER, amount)
                paid.append(amount)
            else:
                lines += release(USER, amount)
        # Nothing ever rewrites the past: steps only append.
        assert lines[:len(before)] == before

        summed = totals(lines)
        assert summed[available(USER)] >= 0
        assert balanced(lines)
        assert summed[withdrawing(USER)] == sum(reviewing)
        assert summed[PAYOUTS] == sum(paid)
        assert summed[available(USER)] + summed[withdrawing(USER)] + summed[PAYOUTS] == initial
        # The other user's money and the shop's expense are untouched by withdrawals.
        assert summed[available(OTHER)] == sum(others)
        assert summed[withdrawing(OTHER)] == 0
        assert summed[SHOP] == -(initial + sum(others))
        assert summed[pending(USER)] == 0

    # Closing every open review either way leaves nothing held.
    for amount in reviewing:
        lines += release(USER, amount)
    summed = totals(lines)
    assert summed[withdrawing(USER)] == 0
    assert summed[available(USER)] == initial - sum(paid)
    assert balanced(lines)


# --- fees -----------------------------------------------------------------------------


@pytest.mark.parametrize(("bps", "least", "amount", "fee"), [
    pytest.param(0, 0, 10_000, 0, id="no-fee"),
    pytest.param(60, 0, 10_000, 60, id="0.6%"),
    pytest.param(60, 0, 10_001, 61, id="rounded-up-to-the-fen"),
    pytest.param(60, 0, 1, 1, id="a-fen-of-fee-on-a-fen"),
    pytest.param(60, 200, 10_000, 200, id="the-minimum"),
    pytest.param(60, 200, 50_000, 300, id="above-the-minimum"),
    pytest.param(0, 50, 10_000, 50, id="a-flat-fee"),
])
def test_fee_table(bps: int, least: int, amount: int, fee: int) -> None:
    assert Limits(1, 50_000, bps, least).fee(amount) == fee


@pytest.mark.parametrize(("bps", "least"), [(-1, 0), (10_000, 0), (0, -1)])
def test_limits_refuse_bad_fees(bps: int, least: int) -> None:
    with pytest.raises(ValueError):
        Limits(100, 50_000, bps, least)


def test_a_withdrawal_that_would_all_go_to_its_fee_is_refused() -> None:
    limits = Limits(1, 50_000, 100, 500)
    assert _refusal(500, BALANCE, limits).code == "invalid_request"
    assert "fee" in _refusal(500, BALANCE, limits).message
    assert decide(501, BALANCE, limits) is Decision.PAY


@settings(max_examples=300)
@given(amount=st.integers(1, 10**9), bps=st.integers(0, 9_999),
       least=st.integers(0, 10_000))
def test_a_paid_withdrawal_with_its_fee_balances_and_pays_the_rest(
        amount: int, bps: int, least: int) -> None:
    limits = Limits(1, 10**12, bps, least)
    fee = limits.fee(amount)
    assert fee >= least and fee * 10_000 >= amount * bps  # never below the rate
    assert fee == 0 or (fee - 1) * 10_000 < amount * bps or fee == least  # rounded up once
    if fee >= amount:
        return  # refused (above)
    lines = hold(USER, amount) + pay(USER, amount, fee)
    assert balanced(lines)
    assert balance(lines, PAYOUTS) == amount - fee
    assert balance(lines, FEES) == fee
    assert balance(lines, withdrawing(USER)) == 0
