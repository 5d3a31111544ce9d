"""The leaderboard's pure rules: periods in a time zone, scores once per order, refunds,
ties to whoever reached the score first, coalesced flushes and periods closed once."""

from __future__ import annotations

import itertools
import random
from datetime import datetime
from typing import Any, cast

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from games.commission import Rates
from games.core import RankedGame
from games.errors import GameError
from games.leaderboard import GAME, periods, rules
from games.leaderboard.campaign import BoardCampaign, parse_campaign
from games.leaderboard.rules import (
    EVERYONE,
    FLUSH_MS,
    BoardState,
    Facts,
    Flushed,
    PeriodClosed,
    Score,
    Tick,
    Unscore,
)
from games.settings import ConfigError, Table

RNG = random.Random(0)
# The game's ranked reads (games.core.RankedGame, what the gateway checks for): GAME is
# typed as the plain Game protocol, which does not name them.
RANKED = cast(RankedGame, GAME)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def board(**over: Any) -> BoardCampaign:
    fields: dict[str, Any] = {
        "id": "b", "title": "B", "starts_at": ms("2026-01-01T00:00:00+08:00"),
        "ends_at": ms("2030-01-01T00:00:00+08:00"), "metric": "sales", "period": "weekly",
        "scope": "everyone", "ranks": 3}
    fields.update(over)
    return BoardCampaign(**fields)


# --- periods ----------------------------------------------------------------------------


@pytest.mark.parametrize(("period", "reset", "moment", "name"), [
    # Shanghai is UTC+8: 2026-11-30 16:00 UTC is Tuesday 00:00 there.
    ("weekly", 0, "2026-12-01T00:00:00+08:00", "2026-W49"),
    ("weekly", 0, "2026-11-30T00:00:00+08:00", "2026-W49"),  # Monday starts the week
    ("weekly", 0, "2026-11-29T23:59:59+08:00", "2026-W48"),
    ("weekly", 0, "2026-11-29T16:00:00+00:00", "2026-W49"),  # UTC Sunday, Monday there
    ("weekly", 360, "2026-11-30T05:59:59+08:00", "2026-W48"),  # before the 06:00 reset
    ("weekly", 0, "2027-01-01T00:00:00+08:00", "2026-W53"),  # ISO weeks
    ("daily", 0, "2026-12-01T23:59:59+08:00", "2026-12-01"),
    ("daily", 360, "2026-12-02T05:00:00+08:00", "2026-12-01"),
    ("monthly", 0, "2026-12-31T23:59:59+08:00", "2026-12"),
    ("monthly", 0, "2026-12-31T16:00:00+00:00", "2027-01"),
    ("all", 0, "2026-12-01T00:00:00+08:00", "all"),
])
def test_a_moment_falls_in_the_period_of_its_local_time(period: str, reset: int,
                                                        moment: str, name: str) -> None:
    b = board(period=period, reset_minutes=reset)
    assert periods.period_of(b, ms(moment)) == name
    assert periods.valid(b, name)
    start, end = periods.bounds(b, name)
    assert start <= ms(moment) < end
    assert periods.period_of(b, start) == name and periods.period_of(b, end - 1) == name
    assert periods.period_of(b, end) == periods.following(b, name) != name or period == "all"


@pytest.mark.parametrize(("period", "name"), [
    ("weekly", "2026-12"), ("weekly", "2026-W54"), ("daily", "2026-02-30"),
    ("monthly", "2026-13"), ("monthly", "2026-W01"), ("all", "2026-12"),
    # Periods whose end is no date (year 10000), and before any epoch-ms moment.
    ("weekly", "9999-W52"), ("monthly", "9999-12"), ("daily", "9999-12-31"),
    ("weekly", "0001-W01"), ("daily", "1969-12-31"),
])
def test_a_name_of_another_kind_of_period_is_no_period(period: str, name: str) -> None:
    assert not periods.valid(board(period=period), name)


def test_a_weekly_period_starts_on_monday_at_the_reset_in_the_zone() -> None:
    b = board(reset_minutes=360)
    assert periods.bounds(b, "2026-W49") == (ms("2026-11-30T06:00:00+08:00"),
                                             ms("2026-12-07T06:00:00+08:00"))


def test_config_refusals_name_their_key() -> None:
    base = {"id": "b", "kind": "leaderboard", "title": "B", "metric": "sales",
            "period": "weekly", "starts_at": "2026-01-01T00:00:00+08:00",
            "ends_at": "2027-01-01T00:00:00+08:00"}
    good = parse_campaign(Table("t", "campaigns[0]", dict(base)), Rates(0, 0))
    assert (good.scope, good.ranks, good.zone) == ("everyone", 10, "Asia/Shanghai")
    regional = parse_campaign(Table("t", "campaigns[0]", {**base, "scope": "region",
                                                          "regions": ["YN", "SH"]}),
                              Rates(0, 0))
    assert regional.regions == ("YN", "SH") and regional.public()["regions"] == ["YN", "SH"]
    for key, value in (("metric", "likes"), ("period", "yearly"), ("scope", "city"),
                       ("ranks", 0), ("reset_at", "24:00"), ("time_zone", "Mars/Base"),
                       ("regions", ["YN"]),  # on a board of everyone
                       ("keep_days", 0),
                       ("extra", 1)):
        with pytest.raises(ConfigError, match=key):
            parse_campaign(Table("t", "campaigns[0]", {**base, key: value}), Rates(0, 0))
    for regions in (["云南"], ["all"], ["YN", "YN"], [1]):
        with pytest.raises(ConfigError, match="regions"):
            parse_campaign(Table("t", "campaigns[0]", {**base, "scope": "region",
                                                       "regions": regions}), Rates(0, 0))


# --- scores -----------------------------------------------------------------------------

T = ms("2026-12-01T12:00:00+08:00")  # inside 2026-W49


def facts(amount: int, referrer: str | None, at: int = T,
          earned: tuple[tuple[str, int, int], ...] = (),
          regions: dict[str, str] | None = None) -> Facts:
    return Facts(amount, at, referrer, earned, regions or {})


def run(state: BoardState, command: Any, now: int = T) -> tuple[BoardState, list[Any]]:
    events = rules.decide(state, command, now)
    for event in events:
        state = rules.evolve(state, event)
    return state, events


def standings(state: BoardState, period: str = "2026-W49", group: str = EVERYONE
              ) -> list[tuple[str, int]]:
    return [(u, s) for u, s, _ in rules.ranking(state, period, group)]


def test_ties_go_to_whoever_reached_the_score_first() -> None:
    state = rules.initial_state(board())
    for order, (buyer, seller, amount) in enumerate(
            [("x", "carol", 100), ("y", "bob", 300), ("z", "alice", 200),
             ("w", "carol", 200)]):
        state, _ = run(state, Score(f"o{order}", buyer, facts(amount, seller)))
    # bob reached 300 before carol did.
    assert standings(state) == [("bob", 300), ("carol", 300), ("alice", 200)]


def test_an_order_scores_once_and_its_refund_takes_it_back_once() -> None:
    state = rules.initial_state(board())
    state, first = run(state, Score("o1", "x", facts(500, "alice")))
    assert len(first) == 1
    again, repeat = run(state, Score("o1", "x", facts(500, "alice")))
    assert repeat == [] and again is state
    state, _ = run(state, Score("o2", "y", facts(100, "alice")))
    state, back = run(state, Unscore("o1"))
    assert [e.refund for e in back] == [True]
    assert standings(state) == [("alice", 100)]
    assert run(state, Unscore("o1"))[1] == [] and run(state, Unscore("o9"))[1] == []
    state, _ = run(state, Unscore("o2"))
    assert standings(state) == []


@pytest.mark.parametrize(("metric", "expected"), [
    ("sales", [("alice", 700)]),
    ("orders", [("alice", 3)]),
    ("members", [("alice", 2)]),  # x bought twice: one member
    ("commission", [("alice", 70), ("root", 14)]),
])
def test_each_metric_scores_its_own_measure(metric: str, expected: list[tuple[str, int]]
                                           ) -> None:
    state = rules.initial_state(board(metric=metric))
    for order, (buyer, amount) in enumerate([("x", 100), ("x", 200), ("y", 400)]):
        earned = (("alice", 1, amount // 10), ("root", 2, amount // 50))
        state, _ = run(state, Score(f"o{order}", buyer, facts(amount, "alice",
                                                              earned=earned)))
    assert standings(state) == expected


def test_a_member_stops_counting_when_their_last_order_is_refunded() -> None:
    state = rules.initial_state(board(metric="members"))
    state, _ = run(state, Score("o1", "x", facts(100, "alice")))
    state, _ = run(state, Score("o2", "x", facts(100, "alice")))
    state, _ = run(state, Unscore("o1"))
    assert standings(state) == [("alice", 1)]
    state, _ = run(state, Unscore("o2"))
    assert standings(state) == []


def test_a_regional_board_ranks_each_region_and_everyone() -> None:
    state = rules.initial_state(board(scope="region"))
    regions = {"alice": "YN", "bob": "SH"}
    state, _ = run(state, Score("o1", "x", facts(100, "alice", regions=regions)))
    state, _ = run(state, Score("o2", "y", facts(300, "bob", regions=regions)))
    state, _ = run(state, Score("o3", "z", facts(200, "nobody", regions=regions)))
    assert standings(state, group="YN") == [("alice", 100)]
    assert standings(state, group="SH") == [("bob", 300)]
    assert standings(state) == [("bob", 300), ("nobody", 200), ("alice", 100)]


def test_a_self_referral_or_no_referrer_scores_nothing() -> None:
    state = rules.initial_state(board())
    assert run(state, Score("o1", "x", facts(100, None)))[1] == []
    assert run(state, Score("o1", "x", facts(100, "x")))[1] == []


# --- live and periods -------------------------------------------------------------------


def test_scores_are_flushed_once_per_window_with_rank_changes() -> None:
    state = BoardState(board(), "2026-W49")
    state, opened = run(state, Tick("open"), T)
    assert isinstance(opened[0], Flushed) and opened[0].boards == ((EVERYONE, ()),)
    for n in range(20):
        state, _ = run(state, Score(f"o{n}", "x", facts(10 + n, f"s{n % 5}")), T + n)
    assert state.flush_at == T + FLUSH_MS
    assert run(state, Tick("flush"), T + FLUSH_MS - 1)[1] == []
    state, [flushed] = run(state, Tick("flush"), T + FLUSH_MS)
    assert isinstance(flushed, Flushed)
    assert [b[0] for b in flushed.boards] == [EVERYONE]
    assert flushed.boards[0][1] == tuple(standings(state)[:3])
    assert sorted(r[1] for r in flushed.ranks) == [f"s{n}" for n in range(5)]
    assert state.flush_at is None and run(state, Tick("flush"), T + 10_000)[1] == []
    # After a quiet spell a score is shown with its own command, not a window later.
    # One that changes no rank and not the top: no board frame; its seller hears their
    # score, nobody else anything.
    state, [_, quiet] = run(state, Score("p", "y", facts(1, "s0")), T + 20_000)
    assert isinstance(quiet, Flushed) and quiet.boards == () and quiet.at == T + 20_000
    assert quiet.ranks == ((EVERYONE, "s0", 5, 71),)
    assert state.flush_at is None and (T + 20_000, "flush") not in rules.deadlines(state)


def test_frames_are_at_most_one_per_window_and_never_held_back_longer() -> None:
    # Scores arriving at `gaps` apart: each is shown at the first moment a frame may go,
    # once the last frame is FLUSH_MS old (at once after a quiet spell), never later.
    state = BoardState(board(), "2026-W49")
    state, _ = run(state, Tick("open"), T)
    frames, now = [T], T
    for n, gap in enumerate((100, 450, 2_000, 1, 499, 500, 10_000, 3)):
        now += gap
        state, events = run(state, Score(f"o{n}", "x", facts(10 + n, "s1")), now)
        due = max(now, frames[-1] + FLUSH_MS)
        if due == now:
            assert isinstance(events[-1], Flushed) and events[-1].at == now
            frames.append(now)
            continue
        assert len(events) == 1 and state.flush_at == due  # held to the window's end
        assert (state.flush_at, "flush") in rules.deadlines(state)
        state, flushed = run(state, Tick("flush"), state.flush_at)
        assert [type(e) for e in flushed] == [Flushed]
        frames.append(flushed[0].at)
        now = max(now, flushed[0].at)
    assert all(b - a >= FLUSH_MS for a, b in itertools.pairwise(frames))


def test_who_hears_of_their_rank_in_a_flush() -> None:
    state = BoardState(board(ranks=2), "2026-W49")
    for n, amount in enumerate((500, 400, 300, 200, 100)):  # a 500, b 400, c 300 ...
        state, _ = run(state, Score(f"o{n}", "x", facts(amount, "abcde"[n])), T)
    state, _ = run(state, Tick("flush"), T + FLUSH_MS)
    # d jumps to the top: d moved, b fell out of the top two, a moved down in it;
    # c (3rd, now 4th) and e (5th) are neither in the top nor moved: not told. (The last
    # frame is FLUSH_MS old: it is shown at once.)
    state, [_, flushed] = run(state, Score("o9", "y", facts(1000, "d")), T + 1000)
    assert isinstance(flushed, Flushed)
    assert flushed.boards == ((EVERYONE, (("d", 1200), ("a", 500))),)
    assert flushed.ranks == ((EVERYONE, "a", 2, 500), (EVERYONE, "b", 3, 400),
                             (EVERYONE, "d", 1, 1200))
    # A refund that takes a seller off the board: they hear it (no rank).
    state, [_, gone] = run(state, Unscore("o4"), T + 3000)
    assert isinstance(gone, Flushed) and gone.ranks == ((EVERYONE, "e", None, 0),)


def test_ranks_beyond_the_top_are_counted_or_sorted_alike() -> None:
    # More movers beyond the top than are counted one by one: the whole group is sorted.
    for movers in (3, rules.COUNT_AT_MOST + 5):
        state = BoardState(board(ranks=1), "2026-W49")
        state, _ = run(state, Score("top", "x", facts(10_000, "king")), T)  # shown at once
        for n in range(movers):  # within the window the king's frame opened
            state, _ = run(state, Score(f"o{n}", "x", facts(100 * (n % 4 + 1), f"s{n}")),
                           T + 100)
        state, [flushed] = run(state, Tick("flush"), T + FLUSH_MS)
        assert isinstance(flushed, Flushed)
        expected = {u: rank for rank, (u, _) in enumerate(standings(state), start=1)}
        assert {u: r for _, u, r, _ in flushed.ranks} == {
            f"s{n}": expected[f"s{n}"] for n in range(movers)}


def test_configured_regions_have_boards_from_the_start() -> None:
    b = board(scope="region", regions=("YN", "SH"))
    state = BoardState(b, "2026-W49")
    assert (b.starts_at, "open") in rules.deadlines(state)
    state, [opened] = run(state, Tick("open"), T)
    assert isinstance(opened, Flushed)
    assert opened.boards == (("SH", ()), ("YN", ()), (EVERYONE, ()))  # sorted
    assert (b.starts_at, "open") not in rules.deadlines(state)
    assert run(state, Tick("open"), T + 1)[1] == []


def test_a_period_closes_once_on_time_and_late_orders_land_in_their_own() -> None:
    b = board()
    end = periods.bounds(b, "2026-W49")[1]
    state = BoardState(b, "2026-W49")
    state, _ = run(state, Score("o1", "x", facts(100, "alice")))
    assert (end, "close:2026-W49") in rules.deadlines(state)
    assert run(state, Tick("close:2026-W49"), end - 1)[1] == []
    state, [closed] = run(state, Tick("close:2026-W49"), end)
    assert isinstance(closed, PeriodClosed) and closed.next == "2026-W50"
    assert state.champions == (("2026-W49", EVERYONE, (("alice", 100),)),)
    assert run(state, Tick("close:2026-W49"), end + 5)[1] == []  # archived once
    assert (periods.bounds(b, "2026-W50")[1], "close:2026-W50") in rules.deadlines(state)
    # An order made before the end, arriving after it: its own week, not the new one.
    state, _ = run(state, Score("o2", "y", facts(50, "bob", at=end - 1)), end + 10)
    assert standings(state, "2026-W49") == [("alice", 100), ("bob", 50)]
    assert standings(state, "2026-W50") == []
    assert state.champions[0][2] == (("alice", 100),)  # the archive stays as it was


def test_events_survive_their_codec() -> None:
    b = board(scope="region", metric="members")
    state = replayed = BoardState(b, "2026-W49")
    commands: list[tuple[Any, int]] = [
        (Tick("open"), T), (Score("o1", "x", facts(100, "alice", regions={"alice": "YN"})), T),
        (Tick("flush"), T + FLUSH_MS), (Unscore("o1"), T + FLUSH_MS),
        (Tick(f"close:{periods.period_of(b, T)}"), periods.bounds(b, "2026-W49")[1])]
    for command, now in commands:
        state, events = run(state, command, now)
        for event in events:
            replayed = rules.evolve(replayed, GAME.decode(GAME.applied(b, state, event).data))
    assert replayed == state


# --- the property: ranks equal a sort of an independent tally ---------------------------


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 7), st.integers(0, 4),
                          st.integers(1, 5), st.integers(0, 20), st.booleans()),
                min_size=1, max_size=80))
def test_ranks_equal_a_sort_of_the_tally(ops: list[tuple[int, int, int, int, int, bool]]
                                         ) -> None:
    b = board(scope="region", period="daily")
    state = rules.initial_state(b)
    day = 86_400_000
    tally: dict[tuple[str, str, str], tuple[int, int]] = {}  # (period, group, user)
    counted: dict[str, tuple[str, list[tuple[str, str, int]]]] = {}
    refunded: set[str] = set()
    version = 0
    for order_n, seller_n, day_n, amount, region_n, refund in ops:
        order, seller = f"o{order_n}", f"s{seller_n}"
        if refund:
            command: Any = Unscore(order)
        else:
            region = {seller: ["YN", "SH", "BJ"][region_n % 3]} if region_n < 15 else {}
            command = Score(order, f"b{order_n}", facts(amount * 100, seller,
                                                        at=T + day_n * day, regions=region))
        state, events = run(state, command, T)
        # The model: an order counts once; a refund takes it back once.
        if refund and order in counted and order not in refunded:
            refunded.add(order)
            period, changes = counted[order]
            version += 1
            for group, user, delta in changes:
                score = tally[(period, group, user)][0] - delta
                tally[(period, group, user)] = (score, version)
        elif not refund and order not in counted:
            period = periods.period_of(b, T + day_n * day)
            groups = [EVERYONE] + ([command.facts.regions[seller]]
                                   if seller in command.facts.regions else [])
            changes = [(g, seller, amount * 100) for g in groups]
            counted[order] = (period, changes)
            version += 1
            for group, user, delta in changes:
                score = tally.get((period, group, user), (0, 0))[0] + delta
                tally[(period, group, user)] = (score, version)
        assert len(events) <= 1 and state.version == version
    for period, group in {(p, g) for p, g, _ in tally}:
        expected = sorted(((u, s, r) for (p, g, u), (s, r) in tally.items()
                           if p == period and g == group and s > 0),
                          key=lambda e: (-e[1], e[2], e[0]))
        assert rules.ranking(state, period, group) == expected
        assert rules.ranking(state, period, group, 3) == expected[:3]  # a partial pick


# --- the game's reads -------------------------------------------------------------------


def test_reads_validate_period_and_region() -> None:
    b = board()
    with pytest.raises(GameError, match="not a period"):
        RANKED.rank_read(b, "leaderboard.get", "u", {"period": "2026-12"}, T)
    with pytest.raises(GameError, match="no regions"):
        RANKED.rank_read(b, "leaderboard.get", "u", {"region": "YN"}, T)
    good = {"amount": 100, "at": T, "referrer": "alice", "earned": [["alice", 1, 10]],
            "regions": {"alice": "YN", "bob": "云南"}}
    score = GAME.command("leaderboard.score", "u", {"order": "o1", "facts": good})
    assert isinstance(score, Score) and score.facts.regions == {"alice": "YN"}
    for bad in ({"amount": "x"}, {**good, "amount": -1}, {**good, "at": None},
                {**good, "referrer": "a b"}, {**good, "earned": [["alice", 1]]},
                {**good, "earned": [["alice", 1, -5]]}, {**good, "regions": "YN"}, None):
        with pytest.raises(GameError, match="malformed"):
            GAME.command("leaderboard.score", "u", {"order": "o1", "facts": bad})
    champions = GAME.command("leaderboard.champions", "u", {"region": "YN"})
    with pytest.raises(GameError, match="no regions"):
        GAME.decide(rules.initial_state(b), champions, T, RNG)


@pytest.mark.parametrize(("params", "home", "group"), [
    ({}, None, EVERYONE), ({}, "YN", "YN"), ({"region": "SH"}, "YN", "SH"),
    ({"region": "all"}, "YN", EVERYONE), ({}, "all", EVERYONE), ({}, "云南", EVERYONE)])
def test_a_regional_read_defaults_to_the_callers_region(params: dict[str, Any],
                                                       home: str | None, group: str) -> None:
    read = RANKED.rank_read(board(scope="region"), "leaderboard.get", "u",
                          {**params, "home_region": home}, T)
    assert read.group == ("2026-W49", group) and read.count == 3


def test_answers_number_ranks_from_where_the_entries_start() -> None:
    b = board()
    get = RANKED.rank_read(b, "leaderboard.get", "s5", {"limit": 2}, T)
    assert (get.start, get.count, get.around) == (0, 2, None)
    around = RANKED.rank_read(b, "leaderboard.around", "s5", {"k": 2}, T)
    assert around.around == 2 and around.member == "s5"
    answer = RANKED.rank_answer(b, around, 3, [("s3", 500), ("s4", 400), ("s5", 300)],
                              (5, 300), T)
    assert answer["entries"] == [{"rank": 4, "user": "s3", "score": 500},
                                 {"rank": 5, "user": "s4", "score": 400},
                                 {"rank": 6, "user": "s5", "score": 300}]
    assert answer["me"] == {"rank": 6, "score": 300} and answer["period"] == "2026-W49"
    assert answer["final"] is False and answer["region"] is None
    nobody = RANKED.rank_answer(b, around, 0, [], None, T)
    assert nobody["entries"] == [] and nobody["me"] is None


def test_a_reset_moment_a_clock_change_skips_starts_the_day_when_the_clock_reaches_it(
        ) -> None:
    # New York skips 02:00-03:00 on 2026-03-08: a 02:30 reset comes at 03:30 EDT.
    b = board(period="daily", zone="America/New_York", reset_minutes=150)
    moment = ms("2026-03-08T03:10:00-04:00")
    assert periods.period_of(b, moment) == "2026-03-07"
    assert periods.bounds(b, "2026-03-08")[0] == ms("2026-03-08T03:30:00-04:00")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["daily", "weekly", "monthly"]),
       st.sampled_from(["Asia/Shanghai", "America/New_York", "Europe/London", "UTC",
                        "Australia/Lord_Howe"]),
       st.integers(0, 24 * 60 - 1),
       st.integers(ms("2024-01-01T00:00:00+00:00"), ms("2029-01-01T00:00:00+00:00")))
@example("daily", "America/New_York", 150, ms("2026-03-08T07:10:00+00:00"))  # skipped
@example("daily", "America/New_York", 90, ms("2026-11-01T06:10:00+00:00"))  # repeated
@example("weekly", "Europe/London", 60, ms("2026-03-29T00:30:00+00:00"))
def test_every_moment_lies_in_the_bounds_of_its_own_period(period: str, zone: str,
                                                          reset: int, moment: int) -> None:
    b = board(period=period, zone=zone, reset_minutes=reset)
    name = periods.period_of(b, moment)
    start, end = periods.bounds(b, name)
    assert start <= moment < end and periods.valid(b, name)
    assert periods.period_of(b, start) == name == periods.period_of(b, end - 1)
    assert periods.period_of(b, end) == periods.following(b, name) != name


def test_what_no_order_can_change_any_more_is_let_go() -> None:
    b = board(keep_days=10)
    state = BoardState(b, "2026-W49")
    state, _ = run(state, Score("o1", "x", facts(100, "alice")), T)
    later = T + 20 * 86_400_000  # the week of T ended more than keep_days before
    state, _ = run(state, Score("o2", "y", facts(50, "bob", at=later)), later)
    released = rules.release(state, later)
    assert set(released.orders) == {"o2"}  # o1's refund window is long past
    assert ("2026-W49", EVERYONE) not in released.entries  # its week ended before
    assert rules.release(released, later) is released
    # A notice that old changes nothing, so forgetting it scores nothing twice.
    assert run(released, Score("o1", "x", facts(100, "alice")), later)[1] == []
    assert run(released, Unscore("o1"), later)[1] == []
    assert standings(released, periods.period_of(b, later)) == [("bob", 50)]
