"""The bench's held-seat scenario: the lateness summary and the invariants it reads from a
hold's events, the held-seat deployment's config, the report's section, and what fails a
run (broken invariants, never lateness); and the payment-in-the-loop checks of the
storm's deployment in what fails a run."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

from bench import holds
from bench.__main__ import FULL, SCENARIOS, SMOKE, failures
from bench.holds import Hold, lateness, pending_at_once, summarize
from bench.report import holds_checks, holds_tables, paid_orders_line, render
from bench.stack import HOLDS_CAMPAIGN, holds_config_document
from storage.config import parse
from tests.support import configs

CLEAN = {"never_lapsed": 0, "lapsed_twice": 0, "unreleased": 0, "released_twice": 0,
         "still_open": 0, "stock_taken": 0, "seats_holding": 0, "lost_acks": 0}


def _result(**extra: Any) -> dict[str, Any]:
    return {"holds": 10_000, "pending_at_once": 10_000, "acked": 10_000, "opened": 10_000,
            "held": 10_000, "concurrency": 64, "opens_per_s": 2500.0, "open_p50_ms": 20.0,
            "open_p99_ms": 80.0, "hold_seconds": 30, "load_1m": 2.5, "others_cores": 0.4,
            "timer": {"n": 10_000, "p50_ms": 3.0, "p99_ms": 40.0, "max_ms": 90.0},
            "read": {"n": 10_000, "p50_ms": 20.0, "p99_ms": 90.0, "max_ms": 120.0},
            "answered": {"n": 10_000, "p50_ms": 60.0, "p99_ms": 300.0, "max_ms": 400.0},
            "told": {"n": 10_000, "p50_ms": 100.0, "p99_ms": 600.0, "max_ms": 800.0},
            "release": {"n": 10_000, "p50_ms": 150.0, "p99_ms": 700.0, "max_ms": 900.0},
            **CLEAN, **extra}


def _results(**extra: Any) -> dict[str, Any]:
    return {"mode": "test", "machine": {"cpus": 2}, "team_size": 7, "storm": [],
            "invariants": {"overfull": 0, "oversold": 0, "lost_acks": 0, "acked": 0,
                           "committed": 0}, **extra}


# --- the summary -------------------------------------------------------------------------


def test_lateness_is_nearest_rank_percentiles_and_the_max() -> None:
    found = lateness([float(n) for n in range(1, 101)])
    assert found == {"n": 100, "p50_ms": 51.0, "p99_ms": 100.0, "max_ms": 100.0}
    empty = lateness([])
    assert empty["n"] == 0 and all(math.isnan(empty[k]) for k in ("p50_ms", "p99_ms",
                                                                   "max_ms"))


def test_pending_at_once_counts_the_opens_before_the_first_hold_was_due() -> None:
    every = [Hold("g1", 1000, 31_000), Hold("g2", 20_000, 50_000),
             Hold("g3", 30_999, 60_999), Hold("g4", 31_000, 61_000)]
    assert pending_at_once(every) == 3  # g4 opened as g1's hold was due
    assert pending_at_once([]) == 0


def test_a_clean_run_lapses_and_releases_each_hold_once_after_its_end() -> None:
    every = [Hold("g1", 0, 30_000, (30_002,), (30_150,), 30_010, 30_060, 30_100),
             Hold("g2", 10, 30_010, (30_050,), (30_900,), 30_110, 30_410, 30_810)]
    found = summarize(every)
    assert found["holds"] == 2 and found["pending_at_once"] == 2
    assert found["timer"] == {"n": 2, "p50_ms": 40.0, "p99_ms": 40.0, "max_ms": 40.0}
    assert found["release"]["p50_ms"] == 890.0 and found["release"]["max_ms"] == 890.0
    # the steps between: the lapse read, the provider's answer, that word taken by the owner
    assert (found["read"]["p50_ms"], found["read"]["max_ms"]) == (100.0, 100.0)
    assert (found["answered"]["p50_ms"], found["answered"]["max_ms"]) == (400.0, 400.0)
    assert (found["told"]["n"], found["told"]["p50_ms"]) == (2, 800.0)
    assert all(found[k] == 0 for k in ("never_lapsed", "lapsed_twice", "unreleased",
                                       "released_twice"))


def test_holds_never_lapsed_twice_lapsed_unreleased_or_released_twice_are_counted() -> None:
    found = summarize([
        Hold("g1", 0, 30_000),  # the timer never fired, nothing released it
        Hold("g2", 0, 30_000, (30_001, 30_500), (30_600, 30_700)),
        Hold("g3", 0, 30_000, (30_001,)),  # lapsed, but the provider's word never came
    ])
    assert (found["never_lapsed"], found["lapsed_twice"], found["unreleased"],
            found["released_twice"]) == (1, 1, 2, 1)
    # lateness is each hold's first lapse and first release
    assert found["timer"]["n"] == 2 and found["timer"]["max_ms"] == 1.0
    assert found["release"] == {"n": 1, "p50_ms": 600.0, "p99_ms": 600.0, "max_ms": 600.0}
    # none read, answered or taken yet
    assert found["read"]["n"] == found["answered"]["n"] == found["told"]["n"] == 0


# --- what fails a run ----------------------------------------------------------------------


def test_broken_invariants_fail_the_run_and_lateness_never_does() -> None:
    late = _result(timer={"n": 10_000, "p50_ms": 5000.0, "p99_ms": 9000.0, "max_ms": 9e4},
                   release={"n": 10_000, "p50_ms": 6000.0, "p99_ms": 9500.0, "max_ms": 1e5})
    assert holds.failures(late) == []
    assert failures(_results(holds=late)) == []
    broken = _result(unreleased=3, still_open=3, stock_taken=3)
    assert holds.failures(broken) == ["holds unreleased = 3", "holds still_open = 3",
                                      "holds stock_taken = 3"]
    assert "holds still_open = 3" in failures(_results(holds=broken))
    assert holds.failures(_result(holds=0, acked=0, lost_acks=0)) == [
        "holds: no hold was opened"]
    assert holds.failures(None) == []  # the scenario did not run
    unchecked = _result()
    del unchecked["seats_holding"]
    assert holds.failures(unchecked) == ["holds seats_holding = None"]


def test_a_paid_member_without_one_order_fails_the_run_in_either_system() -> None:
    inv = {"overfull": 0, "oversold": 0, "lost_acks": 0, "acked": 9, "committed": 9,
           "paid_members": 9, "orders": 8, "payments": 9, "members_without_order": 1,
           "orders_without_member": 0, "payments_mismatch": 1}
    mall = {"overfull": 0, "oversold": 0, "stock_mismatch": 0, "members": 5, "orders": 4,
            "orders_mismatch": 1}
    assert failures(_results(invariants=inv, mall_invariants=mall)) == [
        "Fission members_without_order = 1", "Fission payments_mismatch = 1",
        "mall baseline orders_mismatch = 1"]


# --- the deployment and the plan -------------------------------------------------------------


def test_the_holds_deployment_holds_seats_long_enough_and_never_pays_them(
        tmp_path: Path) -> None:
    doc = holds_config_document("postgresql://bench@127.0.0.1:5432/x",
                                "redis://127.0.0.1:6379", "127.0.0.1:6379", "ns", tmp_path,
                                hold_seconds=30)
    # as the gateway reads it: through the TOML file the bench writes
    config = parse(tomllib.loads(configs.to_toml(doc)), {}, "bench-holds.toml")
    assert config.pipeline.sandbox_pays == "on_request"
    (campaign,) = config.campaigns
    assert campaign.id == HOLDS_CAMPAIGN
    table = doc["campaigns"][0]
    assert table["pay_to_join"] is True and table["pay_within_seconds"] == 30
    # a group's own deadline, its stock and the groups a user may lead are far beyond
    assert table["time_limit_seconds"] > 10 * 30
    assert table["stock"] >= FULL.holds and table["max_groups_led"] >= 1


def test_the_holds_scenario_runs_in_both_plans_the_smoke_one_small() -> None:
    assert "holds" in SCENARIOS and "holds" in FULL.scenarios and "holds" in SMOKE.scenarios
    assert FULL.holds == 10_000 and SMOKE.holds <= 500
    assert SMOKE.hold_seconds <= 5 < FULL.hold_seconds


# --- the report ------------------------------------------------------------------------------


def test_the_report_shows_both_latenesses_the_opens_and_the_checks() -> None:
    lines = holds_tables(_results(holds=_result()))
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in lines
            if line.startswith("|")][2:]
    assert rows == [["hold_lapsed − hold_until (the owner's timer)", "10000", "3", "40", "90"],
                    ["lapse read by the pipeline − hold_until²", "10000", "20", "90", "120"],
                    ["provider's answer recorded − hold_until²", "10000", "60", "300", "400"],
                    ["its word taken by the owner − hold_until²", "10000", "100", "600", "800"],
                    ["group_failed − hold_until (released)", "10000", "150", "700", "900"]]
    text = "\n".join(lines)
    assert "### h. Held seats: expiry of 10,000 holds pending at once" in text
    assert "64 opens in flight, 2,500 opens/s" in text and "load: 2.50" in text
    assert "### h. Held seats" in render(_results(holds=_result()))
    assert holds_tables(_results()) == []
    assert holds_checks(_result()).endswith("acked-but-not-committed 0.")


def test_the_payment_line_shows_members_orders_and_payments() -> None:
    inv = {"paid_members": 1200, "orders": 1200, "payments": 1200,
           "members_without_order": 0, "orders_without_member": 0, "payments_mismatch": 0}
    (_, line) = paid_orders_line(inv, {"members": 900, "orders": 900, "orders_mismatch": 0})
    assert line.startswith("Payment in the loop — Fission: 1,200 paid members, 1,200 orders,")
    assert "mall: 900 members, 900 orders made in their joins" in line
    assert paid_orders_line({}, {}) == []
