"""The lottery's fairness core: distribution, no modulo bias, replay, verification, tables,
and known answers pinned independently of the module."""

from __future__ import annotations

import hashlib
import hmac
import math
from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from games.lottery.fairness import (
    SEED_BYTES,
    THANKS,
    Ledger,
    Prize,
    _limit,
    _reduce,
    available_ids,
    check_table,
    commitment,
    draw_number,
    initial_stock,
    outcome,
    pick,
    total_weight,
    verify,
)

SEED = bytes(range(32))
SPACE = 1 << 256
K = TypeVar("K")


def thanks(weight: int) -> Prize:
    return Prize(THANKS, "谢谢参与", weight, None, THANKS, None)


def prize(id: str, weight: int, stock: int, kind: str = "product",
          max_wins: int | None = None) -> Prize:
    return Prize(id, id.upper(), weight, stock, kind, max_wins)


# --- chi-square without scipy -------------------------------------------------------------


def gamma_q(a: float, x: float) -> float:
    """The regularized upper incomplete gamma function Q(a, x) = Γ(a, x) / Γ(a).

    The series for P = 1 - Q below x < a + 1 (where it converges fast), the continued
    fraction for Q (modified Lentz) above, as in Numerical Recipes' gser/gcf.
    """
    if a <= 0 or x < 0:
        raise ValueError("need a > 0 and x >= 0")
    if x == 0:
        return 1.0
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        ap = a
        for _ in range(100_000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-16:
                break
        return 1.0 - total * math.exp(log_front)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 100_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-16:
            break
    return math.exp(log_front) * h


def chi2_sf(statistic: float, df: int) -> float:
    """P(X >= statistic) for X chi-square with `df` degrees of freedom."""
    return gamma_q(df / 2, statistic / 2)


def chi2_p(observed: Mapping[K, int], expected: Mapping[K, float]) -> float:
    """The p-value of Pearson's goodness-of-fit test (df = categories - 1)."""
    assert set(observed) <= set(expected)
    statistic = sum((observed.get(k, 0) - e) ** 2 / e for k, e in expected.items())
    return chi2_sf(statistic, len(expected) - 1)


@pytest.mark.parametrize(("statistic", "df", "sf"), [
    (3.841459, 1, 0.05),      # the familiar 5% critical value, 1 df
    (6.634897, 1, 0.01),
    (11.344867, 3, 0.01),     # 1% critical value, 3 df
    (7.814728, 3, 0.05),
    (124.342113, 100, 0.05),  # a large df, continued-fraction branch
    (77.929465, 100, 0.95),   # large df, series branch
])
def test_chi2_sf_matches_tabulated_critical_values(statistic: float, df: int, sf: float) -> None:
    assert chi2_sf(statistic, df) == pytest.approx(sf, abs=1e-6)


@pytest.mark.parametrize("x", [0.1, 0.5, 2.0, 3.0, 10.0, 40.0])
def test_chi2_sf_matches_closed_forms_for_even_df(x: float) -> None:
    # df = 2: e^{-x/2}; df = 4: e^{-x/2}(1 + x/2). Both branches are hit across these x.
    assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-12)
    assert chi2_sf(x, 4) == pytest.approx(math.exp(-x / 2) * (1 + x / 2), rel=1e-12)
    assert chi2_sf(0.0, 3) == 1.0


# --- distribution -----------------------------------------------------------------------------


def test_100k_draws_follow_the_weights() -> None:
    # Stock never runs out, so the draw is the plain weighted one: 1 : 5 : 20 : 74.
    table = [prize("a", 1, 10**9), prize("b", 5, 10**9, "coupon"),
             prize("c", 20, 10**9, "points"), thanks(74)]
    ledger = Ledger(table)
    counts: Counter[str] = Counter()
    for user in range(100):
        for n in range(1, 1001):
            counts[ledger.draw(SEED, "spring", f"user-{user}", n).id] += 1
    assert sum(counts.values()) == 100_000
    expected = {p.id: 100_000 * p.weight / 100 for p in table}
    assert chi2_p(counts, expected) > 0.001
    assert all(ledger.stock_left(p.id) == 10**9 - counts[p.id] for p in table[:3])


# --- no modulo bias -------------------------------------------------------------------------


@pytest.mark.parametrize("total", [3, 7, 100, 10**9 + 7])
def test_the_rejection_limit_is_the_largest_multiple_below_2_256(total: int) -> None:
    limit = _limit(total)
    assert SPACE % total != 0  # these totals do not divide 2**256: a plain modulo is biased
    assert limit % total == 0 and 0 < SPACE - limit < total
    assert limit == SPACE - SPACE % total
    # Exactly limit // total accepted values of x map to each r.
    assert _reduce(limit - 1, total) == (limit - 1) % total
    assert _reduce(0, total) == 0
    assert _reduce(limit, total) is None
    assert _reduce(SPACE - 1, total) is None


def test_reduce_for_a_power_of_two_never_rejects_and_refuses_out_of_range() -> None:
    assert _limit(64) == SPACE
    assert _reduce(SPACE - 1, 64) == 63
    assert _limit(3) == SPACE - 1 and _limit(7) == SPACE - 2  # 2**256 ≡ 1 (mod 3), 2 (mod 7)
    with pytest.raises(ValueError):
        _reduce(SPACE, 3)
    with pytest.raises(ValueError):
        _reduce(-1, 3)


def reference_r(seed: bytes, campaign: str, user: str, n: int, total: int) -> tuple[int, int]:
    """(r, k used) computed straight from hmac, as an outside verifier would."""
    message = f"{campaign}:{user}:{n}"
    limit = (2**256 // total) * total
    k = 0
    while True:
        msg = message if k == 0 else f"{message}:{k}"
        x = int.from_bytes(hmac.new(seed, msg.encode("utf-8"), hashlib.sha256).digest(), "big")
        if x < limit:
            return x % total, k
        k += 1


def test_rejection_sampling_reads_further_blocks_when_a_block_is_rejected() -> None:
    # With W = 2**255 + 1 the limit is W itself, so about half the blocks are rejected:
    # the loop over k is exercised for real, and must agree with the reference.
    total = 2**255 + 1
    assert _limit(total) == total
    ks: Counter[int] = Counter()
    for n in range(1, 201):
        r, k = reference_r(SEED, "c", "u", n, total)
        assert draw_number(SEED, "c", "u", n, total) == r
        assert 0 <= r < total
        ks[k] += 1
    assert ks[0] > 0 and sum(c for k, c in ks.items() if k >= 1) > 0
    assert sum(c for k, c in ks.items() if k >= 2) > 0


@pytest.mark.parametrize(("total", "draws"), [(3, 30_000), (7, 70_000)])
def test_r_is_uniform_over_0_to_total(total: int, draws: int) -> None:
    counts: Counter[int] = Counter(
        draw_number(SEED, "uniform", f"u{i % 50}", i // 50 + 1, total) for i in range(draws))
    assert set(counts) == set(range(total))
    assert chi2_p(counts, {r: draws / total for r in range(total)}) > 0.001


def test_draw_number_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="seed"):
        draw_number(b"short", "c", "u", 1, 10)
    with pytest.raises(ValueError, match="start at 1"):
        draw_number(SEED, "c", "u", 0, 10)
    with pytest.raises(ValueError, match="total"):
        draw_number(SEED, "c", "u", 1, 0)
    with pytest.raises(ValueError, match="total"):
        draw_number(SEED, "c", "u", 1, SPACE + 1)
    assert SEED_BYTES == 32


# --- mapping r to a prize -------------------------------------------------------------------


def test_pick_walks_the_table_in_order_with_unavailable_weight_moved_to_thanks() -> None:
    table = [prize("a", 2, 1), prize("b", 3, 1), thanks(5)]
    everything = [pick(table, {"a", "b"}, r).id for r in range(10)]
    assert everything == ["a"] * 2 + ["b"] * 3 + ["thanks"] * 5
    no_b = [pick(table, {"a"}, r).id for r in range(10)]
    assert no_b == ["a"] * 2 + ["thanks"] * 8
    nothing = [pick(table, set(), r).id for r in range(10)]
    assert nothing == ["thanks"] * 10
    # "thanks" first: its slot grows where it stands, the later prizes shift up.
    first = [thanks(5), prize("a", 2, 1), prize("b", 3, 1)]
    assert [pick(first, {"b"}, r).id for r in range(10)] == ["thanks"] * 7 + ["b"] * 3
    with pytest.raises(ValueError):
        pick(table, {"a"}, 10)


def test_a_zero_weight_prize_is_never_picked() -> None:
    table = [prize("zero", 0, 5), prize("a", 1, 5), thanks(1)]
    assert [pick(table, {"zero", "a"}, r).id for r in range(2)] == ["a", "thanks"]


def test_availability_is_stock_and_the_users_cap() -> None:
    table = [prize("a", 1, 2, max_wins=1), prize("b", 1, 0), prize("c", 1, 3), thanks(1)]
    stock = initial_stock(table)
    assert stock == {"a": 2, "b": 0, "c": 3}
    assert available_ids(table, stock, {}) == {"a", "c"}
    assert available_ids(table, stock, {"a": 1, "c": 7}) == {"c"}  # c has no cap
    assert available_ids(table, {**stock, "c": 0}, {"a": 1}) == frozenset()


# --- determinism and verification -----------------------------------------------------------

SCARCE = [prize("phone", 3, 2, max_wins=1), prize("coupon", 10, 15, "coupon", max_wins=2),
          prize("points", 30, 40, "points"), thanks(57)]


def play(seed: bytes, users: list[str], rounds: int) -> list[tuple[str, int, str]]:
    ledger = Ledger(SCARCE)
    record = []
    for n in range(1, rounds + 1):
        for user in users:
            record.append((user, n, ledger.draw(seed, "scarce", user, n).id))
    return record


def test_a_replay_from_the_seed_reproduces_every_outcome() -> None:
    record = play(SEED, ["alice", "bob", "carol"], 40)
    assert play(SEED, ["alice", "bob", "carol"], 40) == record
    # Stock ran out along the way, so the replay covered the exhausted case too.
    won = Counter(prize_id for _, _, prize_id in record)
    assert won["phone"] == 2 and won["coupon"] == 6 and won["points"] == 40
    assert verify(SEED, commitment(SEED), "scarce", SCARCE, record) == (
        verify(SEED, commitment(SEED).upper(), "scarce", SCARCE, iter(record)))
    verdict = verify(SEED, commitment(SEED), "scarce", SCARCE, record)
    assert verdict.ok and verdict.checked == len(record) and verdict.first_mismatch is None


@pytest.mark.parametrize("index", [0, 7, 59, 119])
def test_a_changed_outcome_is_reported_at_its_index(index: int) -> None:
    record = play(SEED, ["alice", "bob", "carol"], 40)
    user, n, original = record[index]
    changed = "thanks" if original != "thanks" else "points"
    record[index] = (user, n, changed)
    verdict = verify(SEED, commitment(SEED), "scarce", SCARCE, record)
    assert not verdict.ok
    assert verdict.first_mismatch == index and verdict.checked == index
    assert (verdict.expected, verdict.found) == (original, changed)


def test_a_wrong_seed_fails_the_commitment() -> None:
    record = play(SEED, ["alice"], 10)
    other = bytes(reversed(SEED))
    verdict = verify(other, commitment(SEED), "scarce", SCARCE, record)
    assert not verdict.ok and verdict.checked == 0 and verdict.first_mismatch is None
    assert "commitment" in verdict.reason
    assert not verify(b"x" * 31, commitment(b"x" * 31), "scarce", SCARCE, record).ok
    # The right seed under another campaign name replays differently somewhere.
    assert not verify(SEED, commitment(SEED), "other", SCARCE, play(SEED, ["a", "b"], 40)).ok


def test_a_gap_or_a_repeat_in_n_is_reported() -> None:
    record = play(SEED, ["alice", "bob"], 5)  # alice 1, bob 1, alice 2, bob 2, ...
    gap = record[:2] + record[3:]             # alice's n=2 missing: her n=3 is at index 3
    verdict = verify(SEED, commitment(SEED), "scarce", SCARCE, gap)
    assert not verdict.ok and verdict.first_mismatch == 3 and verdict.checked == 3
    assert "n=3" in verdict.reason and "expected n=2" in verdict.reason
    repeat = record[:3] + [record[2]] + record[3:]
    assert verify(SEED, commitment(SEED), "scarce", SCARCE, repeat).first_mismatch == 3
    from_zero = [("alice", 0, "thanks")]
    assert verify(SEED, commitment(SEED), "scarce", SCARCE, from_zero).first_mismatch == 0


def test_verify_refuses_a_bad_table_and_accepts_no_draws() -> None:
    verdict = verify(SEED, commitment(SEED), "c", [prize("a", 1, 1)], [])
    assert not verdict.ok and "bad prize table" in verdict.reason
    assert verify(SEED, commitment(SEED), "c", SCARCE, []).ok


def test_outcome_is_pure() -> None:
    stock = MappingProxyType(initial_stock(SCARCE))
    wins = MappingProxyType({"phone": 1})
    first = outcome(SEED, "scarce", SCARCE, stock, wins, "alice", 3)
    assert all(outcome(SEED, "scarce", SCARCE, stock, wins, "alice", 3) == first
               for _ in range(3))
    assert dict(stock) == initial_stock(SCARCE) and dict(wins) == {"phone": 1}
    assert first.id != "phone"  # capped for alice


# --- property: random tables and draws ------------------------------------------------------


@st.composite
def tables(draw: st.DrawFn) -> list[Prize]:
    count = draw(st.integers(1, 6))
    table = [
        Prize(f"p{i}", f"Prize {i}", draw(st.integers(0, 50)), draw(st.integers(0, 5)),
              draw(st.sampled_from(["product", "coupon", "points"])),
              draw(st.none() | st.integers(1, 3)))
        for i in range(count)
    ]
    table.insert(draw(st.integers(0, count)), thanks(draw(st.integers(0, 50))))
    assume(total_weight(table) > 0)
    return table


@settings(max_examples=200, deadline=None)
@given(table=tables(), seed=st.binary(min_size=32, max_size=32),
       campaign=st.text(max_size=8),
       users=st.lists(st.sampled_from(["ann", "ben", "cy"]), max_size=60),
       tamper=st.integers(0, 10**6))
def test_random_tables_never_overdraw_and_always_verify(
    table: list[Prize], seed: bytes, campaign: str, users: list[str], tamper: int,
) -> None:
    check_table(table)
    ledger = Ledger(table)
    drawn: Counter[str] = Counter()
    record: list[tuple[str, int, str]] = []
    for user in users:
        drawn[user] += 1
        n = drawn[user]
        stock_before = ledger.stock_snapshot()
        wins_before = ledger.wins_of(user)
        pure = outcome(seed, campaign, table, MappingProxyType(stock_before),
                       MappingProxyType(wins_before), user, n)
        got = ledger.draw(seed, campaign, user, n)
        assert got == pure
        if got.kind != THANKS:
            assert stock_before[got.id] > 0
            assert got.max_wins is None or wins_before.get(got.id, 0) < got.max_wins
        assert all(left >= 0 for left in ledger.stock_snapshot().values())
        record.append((user, n, got.id))
    for p in table:
        if p.stock is not None:
            won = sum(ledger.wins(user, p.id) for user in set(users))
            assert ledger.stock_left(p.id) == p.stock - won
            assert p.max_wins is None or all(
                ledger.wins(user, p.id) <= p.max_wins for user in set(users))
    verdict = verify(seed, commitment(seed), campaign, table, record)
    assert verdict.ok and verdict.checked == len(record)
    if record:
        index = tamper % len(record)
        user, n, original = record[index]
        others = [p.id for p in table if p.id != original]
        record[index] = (user, n, others[tamper % len(others)])
        verdict = verify(seed, commitment(seed), campaign, table, record)
        assert not verdict.ok and verdict.first_mismatch == index and verdict.checked == index
        assert verdict.expected == original


# --- table checks -------------------------------------------------------------------------


@pytest.mark.parametrize(("table", "message"), [
    ([], "empty"),
    ([prize("a", 1, 1)], "exactly one 'thanks'"),
    ([thanks(1), Prize("thanks", "again", 1, None, THANKS, None)], "duplicate"),
    ([thanks(1), Prize("thanks2", "again", 1, None, THANKS, None)], "id 'thanks'"),
    ([prize("a", -1, 1), thanks(2)], "weight"),
    ([prize("a", 0, 1), thanks(0)], "total weight"),
    ([prize("a", 1, 1), Prize(THANKS, "t", 1, 5, THANKS, None)], "stock must be None"),
    ([prize("a", 1, 1), Prize(THANKS, "t", 1, None, THANKS, 2)], "never capped"),
    ([prize("a", 1, 1), prize("a", 2, 2), thanks(1)], "duplicate"),
    ([prize("a", 1, -1), thanks(1)], "stock"),
    ([Prize("a", "A", 1, None, "product", None), thanks(1)], "stock"),
    ([prize("a", 1, 1, kind="jackpot"), thanks(1)], "kind"),
    ([prize("a", 1, 1, max_wins=0), thanks(1)], "max_wins"),
    ([Prize(THANKS, "t", 1, 1, "product", None), thanks(1)], "reserved"),
    ([prize("", 1, 1), thanks(1)], "non-empty"),
    ([Prize("a", "A", True, 1, "product", None), thanks(1)], "weight"),
])
def test_bad_tables_raise(table: list[Prize], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_table(table)
    with pytest.raises(ValueError):
        Ledger(table)


def test_good_tables_pass() -> None:
    check_table(SCARCE)
    check_table([thanks(1)])                       # nothing but thanks is a (dull) table
    check_table([prize("a", 0, 0), thanks(1)])     # zero weight and zero stock are allowed


# --- known answers, computed outside the module ---------------------------------------------

# For seed bytes(range(32)), campaign "c1", user "u1": these literals were computed with
# hashlib/hmac alone (the test below recomputes them so), never with games.lottery.
KAT_COMMITMENT = "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
KAT_BLOCK_1 = "477212a018aedce2962c9c6beeabb7a4dc119bb063deaaa282f213932e2460bb"
KAT_R_W100 = [39, 59, 60, 28, 65, 23]  # r for n = 1..6 with W = 100 (no block rejected)
# The table below over those r: a is r 0-29, b 30-59, c 60-79, thanks 80-99.
# n=1 r=39 -> b (u1 now at b's cap); n=2 r=59: b's 30 go to thanks, thanks is 50-99 -> thanks;
# n=3 r=60 -> thanks; n=4 r=28 -> a (its only unit); n=5 r=65: a and b out, so c is 0-19
# and thanks 20-99 -> thanks; n=6 r=23 -> thanks likewise.
KAT_TABLE = [prize("a", 30, 1), prize("b", 30, 5, "coupon", max_wins=1),
             prize("c", 20, 10, "points"), thanks(20)]
KAT_OUTCOMES = ["b", "thanks", "thanks", "a", "thanks", "thanks"]


def test_known_answers_are_what_hmac_gives() -> None:
    assert hashlib.sha256(SEED).hexdigest() == KAT_COMMITMENT
    block = hmac.new(SEED, b"c1:u1:1", hashlib.sha256).digest()
    assert block.hex() == KAT_BLOCK_1
    limit = (2**256 // 100) * 100
    for n, r in enumerate(KAT_R_W100, start=1):
        x = int.from_bytes(hmac.new(SEED, f"c1:u1:{n}".encode(), hashlib.sha256).digest(), "big")
        assert x < limit and x % 100 == r


def test_the_module_gives_the_known_answers() -> None:
    assert commitment(SEED) == KAT_COMMITMENT
    assert [draw_number(SEED, "c1", "u1", n, 100) for n in range(1, 7)] == KAT_R_W100
    ledger = Ledger(KAT_TABLE)
    assert [ledger.draw(SEED, "c1", "u1", n).id for n in range(1, 7)] == KAT_OUTCOMES
    record = [("u1", n, prize_id) for n, prize_id in enumerate(KAT_OUTCOMES, start=1)]
    assert verify(SEED, KAT_COMMITMENT, "c1", KAT_TABLE, record).ok
