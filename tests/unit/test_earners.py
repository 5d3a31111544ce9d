"""Who earns commission, self-purchase and distributor grades: pure rules and their config.

Rules are tested without I/O (games.commission); the config tables go through
`storage.config.parse` as a `config.toml` would.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from games.commission import (
    BPS,
    LEVELS,
    Grade,
    GradeStats,
    Rates,
    grade_of,
    may_earn,
    shares,
    upgrade,
)
from storage.config import ConfigError, parse
from storage.distributors import month_of
from tests.support import configs

DEFAULT = Rates(1000, 300)
SILVER = Grade("silver", "银牌", Rates(1500, 400), min_settled_sales_month_fen=100_000,
               min_direct_buyers=3, match="all")
GOLD = Grade("gold", "金牌", Rates(2000, 500), min_settled_sales_month_fen=500_000,
             min_own_spend_fen=50_000, match="any")
GRADES = (Grade("normal", "普通", DEFAULT), SILVER, GOLD)


def everyone(_: str) -> bool:
    return True


def only(*users: str) -> Any:
    return set(users).__contains__


def earned(found: Sequence[Any]) -> list[tuple[int, str, int, int]]:
    return [(s.level, s.beneficiary, s.rate_bps, s.amount) for s in found]


# --- who may earn -------------------------------------------------------------------------


@pytest.mark.parametrize(("earners", "status", "spend", "least", "expected"), [
    ("everyone", None, 0, 0, True),
    ("everyone", "revoked", 0, 0, True),
    ("approved", "approved", 0, 0, True),
    ("approved", "applied", 10**9, 0, False),
    ("approved", "revoked", 0, 0, False),
    ("approved", None, 0, 0, False),
    # Own spend: at the threshold earns, one fen under does not.
    ("spend", None, 10_000, 10_000, True),
    ("spend", None, 9_999, 10_000, False),
    ("spend", "approved", 0, 1, False),
])
def test_who_may_earn(earners: str, status: str | None, spend: int, least: int,
                      expected: bool) -> None:
    assert may_earn(earners, status, spend, least) is expected


def test_an_unknown_earners_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="earners"):
        may_earn("friends", None, 0, 0)


# --- shares: eligibility and self-purchase ------------------------------------------------


@pytest.mark.parametrize(("chain", "self_purchase", "eligible", "expected"), [
    # Today's behaviour: both referrers, the buyer never.
    (["a", "b"], False, everyone, [(1, "a", 1000, 1000), (2, "b", 300, 300)]),
    (["a", "b"], True, only("a", "b"), [(1, "a", 1000, 1000), (2, "b", 300, 300)]),
    # An ineligible level is skipped, never passed on further up.
    (["a", "b"], False, only("b"), [(2, "b", 300, 300)]),
    (["a", "b"], False, only("a"), [(1, "a", 1000, 1000)]),
    (["a", "b"], False, only(), []),
    # Self-purchase: the buyer is level 1, their referrer level 2; b is never reached.
    (["a", "b"], True, everyone, [(1, "buyer", 1000, 1000), (2, "a", 300, 300)]),
    (["a", "b"], True, only("buyer"), [(1, "buyer", 1000, 1000)]),
    (["a", "b"], True, only("buyer", "b"), [(1, "buyer", 1000, 1000)]),
    ([], True, everyone, [(1, "buyer", 1000, 1000)]),
    ([], False, everyone, []),
    # Self-purchase on, the buyer not a distributor: the chain earns as usual.
    (["a", "b"], True, only("a", "b"), [(1, "a", 1000, 1000), (2, "b", 300, 300)]),
    (["a"], True, only("a"), [(1, "a", 1000, 1000)]),
])
def test_eligibility_and_self_purchase(chain: list[str], self_purchase: bool, eligible: Any,
                                       expected: list[tuple[int, str, int, int]]) -> None:
    found = shares("buyer", 10_000, chain, DEFAULT, self_purchase=self_purchase,
                   eligible=eligible)
    assert earned(found) == expected


def test_each_level_earns_at_its_beneficiarys_grade() -> None:
    graded = {"a": GOLD.rates, "b": SILVER.rates}
    assert earned(shares("buyer", 10_000, ["a", "b"], DEFAULT, graded=graded)) == [
        (1, "a", 2000, 2000), (2, "b", 400, 400)]
    # A beneficiary without a grade of their own earns the default rates.
    assert earned(shares("buyer", 10_000, ["a", "c"], DEFAULT, graded=graded)) == [
        (1, "a", 2000, 2000), (2, "c", 300, 300)]
    assert earned(shares("buyer", 10_000, ["a"], DEFAULT, self_purchase=True,
                         graded={"buyer": SILVER.rates})) == [
        (1, "buyer", 1500, 1500), (2, "a", 300, 300)]


@st.composite
def rate_pairs(draw: st.DrawFn) -> Rates:
    level1 = draw(st.integers(0, BPS))
    return Rates(level1, draw(st.integers(0, BPS - level1)))


names = st.sampled_from(["a", "b", "c", "d", "buyer"])


@st.composite
def grade_tables(draw: st.DrawFn) -> dict[str, Rates]:
    """Users' grade rates as a config allows them: the highest level-1 rate and the
    highest level-2 rate together within the order (storage.config checks it)."""
    top = draw(rate_pairs())
    return draw(st.dictionaries(names, st.builds(
        Rates, st.integers(0, top.level1_bps), st.integers(0, top.level2_bps))))


@given(amount=st.integers(0, 10**12), chain=st.lists(names, max_size=5),
       default=rate_pairs(), graded=grade_tables(),
       allowed=st.sets(names), self_purchase=st.booleans())
def test_shares_never_go_past_two_levels_nor_the_order(
        amount: int, chain: list[str], default: Rates, graded: dict[str, Rates],
        allowed: set[str], self_purchase: bool) -> None:
    found = shares("buyer", amount, chain, default, self_purchase=self_purchase,
                   eligible=allowed.__contains__, graded=graded)
    assert len(found) <= LEVELS and len({s.level for s in found}) == len(found)
    assert len({s.beneficiary for s in found}) == len(found)
    assert sum(s.amount for s in found) <= amount
    own = self_purchase and "buyer" in allowed
    # Who may be reached: the buyer only under self-purchase; never past the second step.
    reach = (["buyer", *chain[:1]] if own else chain[:2])
    for share in found:
        assert share.beneficiary in allowed
        assert share.beneficiary == reach[share.level - 1]
        assert share.beneficiary != "buyer" or own
        # The rate is the earner's grade's (else the default), at this level.
        assert share.rate_bps == graded.get(share.beneficiary, default).of(share.level)
        assert share.amount == amount * share.rate_bps // BPS > 0


# --- grades ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("grade", "stats", "expected"), [
    # AND: every condition asked, each at its boundary.
    (SILVER, GradeStats(100_000, 3, 0), True),
    (SILVER, GradeStats(99_999, 3, 0), False),
    (SILVER, GradeStats(100_000, 2, 0), False),
    (SILVER, GradeStats(10**9, 100, 0), True),
    # OR: one is enough; the unasked condition (direct buyers) plays no part.
    (GOLD, GradeStats(500_000, 0, 0), True),
    (GOLD, GradeStats(0, 100, 50_000), True),
    (GOLD, GradeStats(499_999, 100, 49_999), False),
    # A grade that asks nothing is everyone's.
    (GRADES[0], GradeStats(), True),
])
def test_grade_conditions(grade: Grade, stats: GradeStats, expected: bool) -> None:
    assert grade.reached(stats) is expected


@pytest.mark.parametrize(("current", "stats", "expected"), [
    (None, GradeStats(), None),
    (None, GradeStats(100_000, 3, 0), "silver"),
    ("normal", GradeStats(100_000, 3, 0), "silver"),
    # Straight to the highest grade reached, skipping the one between.
    (None, GradeStats(0, 0, 50_000), "gold"),
    ("normal", GradeStats(600_000, 3, 0), "gold"),
    # Already there: no change; never down, however quiet the month.
    ("silver", GradeStats(100_000, 3, 0), None),
    ("gold", GradeStats(), None),
    ("silver", GradeStats(), None),
    # A grade since removed from config counts as the first.
    ("platinum", GradeStats(100_000, 3, 0), "silver"),
])
def test_upgrades_only_go_up(current: str | None, stats: GradeStats,
                             expected: str | None) -> None:
    found = upgrade(GRADES, current, stats)
    assert (None if found is None else found.id) == expected


def test_no_grades_no_grade() -> None:
    assert grade_of((), None) is None and upgrade((), None, GradeStats(10**9, 9, 9)) is None
    assert grade_of(GRADES, None) == GRADES[0] and grade_of(GRADES, "gold") == GOLD


stats_st = st.builds(GradeStats, st.integers(0, 10**7), st.integers(0, 10), st.integers(0, 10**6))


@given(current=st.sampled_from([None, "normal", "silver", "gold"]), stats=stats_st)
def test_an_upgrade_is_higher_and_reached(current: str | None, stats: GradeStats) -> None:
    before = grade_of(GRADES, current)
    assert before is not None
    after = upgrade(GRADES, current, stats)
    if after is not None:
        assert GRADES.index(after) > GRADES.index(before) and after.reached(stats)
    # Nothing higher than what it chose (or than where it stays) is reached.
    top = GRADES.index(after or before)
    assert not any(g.reached(stats) for g in GRADES[top + 1:])


@pytest.mark.parametrize(("moment", "zone", "start", "end"), [
    # 2026-11-30 17:00 UTC is 2026-12-01 01:00 in Shanghai: December there.
    (datetime(2026, 11, 30, 17, tzinfo=UTC), "Asia/Shanghai",
     datetime(2026, 11, 30, 16, tzinfo=UTC), datetime(2026, 12, 31, 16, tzinfo=UTC)),
    (datetime(2026, 11, 30, 15, 59, tzinfo=UTC), "Asia/Shanghai",
     datetime(2026, 10, 31, 16, tzinfo=UTC), datetime(2026, 11, 30, 16, tzinfo=UTC)),
    (datetime(2026, 12, 15, tzinfo=UTC), "UTC",
     datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)),
])
def test_the_sales_month_is_the_shops_calendar_month(moment: datetime, zone: str,
                                                     start: datetime, end: datetime) -> None:
    assert month_of(moment, zone) == (start, end)


# --- config -------------------------------------------------------------------------------


def document(commission: dict[str, Any], *campaigns: dict[str, Any]) -> dict[str, Any]:
    doc = configs.document(list(campaigns) or [configs.campaign("c1")])
    doc["commission"] = commission
    return doc


GRADE_TABLES: list[dict[str, Any]] = [
    {"id": "normal", "title": "普通"},
    {"id": "silver", "title": "银牌", "level1_bps": 1500, "level2_bps": 400,
     "min_settled_sales_month_fen": 100_000, "min_direct_buyers": 3},
    {"id": "gold", "title": "金牌", "level1_bps": 2000, "level2_bps": 500, "match": "any",
     "min_settled_sales_month_fen": 500_000, "min_own_spend_fen": 50_000},
]


def test_earner_defaults_are_todays_behaviour() -> None:
    commission = parse(configs.document([configs.campaign("c1")]), {}, "t").commission
    assert (commission.earners, commission.earner_min_spend_fen, commission.self_purchase,
            commission.grades) == ("everyone", 0, False, ())


def test_grades_parse_lowest_first_with_the_shops_rates_as_defaults() -> None:
    config = parse(document({"earners": "spend", "earner_min_spend_fen": 9900,
                             "self_purchase": True, "grades": GRADE_TABLES}), {}, "t")
    commission = config.commission
    assert (commission.earners, commission.earner_min_spend_fen) == ("spend", 9900)
    assert commission.self_purchase is True
    assert commission.grades == GRADES


def test_a_campaigns_own_rates_beat_grades() -> None:
    own = configs.campaign("own")
    own["commission"] = {"level1_bps": 0, "level2_bps": 0}  # commission off
    config = parse(document({"grades": GRADE_TABLES}, configs.campaign("c1"), own), {}, "t")
    assert config.own_rates == frozenset({"own"})
    assert config.graded_rates("own", ["a"], {"a": "gold"}) == {}
    assert config.commission_rates("own") == Rates(0, 0)
    assert config.graded_rates("c1", ["a", "b"], {"a": "gold"}) == {
        "a": GOLD.rates, "b": DEFAULT}
    # Without grades, nobody has rates of their own.
    plain = parse(document({}), {}, "t")
    assert plain.graded_rates("c1", ["a"], {"a": "gold"}) == {}


BAD: list[Any] = [
    pytest.param({"earners": "friends"}, "commission.earners", id="earners-unknown"),
    pytest.param({"earners": "spend"}, "commission.earner_min_spend_fen",
                 id="spend-without-threshold"),
    pytest.param({"earner_min_spend_fen": -1}, "commission.earner_min_spend_fen",
                 id="spend-negative"),
    pytest.param({"self_purchase": 1}, "commission.self_purchase", id="self-purchase-int"),
    pytest.param({"grades": {"id": "x"}}, "commission.grades", id="grades-not-array"),
    pytest.param({"grades": [{"id": "normal", "title": "普通", "min_direct_buyers": 1}]},
                 "commission.grades[0].min_direct_buyers", id="first-grade-with-condition"),
    pytest.param({"grades": [GRADE_TABLES[0], {"id": "silver", "title": "银牌"}]},
                 "commission.grades[1].id", id="upper-grade-without-condition"),
    pytest.param({"grades": [GRADE_TABLES[0], {**GRADE_TABLES[1], "id": "normal"}]},
                 "commission.grades[1].id", id="grade-id-twice"),
    pytest.param({"grades": [{"id": "Gold!", "title": "x"}]}, "commission.grades[0].id",
                 id="grade-id-shape"),
    pytest.param({"grades": [{"id": "g", "title": ""}]}, "commission.grades[0].title",
                 id="grade-title-empty"),
    pytest.param({"grades": [GRADE_TABLES[0], {**GRADE_TABLES[1], "match": "some"}]},
                 "commission.grades[1].match", id="match-unknown"),
    pytest.param({"grades": [GRADE_TABLES[0], {**GRADE_TABLES[1], "min_direct_buyers": -1}]},
                 "commission.grades[1].min_direct_buyers", id="condition-negative"),
    pytest.param({"grades": [GRADE_TABLES[0], {**GRADE_TABLES[1], "level1_bps": 9800}]},
                 "commission.grades[1].level2_bps", id="grade-rates-over-the-order"),
    # Each grade fits in the order, but a gold level 1 with another grade's level 2 not.
    pytest.param({"grades": [{**GRADE_TABLES[0], "level1_bps": 0, "level2_bps": 4000},
                             {**GRADE_TABLES[2], "level1_bps": 7000, "level2_bps": 0}]},
                 "commission.grades", id="grades-mixed-over-the-order"),
    pytest.param({"grades": [{**GRADE_TABLES[0], "color": "grey"}]},
                 "commission.grades[0].color", id="grade-unknown-key"),
    pytest.param({"grades": [GRADE_TABLES[0], {**GRADE_TABLES[1], "min_own_spend_fen": "1"}]},
                 "commission.grades[1].min_own_spend_fen", id="condition-string"),
]


@pytest.mark.parametrize(("table", "key"), BAD)
def test_bad_earner_config_names_its_key(table: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(document(table), {}, "t")
    assert info.value.key == key


def test_the_example_config_parses_with_its_grades_off() -> None:
    path = Path(__file__).resolve().parents[2] / "config.toml"
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    commission = parse(data, {"FISSION_AUTH_SECRET": "x" * 32}, str(path)).commission
    assert commission.earners == "everyone" and commission.self_purchase is False
    assert commission.grades == ()


def test_the_example_grades_parse_once_uncommented() -> None:
    path = Path(__file__).resolve().parents[2] / "config.toml"
    text = path.read_text(encoding="utf-8")
    head, _, tail = text.partition("# [[commission.grades]]")
    block, _, rest = ("# [[commission.grades]]" + tail).partition("\n\n")
    lines = [line[2:] if line.startswith("# ") else line for line in block.splitlines()]
    data = tomllib.loads(head + "\n".join(lines) + "\n\n" + rest)
    grades = parse(data, {"FISSION_AUTH_SECRET": "x" * 32}, str(path)).commission.grades
    assert [(g.id, g.title, g.match) for g in grades] == [
        ("normal", "普通", "all"), ("silver", "银牌", "all"), ("gold", "金牌", "any")]
    assert grades[2].min_own_spend_fen == 500_000 and grades[2].min_direct_buyers is None
