"""Unit tests for games/commission.py: who earns what, and the ledger lines it posts.

Pure rules, so tables pin the arithmetic and hypothesis checks what must hold for any
order, chain and sequence of ledger movements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from games.commission import (
    BPS,
    SHOP,
    BindingPolicy,
    Bound,
    Line,
    Rates,
    Share,
    available,
    balanced,
    bind_refusal,
    decide_bind,
    needs_chain,
    pending,
    post,
    post_all,
    reverse,
    settle,
    shares,
)

DEFAULT = Rates(level1_bps=1000, level2_bps=300)
BUYER = "buyer"

# --- strategies -----------------------------------------------------------------------------

users = st.sampled_from(["a", "b", "c", "d", BUYER])
fen = st.integers(min_value=0, max_value=10**12)


@st.composite
def rates(draw: st.DrawFn) -> Rates:
    level1 = draw(st.integers(0, BPS))
    level2 = draw(st.integers(0, BPS - level1))
    return Rates(level1, level2)


# --- shares: the arithmetic -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "rate", "chain", "expected"),
    [
        # Whole fen: 10% and 3% of 100.00 yuan.
        (10_000, DEFAULT, ["a", "b"], [(1, "a", 1000), (2, "b", 300)]),
        # Floors, never rounds: 1234.5 -> 1234 and 370.35 -> 370.
        (12_345, DEFAULT, ["a", "b"], [(1, "a", 1234), (2, "b", 370)]),
        # 0.99 fen for level 2 floors to 0 and is dropped; level 1 still earns.
        (33, DEFAULT, ["a", "b"], [(1, "a", 3)]),
        (34, DEFAULT, ["a", "b"], [(1, "a", 3), (2, "b", 1)]),
        (10, DEFAULT, ["a", "b"], [(1, "a", 1)]),
        # Both round to 0 fen: nobody earns.
        (9, DEFAULT, ["a", "b"], []),
        (0, DEFAULT, ["a", "b"], []),
        # A zero level-1 rate does not stop the level-2 share.
        (10_000, Rates(0, 300), ["a", "b"], [(2, "b", 300)]),
        (10_000, Rates(1000, 0), ["a", "b"], [(1, "a", 1000)]),
        # The whole order may go to level 1.
        (777, Rates(BPS, 0), ["a", "b"], [(1, "a", 777)]),
        # Half and half of an odd amount: each floors, 1 fen stays with the shop.
        (3, Rates(5000, 5000), ["a", "b"], [(1, "a", 1), (2, "b", 1)]),
        # Integer arithmetic on amounts a float cannot hold exactly.
        (10**17 + 9, Rates(1000, 1), ["a", "b"],
         [(1, "a", 10**16), (2, "b", 10**13)]),
        (2**53 + 1, Rates(BPS, 0), ["a"], [(1, "a", 2**53 + 1)]),
    ],
)
def test_share_amounts_are_floored_fen(
    amount: int, rate: Rates, chain: list[str], expected: list[tuple[int, str, int]]
) -> None:
    got = shares(BUYER, amount, chain, rate)
    assert [(s.level, s.beneficiary, s.amount) for s in got] == expected
    for share in got:
        assert share.rate_bps == rate.of(share.level)
        assert type(share.amount) is int


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ([], []),
        (["a"], [(1, "a")]),
        (["a", "b"], [(1, "a"), (2, "b")]),
        (["a", "b", "c"], [(1, "a"), (2, "b")]),
        (["a", "b", "c", "d"], [(1, "a"), (2, "b")]),
        (("a", "b", "c"), [(1, "a"), (2, "b")]),  # any sequence, not only lists
    ],
)
def test_only_the_first_two_referrers_earn(
    chain: Sequence[str], expected: list[tuple[int, str]]
) -> None:
    got = shares(BUYER, 10_000, chain, DEFAULT)
    assert [(s.level, s.beneficiary) for s in got] == expected


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        # The buyer never earns on their own order; a loop back stops the chain there.
        ([BUYER], []),
        ([BUYER, "b"], []),
        (["a", BUYER], [(1, "a")]),
        (["a", BUYER, "c"], [(1, "a")]),
        # The same beneficiary twice is a loop too: earns once, at level 1.
        (["a", "a"], [(1, "a")]),
        (["a", "a", "b"], [(1, "a")]),
    ],
)
def test_buyer_and_repeated_beneficiaries_stop_the_chain(
    chain: list[str], expected: list[tuple[int, str]]
) -> None:
    got = shares(BUYER, 10_000, chain, DEFAULT)
    assert [(s.level, s.beneficiary) for s in got] == expected


@pytest.mark.parametrize("amount", [-1, -10_000, -(10**12)])
def test_negative_amount_is_refused(amount: int) -> None:
    with pytest.raises(ValueError, match="negative"):
        shares(BUYER, amount, ["a", "b"], DEFAULT)


def test_share_is_frozen() -> None:
    (share, _) = shares(BUYER, 10_000, ["a", "b"], DEFAULT)
    assert share == Share(level=1, beneficiary="a", rate_bps=1000, amount=1000)
    with pytest.raises(AttributeError):
        share.amount = 5  # type: ignore[misc]


@settings(max_examples=300)
@given(buyer=users, amount=fen, chain=st.lists(users, max_size=5), rate=rates())
def test_shares_never_pay_more_than_the_rates_allow(
    buyer: str, amount: int, chain: list[str], rate: Rates
) -> None:
    got = shares(buyer, amount, chain, rate)
    total = sum(s.amount for s in got)
    assert total * BPS <= amount * (rate.level1_bps + rate.level2_bps)
    assert total <= amount
    assert len(got) <= 2
    for share in got:
        assert type(share.amount) is int
        assert share.amount > 0
        assert share.amount == amount * rate.of(share.level) // BPS
        assert share.rate_bps == rate.of(share.level)
        # Level k goes to the k-th referrer, never to the buyer.
        assert share.beneficiary == chain[share.level - 1]
        assert share.beneficiary != buyer
    levels = [s.level for s in got]
    assert levels == sorted(set(levels))
    assert len({s.beneficiary for s in got}) == len(got)


@settings(max_examples=300)
@given(amount=fen, chain=st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=5,
                                  unique=True), rate=rates())
def test_a_clean_chain_earns_every_nonzero_share(
    amount: int, chain: list[str], rate: Rates
) -> None:
    """Nothing is dropped that should be earned: zero fen is the only reason to skip."""
    got = shares(BUYER, amount, chain, rate)
    expected = [
        (level, who, amount * rate.of(level) // BPS)
        for level, who in enumerate(chain[:2], start=1)
        if amount * rate.of(level) // BPS > 0
    ]
    assert [(s.level, s.beneficiary, s.amount) for s in got] == expected


# --- Rates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level1", "level2"),
    [(-1, 0), (0, -1), (-1, -1), (1000, -300), (BPS, 1), (1, BPS), (5001, 5000),
     (BPS + 1, 0)],
)
def test_bad_rates_are_refused(level1: int, level2: int) -> None:
    with pytest.raises(ValueError):
        Rates(level1, level2)


@pytest.mark.parametrize(
    ("level1", "level2"), [(0, 0), (BPS, 0), (0, BPS), (5000, 5000), (1000, 300)]
)
def test_rates_up_to_the_whole_order_are_allowed(level1: int, level2: int) -> None:
    rate = Rates(level1, level2)
    assert rate.of(1) == level1
    assert rate.of(2) == level2


# --- ledger lines ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (post, [Line(SHOP, -250), Line(pending("a"), 250)]),
        (settle, [Line(pending("a"), -250), Line(available("a"), 250)]),
        (reverse, [Line(pending("a"), -250), Line(SHOP, 250)]),
    ],
)
def test_each_movement_is_two_balanced_lines(
    make: Callable[[str, int], list[Line]], expected: list[Line]
) -> None:
    lines = make("a", 250)
    assert lines == expected
    assert balanced(lines)


@given(user=st.text(max_size=8), other=st.text(max_size=8))
def test_accounts_are_distinct(user: str, other: str) -> None:
    accounts = {SHOP, pending(user), available(user)}
    assert len(accounts) == 3
    if user != other:
        assert pending(user) != pending(other)
        assert available(user) != available(other)
    assert pending(user) != available(other)
    assert SHOP not in {pending(other), available(other)}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], True),
        ([Line(SHOP, -5), Line(pending("a"), 5)], True),
        ([Line(SHOP, -5), Line(pending("a"), 4)], False),
        ([Line(pending("a"), 5)], False),
        ([Line(SHOP, -5), Line(pending("a"), 3), Line(pending("b"), 2)], True),
        ([Line(SHOP, -5), Line(pending("a"), 5), Line(available("a"), 1)], False),
    ],
)
def test_balanced(lines: list[Line], expected: bool) -> None:
    assert balanced(lines) is expected


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, int, bool]], list[int]]:
    """Commissions (beneficiary, fen, settles?) and an interleaving of their movements.

    The order holds each commission's index twice: its first appearance is the post, its
    second the settle or reverse, so every order a real ledger could see is possible.
    """
    commissions = draw(st.lists(
        st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(1, 10**9), st.booleans()),
        max_size=12,
    ))
    order = draw(st.permutations([i for i in range(len(commissions)) for _ in range(2)]))
    return commissions, order


def totals(ledger: list[Line]) -> dict[str, int]:
    summed: dict[str, int] = defaultdict(int)
    for line in ledger:
        summed[line.account] += line.amount
    return summed


@settings(max_examples=300)
@given(history=histories())
def test_ledger_accounts_add_up(history: tuple[list[tuple[str, int, bool]], list[int]]) -> None:
    commissions, order = history
    beneficiaries = ("a", "b", "c")
    ledger: list[Line] = []
    open_: set[int] = set()
    closed: set[int] = set()
    for index in order:
        who, amount, settles = commissions[index]
        if index not in open_:
            open_.add(index)
            ledger += post(who, amount)
        else:
            open_.remove(index)
            closed.add(index)
            ledger += (settle if settles else reverse)(who, amount)
        assert balanced(ledger)
        # At every step: open commissions sit in pending, settled ones in available, and
        # the shop is out exactly what it has not taken back.
        summed = totals(ledger)
        for user in beneficiaries:
            assert summed[pending(user)] == sum(
                commissions[i][1] for i in open_ if commissions[i][0] == user)
            assert summed[available(user)] == sum(
                commissions[i][1] for i in closed
                if commissions[i][0] == user and commissions[i][2])
        assert summed[SHOP] == -sum(
            commissions[i][1] for i in open_ | closed if i in open_ or commissions[i][2])

    # Every commission closed: pending is empty, the shop paid exactly what settled.
    assert not open_
    summed = totals(ledger)
    settled: dict[str, int] = defaultdict(int)
    for who, amount, settles in commissions:
        if settles:
            settled[who] += amount
    assert summed[SHOP] == -sum(settled.values())
    for user in beneficiaries:
        assert summed[pending(user)] == 0
        assert summed[available(user)] == settled[user]
    known = {SHOP} | {f(u) for u in beneficiaries for f in (pending, available)}
    assert set(summed) <= known


@settings(max_examples=200)
@given(orders=st.lists(st.tuples(users, fen, st.lists(users, max_size=4)), max_size=8),
       rate=rates(), settles=st.lists(st.booleans(), min_size=16, max_size=16))
def test_order_to_ledger_round_trip(
    orders: list[tuple[str, int, list[str]]], rate: Rates, settles: list[bool]
) -> None:
    """Shares of real orders, posted then closed: the shop never pays more than it earned
    the rates on, and every fen it pays ends up in someone's available account."""
    ledger: list[Line] = []
    earned = [s for buyer, amount, chain in orders for s in shares(buyer, amount, chain, rate)]
    for share in earned:
        ledger += post(share.beneficiary, share.amount)
    for share, keep in zip(earned, settles, strict=False):
        ledger += (settle if keep else reverse)(share.beneficiary, share.amount)
    for share in earned[len(settles):]:
        ledger += settle(share.beneficiary, share.amount)
    assert balanced(ledger)
    summed = totals(ledger)
    paid = -summed[SHOP]
    assert 0 <= paid <= sum(amount for _, amount, _ in orders)
    assert paid == sum(summed[available(u)] for u in {s.beneficiary for s in earned})
    assert all(summed[pending(s.beneficiary)] == 0 for s in earned)


# --- binding a referrer ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "referrer", "chain"),
    [
        ("u", "u", []),  # one's own referrer
        ("u", "u", ["x", "y"]),
        ("u", "r", ["u"]),  # r was brought in by u: u -> r -> u
        ("u", "r", ["a", "u"]),
        ("u", "r", ["a", "b", "c", "u"]),  # deeper than the two paid levels still loops
    ],
)
def test_bind_refusals(user: str, referrer: str, chain: list[str]) -> None:
    reason = bind_refusal(user, referrer, chain)
    assert isinstance(reason, str)
    assert reason


@pytest.mark.parametrize(
    ("user", "referrer", "chain"),
    [
        ("u", "r", []),
        ("u", "r", ["a"]),
        ("u", "r", ["a", "b", "c"]),
        ("u", "r", ["uu", "U"]),  # names are compared exactly
    ],
)
def test_bind_allowed(user: str, referrer: str, chain: list[str]) -> None:
    assert bind_refusal(user, referrer, chain) is None


def chain_of(user: str, referrer_of: dict[str, str]) -> list[str]:
    """`user`'s referrers, nearest first; stops (and fails the test) on a loop."""
    chain: list[str] = []
    current = user
    while current in referrer_of:
        current = referrer_of[current]
        assert current not in chain and current != user, f"loop through {current!r}"
        chain.append(current)
    return chain


@settings(max_examples=300)
@given(attempts=st.lists(st.tuples(users, users), max_size=25))
def test_bindings_never_make_a_loop(attempts: list[tuple[str, str]]) -> None:
    """Bind whoever `bind_refusal` allows: the referral graph stays a forest, and a bind
    is refused only when it really would have closed a loop."""
    referrer_of: dict[str, str] = {}
    for user, referrer in attempts:
        if user in referrer_of:
            continue  # a user binds once
        upstream = chain_of(referrer, referrer_of)
        reason = bind_refusal(user, referrer, upstream)
        would_loop = referrer == user or user in upstream
        assert (reason is not None) == would_loop
        if reason is None:
            referrer_of[user] = referrer
    for user in referrer_of:
        chain_of(user, referrer_of)  # fails on a loop


@pytest.mark.parametrize("level", [0, 3, -1])
def test_only_two_levels_have_rates(level: int) -> None:
    with pytest.raises(ValueError, match="levels 1 and 2"):
        Rates(1000, 300).of(level)


@pytest.mark.parametrize("level1, level2", [(10.5, 0), (True, 0), (1000, 2.0)])
def test_rates_are_integer_basis_points(level1: object, level2: object) -> None:
    with pytest.raises(TypeError):
        Rates(level1, level2)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", [1.5, 100.0, True])
def test_an_order_amount_is_integer_fen(amount: object) -> None:
    with pytest.raises(ValueError, match="integer"):
        shares("buyer", amount, ["a"], Rates(1000, 300))  # type: ignore[arg-type]


@pytest.mark.parametrize("move", [post, settle, reverse])
@pytest.mark.parametrize("amount", [0, -5, 2.5])
def test_a_movement_is_a_positive_amount(move: Callable[[str, int], list[Line]],
                                         amount: object) -> None:
    with pytest.raises(ValueError, match="positive"):
        move("u", amount)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(credits=st.lists(st.tuples(users, st.integers(min_value=1, max_value=10**12)),
                        max_size=20))
def test_a_compound_posting_balances_and_keeps_the_credits_order(
        credits: list[tuple[str, int]]) -> None:
    lines = post_all(credits)
    if not credits:
        assert lines == []
        return
    shop, *rest = lines
    assert balanced(lines)
    assert shop == Line(SHOP, -sum(amount for _, amount in credits))
    assert rest == [Line(pending(user), amount) for user, amount in credits]


def test_a_compound_posting_refuses_a_zero_credit() -> None:
    with pytest.raises(ValueError, match="positive"):
        post_all([("a", 5), ("b", 0)])


# --- binding modes ---------------------------------------------------------------------

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
MINUTE, DAY = timedelta(minutes=1), timedelta(days=1)
PERMANENT = BindingPolicy()
EXPIRING = BindingPolicy("expiring", valid_days=7, protect_minutes=30)
LATEST = BindingPolicy("latest", protect_minutes=30)
BOUND = Bound("r1", T0)  # u was brought in by r1 at T0


@pytest.mark.parametrize(
    ("case", "current", "referrer", "chain", "at", "permanent", "expiring", "latest"),
    [
        ("fresh bind", None, "r1", [], T0, "bound", "bound", "bound"),
        ("fresh bind, deep chain", None, "r1", ["a", "b", "c"], T0, "bound", "bound",
         "bound"),
        ("same again at once", BOUND, "r1", [], T0, "unchanged", "unchanged", "unchanged"),
        ("same again much later", BOUND, "r1", [], T0 + 400 * DAY, "unchanged", "unchanged",
         "unchanged"),
        ("other inside protection", BOUND, "r2", [], T0 + 29 * MINUTE, "already_bound",
         "already_bound", "already_bound"),
        ("other as protection ends", BOUND, "r2", [], T0 + 30 * MINUTE, "already_bound",
         "already_bound", "moved"),
        ("other inside validity", BOUND, "r2", [], T0 + 7 * DAY - MINUTE, "already_bound",
         "already_bound", "moved"),
        ("other as validity ends", BOUND, "r2", [], T0 + 7 * DAY, "already_bound", "moved",
         "moved"),
        ("other long after", BOUND, "r2", ["x"], T0 + 400 * DAY, "already_bound", "moved",
         "moved"),
        ("self, unbound", None, "u", [], T0, "invalid_request", "invalid_request",
         "invalid_request"),
        # Binding to oneself is wrong whoever one is bound to: never "already bound".
        ("self, bound", BOUND, "u", [], T0 + MINUTE, "invalid_request", "invalid_request",
         "invalid_request"),
        ("self, once free", BOUND, "u", [], T0 + 400 * DAY, "invalid_request",
         "invalid_request", "invalid_request"),
        ("loop: r2 came through u", None, "r2", ["u"], T0, "invalid_request",
         "invalid_request", "invalid_request"),
        ("loop: r2 came through x through u", None, "r2", ["x", "u"], T0, "invalid_request",
         "invalid_request", "invalid_request"),
        # u took r2 in; u may not now move under r2 (that would close u -> r2 -> u).
        ("loop through rebinding", BOUND, "r2", ["u"], T0 + 400 * DAY, "already_bound",
         "invalid_request", "invalid_request"),
        ("loop through rebinding, deeper", BOUND, "r2", ["x", "y", "u"], T0 + 400 * DAY,
         "already_bound", "invalid_request", "invalid_request"),
    ],
)
def test_bind_decisions_in_every_mode(case: str, current: Bound | None, referrer: str,
                                      chain: list[str], at: datetime, permanent: str,
                                      expiring: str, latest: str) -> None:
    for policy, expected in ((PERMANENT, permanent), (EXPIRING, expiring), (LATEST, latest)):
        decision = decide_bind("u", referrer, current, chain, policy, at)
        found = decision.code if decision.outcome == "refused" else decision.outcome
        assert found == expected, (case, policy.mode, decision)
        assert (decision.outcome == "refused") == bool(decision.message)


def test_a_refusal_inside_protection_says_from_when_the_user_is_free() -> None:
    decision = decide_bind("u", "r2", BOUND, [], EXPIRING, T0 + MINUTE)
    assert decision.code == "already_bound"
    assert "from 2026-03-08T12:00:00.000Z" in decision.message  # the API's time format
    decision = decide_bind("u", "r2", BOUND, [], LATEST, T0 + MINUTE)
    assert "from 2026-03-01T12:30:00.000Z" in decision.message
    assert "already" in decide_bind("u", "r2", BOUND, [], PERMANENT, T0).message


@pytest.mark.parametrize(("policy", "free_at"), [
    (PERMANENT, None),
    (BindingPolicy("latest"), T0),  # no protection: the next share takes over
    (LATEST, T0 + 30 * MINUTE),
    (EXPIRING, T0 + 7 * DAY),
    (BindingPolicy("expiring", valid_days=1), T0 + DAY),
    # A protection longer than the validity holds the user for the protection.
    (BindingPolicy("expiring", valid_days=1, protect_minutes=2000), T0 + 2000 * MINUTE),
])
def test_when_a_binding_may_be_taken_over(policy: BindingPolicy, free_at: datetime | None
                                          ) -> None:
    assert policy.free_at(T0) == free_at


@pytest.mark.parametrize("kwargs", [
    {"mode": "forever"}, {"mode": "Latest"}, {"valid_days": 0}, {"valid_days": 1.5},
    {"protect_minutes": -1}, {"protect_minutes": True},
])
def test_bad_binding_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        BindingPolicy(**kwargs)


policies = st.sampled_from([
    PERMANENT, EXPIRING, LATEST, BindingPolicy("latest"),
    BindingPolicy("expiring", valid_days=1, protect_minutes=0),
    BindingPolicy("expiring", valid_days=1, protect_minutes=3000)])
steps = st.lists(st.tuples(users, users, st.integers(0, 3 * 24 * 60)), max_size=40)


@settings(max_examples=300)
@given(policy=policies, attempts=steps)
def test_random_binds_in_every_mode_never_loop(policy: BindingPolicy,
                                               attempts: list[tuple[str, str, int]]) -> None:
    """Bind (and take over) whatever `decide_bind` allows, the clock moving on between
    attempts: the bindings in force stay a forest with one referrer per user, a binding
    is taken over only once the policy frees it, and a refusal for a loop is a real one."""
    referrer_of: dict[str, Bound] = {}
    history: list[tuple[str, str, datetime, datetime | None]] = []
    now = T0
    for user, referrer, minutes in attempts:
        now += timedelta(minutes=minutes)
        current = referrer_of.get(user)
        upstream = chain_of(referrer, {u: b.referrer for u, b in referrer_of.items()})
        decision = decide_bind(user, referrer, current, upstream, policy, now)
        if decision.outcome == "unchanged":
            assert current is not None and current.referrer == referrer
        elif decision.outcome == "refused" and decision.code == "invalid_request":
            assert referrer == user or user in upstream
        elif decision.outcome == "refused":
            assert current is not None and decision.code == "already_bound"
            free_at = policy.free_at(current.bound_at)
            assert free_at is None or now < free_at
        else:
            assert (current is None) == (decision.outcome == "bound")
            if current is not None:
                free_at = policy.free_at(current.bound_at)
                assert free_at is not None and free_at <= now
                history = [(u, r, b, now if (u, e) == (user, None) else e)
                           for u, r, b, e in history]
            referrer_of[user] = Bound(referrer, now)
            history.append((user, referrer, now, None))
    in_force = {u: b.referrer for u, b in referrer_of.items()}
    for user in in_force:
        chain_of(user, in_force)  # fails on a loop
    open_ones = [(u, r) for u, r, _, ended in history if ended is None]
    assert sorted(open_ones) == sorted(in_force.items())  # one binding in force per user


@settings(max_examples=300)
@given(policy=policies, bound=st.sampled_from([None, BOUND]), referrer=users,
       chain=st.lists(users, max_size=4), minutes=st.integers(0, 10 * 24 * 60))
def test_a_decision_the_binding_in_force_makes_alone_needs_no_chain(
        policy: BindingPolicy, bound: Bound | None, referrer: str, chain: list[str],
        minutes: int) -> None:
    now = T0 + timedelta(minutes=minutes)
    decided = decide_bind(BUYER, referrer, bound, chain, policy, now)
    if not needs_chain(referrer, bound, policy, now):
        assert decide_bind(BUYER, referrer, bound, (), policy, now) == decided
        assert (decided.outcome == "unchanged" or decided.code == "already_bound"
                or (referrer == BUYER and decided.code == "invalid_request"))
