"""Unit tests for games/commission.py's refunds: pieces, proportional reversal, debt.

The rounding rule (`reversed_through`) is pinned by a table and proven by hypothesis
over any sequence of pieces: no step is negative, the steps never take back more than
was earned, and a whole refund in pieces takes back exactly all of it. Clawbacks and
settlements that owe are balanced, never leave available below zero or a debt above it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.commission import (
    SHOP,
    Line,
    available,
    balanced,
    claw_back,
    debt,
    refund_amount,
    reversed_through,
    settle_owing,
)
from games.errors import GameError

amounts = st.integers(min_value=1, max_value=10**9)


@st.composite
def pieces(draw: st.DrawFn) -> tuple[int, int, list[int]]:
    """(order amount, commission, pieces refunded in order: their sum at most the order)."""
    order = draw(amounts)
    commission = draw(st.integers(min_value=1, max_value=order))
    left, found = order, []
    for _ in range(draw(st.integers(min_value=0, max_value=12))):
        if left == 0:
            break
        piece = draw(st.integers(min_value=1, max_value=left))
        found.append(piece)
        left -= piece
    if draw(st.booleans()) and left:
        found.append(left)  # often refunded whole in the end
    return order, commission, found


@pytest.mark.parametrize(("commission", "order", "refunded", "expected"), [
    (600, 6000, 0, 0),
    (600, 6000, 6000, 600),
    (600, 6000, 3000, 300),
    (1, 3, 1, 0), (1, 3, 2, 0), (1, 3, 3, 1),  # a fen goes back only once it is owed whole
    (100, 3, 1, 33), (100, 3, 2, 66), (100, 3, 3, 100),
    (0, 0, 0, 0),  # a 0-fen order earns nothing and takes nothing back
])
def test_the_reversal_is_the_floor_of_the_refunded_share(
        commission: int, order: int, refunded: int, expected: int) -> None:
    assert reversed_through(commission, order, refunded) == expected


@given(case=pieces())
def test_pieces_never_take_back_more_than_earned_and_a_whole_refund_takes_it_all(
        case: tuple[int, int, list[int]]) -> None:
    order, commission, refunds = case
    refunded = taken = 0
    for piece in refunds:
        refunded += piece
        step = reversed_through(commission, order, refunded) - taken
        assert step >= 0
        taken += step
        assert taken <= commission
    if refunded == order:
        assert taken == commission
    # In proportion: what is left is never less than the share of what is not refunded.
    assert commission - taken >= commission * (order - refunded) // order


@pytest.mark.parametrize(("order", "refunded", "wanted", "expected"), [
    (6000, 0, None, 6000), (6000, 2000, None, 4000), (6000, 2000, 4000, 4000),
    (6000, 0, 1, 1), (0, 0, None, 0),
])
def test_a_refund_is_what_is_asked_or_the_rest(order: int, refunded: int,
                                               wanted: int | None, expected: int) -> None:
    assert refund_amount(order, refunded, wanted) == expected


@pytest.mark.parametrize(("wanted", "code"), [
    (0, "invalid_request"), (-1, "invalid_request"), (True, "invalid_request"),
    (1.5, "invalid_request"), ("10", "invalid_request"),
    (4001, "refund_exceeds_order"), (10**12, "refund_exceeds_order"),
])
def test_a_refund_of_nothing_or_more_than_the_rest_is_refused(wanted: object, code: str
                                                              ) -> None:
    with pytest.raises(GameError) as refused:
        refund_amount(6000, 2000, wanted)  # type: ignore[arg-type]
    assert refused.value.code == code


@pytest.mark.parametrize(("amount", "balance", "expected"), [
    (600, 1000, [Line(SHOP, 600), Line(available("u"), -600)]),
    (600, 600, [Line(SHOP, 600), Line(available("u"), -600)]),
    (600, 200, [Line(SHOP, 600), Line(available("u"), -200), Line(debt("u"), -400)]),
    (600, 0, [Line(SHOP, 600), Line(debt("u"), -600)]),
])
def test_a_clawback_takes_available_then_records_debt(amount: int, balance: int,
                                                      expected: list[Line]) -> None:
    assert claw_back("u", amount, balance) == expected


@pytest.mark.parametrize(("amount", "owed", "expected"), [
    (600, 0, [Line("user:u:pending", -600), Line(available("u"), 600)]),
    (600, 200, [Line("user:u:pending", -600), Line(debt("u"), 200),
                Line(available("u"), 400)]),
    (600, 600, [Line("user:u:pending", -600), Line(debt("u"), 600)]),
    (600, 900, [Line("user:u:pending", -600), Line(debt("u"), 600)]),
])
def test_a_settlement_pays_the_debt_first(amount: int, owed: int,
                                          expected: list[Line]) -> None:
    assert settle_owing("u", amount, owed) == expected


@given(steps=st.lists(st.tuples(st.booleans(), amounts), max_size=30))
def test_clawbacks_and_settlements_keep_available_and_debt_sound(
        steps: list[tuple[bool, int]]) -> None:
    """Any sequence of settlements (True) and clawbacks (False) of any amounts: every
    entry balances, available never goes below zero nor debt above it, and their sum is
    what settled less what was taken back (never capped)."""
    held = {available("u"): 0, debt("u"): 0}
    net = 0
    for settles, fen in steps:
        lines = (settle_owing("u", fen, -held[debt("u")]) if settles
                 else claw_back("u", fen, held[available("u")]))
        assert balanced(lines) and all(line.amount for line in lines)
        for line in lines:
            if line.account in held:
                held[line.account] += line.amount
        net += fen if settles else -fen
        assert held[available("u")] >= 0 >= held[debt("u")]
        assert held[available("u")] * held[debt("u")] == 0  # never both at once here
        assert held[available("u")] + held[debt("u")] == net


def test_zero_or_negative_steps_are_refused() -> None:
    for bad in (lambda: claw_back("u", 0, 10), lambda: settle_owing("u", 0, 0),
                lambda: settle_owing("u", 5, -1), lambda: reversed_through(5, 10, 11)):
        with pytest.raises(ValueError):
            bad()
