"""The bench's bargain scenario as the report prints it, what fails a run, and the mall
baseline's cut rule."""

from __future__ import annotations

import random
from typing import Any

from bench.__main__ import bargain_failures, failures
from bench.mall_baseline import draw_cut
from bench.report import bargain_tables, load_line, merge_counts, render, run_label

CLEAN = {"below_floor": 0, "price_mismatch": 0, "helped_twice": 0, "floor_missed": 0,
         "lost_acks": 0, "acked": 300, "helps": 300, "bargains": 3}


def _run(system: str, teams: int, helps_per_s: float, p99: float, **extra: Any
         ) -> dict[str, Any]:
    return {"system": system, "teams": teams, "sockets": teams * 103,
            "helps_per_s": helps_per_s, "helps": int(helps_per_s * 8), "starts": 3,
            "rounds": 3, "floors": 3, "below_floor_seen": 0, "p50_ms": p99 / 2,
            "p99_ms": p99, "codes": {"bargain_closed": 6}, "cpu": {}, "load_1m": 1.5,
            "others_cores": 0.25, **extra}


RUNS = [
    _run("fission_ws", 2, 3000, 80.0),
    _run("fission_http", 2, 2000, 120.0),
    _run("mall", 2, 600, 900.0),
    _run("fission_ws", 8, 4000, 200.0),
]
PACED = _run("fission_ws", 8, 1990, 60.0, target_fraction=0.5, target_helps_per_s=2000)
SPREAD = _run("fission_ws", 8, 1985, 40.0, target_fraction=0.5, target_helps_per_s=2000,
              arrivals="spread", arrival_share=0.8, load_1m=1.25)


def _results(**extra: Any) -> dict[str, Any]:
    return {"mode": "test", "machine": {"cpus": 2}, "team_size": 7, "storm": [],
            "invariants": {"overfull": 0, "oversold": 0, "lost_acks": 0, "acked": 0,
                           "committed": 0},
            "bargain": RUNS, "bargain_paced": PACED, "bargain_paced_spread": SPREAD,
            "bargain_invariants": CLEAN,
            "mall_bargain_invariants": CLEAN, **extra}


def _rows(lines: list[str]) -> list[list[str]]:
    table = [line for line in lines if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.split("|")[1:-1]] for row in table]


def test_a_row_per_level_with_each_system_and_the_ratios_to_the_mall() -> None:
    rows = _rows(bargain_tables(_results()))
    assert rows == [
        ["2 (206)", "3,000 (40.0 / 80.0)", "2,000 (60.0 / 120.0)", "600 (450.0 / 900.0)",
         "5.00×", "3.33×"],
        # no mall run at 8 teams: its cells and ratios are dashes
        ["8 (824)", "4,000 (100.0 / 200.0)", "–", "–", "–×", "–×"],
    ]


def test_the_paced_run_refusals_floors_load_and_checks_are_printed() -> None:
    text = "\n".join(bargain_tables(_results()))
    assert ("Fission /ws paced at 50% of its peak (2,000 helps/s offered by 8 teams, each"
            " round's helpers at once): 1,990 helps/s, ack p50 30.0 ms, p99 60.0 ms") in text
    assert ("Fission /ws paced at 50% of its peak (2,000 helps/s offered by 8 teams, each"
            " round's helpers arriving one by one, at random within the first 80% of its"
            " interval): 1,985 helps/s, ack p50 20.0 ms, p99 40.0 ms") in text
    assert "fission_ws@8p: {'bargain_closed': 6}" in text
    assert "fission_ws@8ps 1.25, 0.25" in text
    assert "mall@2: 3 (3)" in text
    assert "fission_ws@8p 1.50, 0.25" in text
    assert "Fission: cuts below the floor 0, price ≠ list − cuts 0" in text
    assert "Answers showing a price below the floor: 0." in text
    # and the whole report carries the section
    assert "### f. Bargain help storm" in render(_results())


def test_no_bargain_runs_no_section() -> None:
    assert bargain_tables(_results(bargain=[])) == []
    assert "Bargain" not in render(_results(bargain=[]))


def test_a_clean_bargain_run_passes() -> None:
    assert bargain_failures(_results()) == []
    assert failures(_results()) == []
    assert bargain_failures({"storm": []}) == []  # the scenario did not run


def test_broken_invariants_and_empty_runs_fail_the_run() -> None:
    broken = _results(bargain_invariants={**CLEAN, "below_floor": 1, "lost_acks": 2},
                      mall_bargain_invariants={**CLEAN, "helped_twice": 1})
    assert bargain_failures(broken) == ["Fission bargain below_floor = 1",
                                        "Fission bargain lost_acks = 2",
                                        "mall bargain helped_twice = 1"]
    dead = _results(bargain=[_run("mall", 2, 0, 0.0)],
                    bargain_paced={**PACED, "below_floor_seen": 4},
                    bargain_paced_spread={**SPREAD, "helps": 0})
    assert bargain_failures(dead) == [
        "bargain mall at 2 teams acknowledged no help",
        "bargain fission_ws at 8 teams paced (burst): 4 answers showed a price below the"
        " floor",
        "bargain fission_ws at 8 teams paced (spread) acknowledged no help"]
    unchecked = _results()
    del unchecked["mall_bargain_invariants"]
    assert bargain_failures(unchecked) == ["mall bargain invariants were not checked"]


def test_counts_merge_most_frequent_first() -> None:
    assert merge_counts([{"a": 1, "b": 5}, {"a": 1, "c": 1}, {}]) == {"b": 5, "a": 2, "c": 1}
    assert list(merge_counts([{"a": 1, "b": 5}])) == ["b", "a"]


def test_run_labels_and_the_load_line() -> None:
    assert run_label(RUNS[0]) == "fission_ws@2"
    assert run_label(PACED) == "fission_ws@8p"
    assert load_line([{"system": "mall", "teams": 4}]) == []  # recorded nothing
    assert load_line([RUNS[2]])[1].endswith("mall@2 1.50, 0.25")


def test_the_malls_cuts_reach_the_floor_exactly_and_never_pass_it() -> None:
    rng_state = random.getstate()
    try:
        random.seed(7)
        for distance, helpers in ((9000, 100), (100, 100), (101, 100), (5, 2), (3, 3)):
            remaining = distance
            for left in range(helpers, 0, -1):
                cut = draw_cut(remaining, left)
                assert 1 <= cut <= remaining - (left - 1)  # 1 fen left for each after it
                remaining -= cut
            assert remaining == 0  # the last helper took the remainder
    finally:
        random.setstate(rng_state)
