"""The bench's leaderboard scenario: what a generator keeps of the frames its sockets saw,
the lag from a deal's commit to the frame first showing it (counted, never expanded,
and equal to the expanded samples' percentiles), the frame rates, the boards
deployment's config, what fails a run (broken invariants, never lag or rate) and the
report's section."""

from __future__ import annotations

import math
import random
import tomllib
from array import array
from pathlib import Path
from typing import Any

from bench import boards
from bench.__main__ import FULL, SCENARIOS, SMOKE, failures
from bench.boards import BoardWatch, Ledger, lag_groups, lag_summary, pair_quantile
from bench.report import boards_checks, boards_tables, percentile, render
from bench.stack import (
    BOARD,
    BOARD_DEAL_CAMPAIGNS,
    BOARD_RANKS,
    BOARD_SELLERS,
    boards_config_document,
)
from games.leaderboard.campaign import BoardCampaign
from storage.config import parse
from tests.support import configs

CLEAN = dict.fromkeys(boards.BROKEN, 0)


def _result(**extra: Any) -> dict[str, Any]:
    return {"sockets": 5000, "offered_deals_per_s": 1000, "deals": 9990,
            "deals_per_s": 999.0, "orders": 19_980, "sellers": 10, "units": 9990,
            "frames": 20, "frames_seconds": 10.6, "acked": 19_980, "committed": 19_980,
            "pipeline_lag_p50_ms": 40.0, "pipeline_lag_p99_ms": 120.0,
            "lag": {"samples": 49_950_000, "p50_ms": 420.0, "p99_ms": 860.0, "max_ms": 990.0},
            "on_sockets": {"frames_per_s": 1.9, "busiest_1s": 2, "closest_ms": 480.0,
                           "bursts": 0, "frames_received": 100_000, "gaps": 0,
                           "inconsistent": 0},
            "owner": {"frames": 20, "frames_per_s": 1.9, "busiest_1s": 2,
                      "closest_ms": 501.0},
            "notices": {"notices": 19_980, "taken": 19_980, "taken_per_s": 1998.0,
                        "peak_per_s": 2100, "wait_p50_ms": 30.0, "wait_p99_ms": 90.0,
                        "wait_max_ms": 150.0},
            "storm": {"p50_ms": 3.0, "p99_ms": 12.0},
            "load_1m": 2.5, "others_cores": 0.3, **CLEAN, **extra}


def _results(**extra: Any) -> dict[str, Any]:
    return {"mode": "test", "machine": {"cpus": 2}, "team_size": 7, "storm": [],
            "invariants": {"overfull": 0, "oversold": 0, "lost_acks": 0, "acked": 0,
                           "committed": 0}, **extra}


# --- what a generator keeps of its sockets' frames ----------------------------------------


def test_a_watch_groups_arrivals_by_the_two_frames_a_socket_saw_in_a_row() -> None:
    watch = BoardWatch(2)
    watch.snapshot(0, 3, {})
    watch.snapshot(1, 3, {})
    assert not watch.frame(0, 4, {"s": 10}, 1000.0)
    assert not watch.frame(1, 4, {"s": 10}, 1004.0)
    assert not watch.frame(0, 3, {}, 1005.0)  # covered by its snapshot: ignored
    watch.frame(0, 5, {"s": 20}, 1600.0)
    watch.frame(1, 6, {"s": 30}, 2300.0)  # it never got 5 as an event
    assert watch.frames == {3: {}, 4: {"s": 10}, 5: {"s": 20}, 6: {"s": 30}}
    assert {k: list(v) for k, v in watch.groups.items()} == {
        (3, 4): [1000.0, 1004.0], (4, 5): [1600.0], (4, 6): [2300.0]}
    assert watch.first == {4: 1000.0, 5: 1600.0, 6: 2300.0}
    assert watch.gaps == 1 and watch.inconsistent == 0
    assert watch.closest_ms == 600.0 and watch.bursts == 0
    watch.frame(0, 6, {"s": 31}, 1700.0)  # the same seq showing other scores
    assert watch.inconsistent == 1
    assert watch.bursts == 1  # three frames on socket 0 within 1 s (1000, 1600, 1700)


def test_a_watch_says_when_every_socket_shows_the_final_scores() -> None:
    watch = BoardWatch(2)
    watch.snapshot(0, 1, {})
    watch.snapshot(1, 1, {})
    watch.frame(0, 2, {"s": 10}, 1.0)
    assert watch.expect({"s": 10}) is False and watch.matched == 1
    assert watch.frame(1, 2, {"s": 10}, 2.0) is True and watch.matched == 2
    # a socket whose subscribe failed shows nothing: it is not waited for
    partial = BoardWatch(2)
    partial.snapshot(0, 1, {})
    assert partial.subscribed == 1 and partial.expect({}) is True


def test_scores_of_reads_a_frames_entries() -> None:
    assert boards.scores_of([{"rank": 1, "user": "a", "score": 12000},
                             {"rank": 2, "user": "b", "score": 6000}]) == {"a": 12000,
                                                                           "b": 6000}


# --- the lag ---------------------------------------------------------------------------------


def test_a_ledger_counts_the_units_a_board_shows_in_commit_order() -> None:
    ledger = Ledger.of([("a", 300.0, 12000), ("a", 100.0, 12000), ("b", 200.0, 6000),
                        ("a", 200.0, 12000)])
    assert ledger.totals == {"a": [12000, 24000, 36000], "b": [6000]}
    assert ledger.commits == {"a": [100.0, 200.0, 300.0], "b": [200.0]}
    assert ledger.units() == 4
    assert ledger.shown({"a": 24000}) == {"a": 2, "b": 0}
    assert ledger.shown({"a": 30000, "b": 6000}) == {"a": 2, "b": 1}  # half a unit: not yet
    assert sorted(ledger.first_shown({"a": 12000}, {"a": 36000, "b": 6000})) == [
        200.0, 200.0, 300.0]
    assert ledger.first_shown({"a": 36000}, {"a": 36000}) == []


def test_each_unit_is_timed_to_the_first_frame_showing_it_on_each_socket() -> None:
    ledger = Ledger.of([("a", 100.0, 10), ("a", 400.0, 10), ("b", 450.0, 5)])
    frames = {1: {}, 2: {"a": 10}, 3: {"a": 20, "b": 5}, 4: {"a": 20, "b": 5}}
    arrivals = {(1, 2): [700.0, 650.0], (2, 3): [1300.0], (1, 3): [1400.0],
                (3, 4): [1800.0], (0, 2): [999.0]}  # no snapshot of seq 0: left out
    groups = lag_groups(ledger, frames, arrivals)
    assert sorted((list(a), sorted(c)) for a, c in groups) == [
        ([650.0, 700.0], [100.0]), ([1300.0], [400.0, 450.0]),
        ([1400.0], [100.0, 400.0, 450.0])]
    samples = sorted(x - c for a, cs in groups for x in a for c in cs)
    assert samples == [550.0, 600.0, 850.0, 900.0, 950.0, 1000.0, 1300.0]
    found = lag_summary(groups)
    assert found["samples"] == 7 and found["max_ms"] == 1300.0
    assert math.isclose(found["p50_ms"], 900.0, abs_tol=0.01)
    assert math.isclose(found["p99_ms"], 1300.0, abs_tol=0.01)


def test_counted_percentiles_equal_those_of_the_expanded_samples() -> None:
    rng = random.Random(14)
    groups = []
    for _ in range(30):
        commits = [rng.uniform(0, 10_000) for _ in range(rng.randint(1, 40))]
        arrivals = sorted(max(commits) + rng.expovariate(1 / 300) for _ in
                          range(rng.randint(1, 60)))
        groups.append((arrivals, commits))
    samples = [a - c for arrivals, commits in groups for a in arrivals for c in commits]
    for q in (0.0, 0.5, 0.9, 0.99, 1.0):
        assert math.isclose(pair_quantile(groups, q), percentile(samples, q), abs_tol=0.01)
    assert lag_summary(groups)["max_ms"] == max(samples)


def test_no_samples_is_nan() -> None:
    assert math.isnan(pair_quantile([], 0.99))
    empty = lag_summary([])
    assert empty["samples"] == 0 and math.isnan(empty["p99_ms"]) and math.isnan(
        empty["max_ms"])


# --- frame rates and the checks' helpers -----------------------------------------------------


def test_rate_counts_frames_in_the_window_and_the_most_in_any_second() -> None:
    times = [0.0, 500.0, 1000.0, 1499.0, 1500.0, 3000.0, 9000.0]
    per_s, busiest = boards.rate(times, 0.0, 4000.0)
    assert per_s == 6 / 4 and busiest == 3  # 1000, 1499 and 1500 within one second
    assert boards.rate([], 0.0, 1000.0) == (0.0, 0)


def test_closest_and_too_close_read_consecutive_flushes() -> None:
    assert boards.closest([1500.0, 0.0, 501.0]) == 501.0
    assert boards.closest([1.0]) == math.inf
    assert boards.too_close([0.0, 500.0, 999.0, 1600.0]) == 1  # 500 → 999
    assert boards.too_close([0.0, 499.0], window=400.0) == 0


def test_mismatch_counts_sellers_off_either_way() -> None:
    assert boards.mismatch({"a": 1, "b": 2}, {"a": 1, "b": 2}) == 0
    assert boards.mismatch({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == 2
    assert boards.mismatch({"a": 1}, {}) == 1


def test_merge_joins_the_generators_answers() -> None:
    def answer(arrivals: list[float], first: float, frame: dict[str, int]) -> dict[str, Any]:
        return {"frames": {1: {}, 2: frame}, "groups": [((1, 2), array("d", arrivals)
                                                          .tobytes())],
                "first": {2: first}, "gaps": 1, "inconsistent": 0, "bursts": 2,
                "sockets": 3, "subscribed": 3, "matched": 3, "closest_ms": first,
                "frames_received": 3}

    seen = boards.merge([answer([5.0, 6.0], 5.0, {"a": 1}), answer([4.0], 4.0, {"a": 2})])
    assert seen["frames"] == {1: {}, 2: {"a": 1}} and seen["inconsistent"] == 1
    assert {k: list(v) for k, v in seen["arrivals"].items()} == {(1, 2): [5.0, 6.0, 4.0]}
    assert seen["first"] == {2: 4.0} and seen["closest_ms"] == 4.0
    assert (seen["gaps"], seen["bursts"], seen["sockets"], seen["subscribed"],
            seen["matched"], seen["frames_received"]) == (2, 4, 6, 6, 6, 6)


# --- what fails a run ------------------------------------------------------------------------


def test_broken_invariants_fail_the_run_and_lag_or_frame_rate_never_do() -> None:
    slow = _result(lag={"samples": 10, "p50_ms": 5000.0, "p99_ms": 9000.0, "max_ms": 9e4},
                   on_sockets={**_result()["on_sockets"], "frames_per_s": 3.0,
                               "busiest_1s": 4, "bursts": 50})
    assert boards.failures(slow) == [] and failures(_results(boards=slow)) == []
    broken = _result(scores_mismatch=2, sockets_stale=7, frames_too_close=1)
    assert boards.failures(broken) == ["boards scores_mismatch = 2",
                                       "boards sockets_stale = 7",
                                       "boards frames_too_close = 1"]
    assert "boards sockets_stale = 7" in failures(_results(boards=broken))
    assert boards.failures(_result(deals=0, frames=0)) == [
        "boards: no deal was made", "boards: no board frame reached a socket"]
    assert boards.failures(None) == []  # the scenario did not run
    unchecked = _result()
    del unchecked["read_mismatch"]
    assert boards.failures(unchecked) == ["boards read_mismatch = None"]


# --- the deployment and the plan --------------------------------------------------------------


def test_the_boards_deployment_has_a_sales_board_every_seller_shows_on(tmp_path: Path) -> None:
    doc = boards_config_document("postgresql://bench@127.0.0.1:5432/x",
                                 "redis://127.0.0.1:6379", "127.0.0.1:6379", "ns", tmp_path)
    # as the gateway reads it: through the TOML file the bench writes
    config = parse(tomllib.loads(configs.to_toml(doc)), {}, "bench-boards.toml")
    board = config.campaign(BOARD)
    assert isinstance(board, BoardCampaign)
    assert (board.metric, board.period, board.scope) == ("sales", "all", "everyone")
    assert board.ranks == BOARD_RANKS >= len(BOARD_SELLERS)
    deals = [c for c in config.campaigns if c.kind == "groupbuy"]
    assert sorted(c.id for c in deals) == sorted(BOARD_DEAL_CAMPAIGNS)
    # pairs: every round a deal
    assert all(t["group_size"] == 2 for t in doc["campaigns"] if t["kind"] == "groupbuy")


def test_the_boards_scenario_runs_in_both_plans_the_smoke_one_small() -> None:
    assert "boards" in SCENARIOS and "boards" in FULL.scenarios and "boards" in SMOKE.scenarios
    assert (FULL.board_sockets, FULL.board_rate, FULL.board_seconds) == (5000, 1000, 10.0)
    assert SMOKE.board_sockets <= 200 and SMOKE.board_seconds <= 5


# --- the report -----------------------------------------------------------------------------


def test_the_report_shows_the_lag_the_frame_rates_and_the_absorbed_notices() -> None:
    lines = boards_tables(_results(boards=_result()))
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines
            if line.startswith("|")][2:]
    assert rows[0] == ["deal's commit → the board frame showing it, on each socket",
                       "49,950,000", "420", "860", "990"]
    assert rows[1][1:] == ["9,990", "40", "120", "–"]
    assert rows[2][1:] == ["19,980", "30", "90", "150"]
    text = "\n".join(lines)
    assert "### i. Leaderboard: 5,000 homepage sockets watching one board" in text
    assert "1,000 deals/s offered: 999 deals/s made" in text
    assert "to the last frame (10.6 s): 1.90 on the sockets" in text
    assert "1,998 notices/s" in text
    assert "load: 2.50" in text
    assert "### i. Leaderboard" in render(_results(boards=_result()))
    assert boards_tables(_results()) == []
    assert boards_checks(_result()).endswith("acked-but-not-committed 0 (19,980 acked).")
