"""The bench's pipeline mix: its deployment's config (grades, a return window of seconds,
one deal campaign per shard), what fails a run (a broken ledger invariant or a mix that
did nothing, never lag or rate), the plans' settings and the report's section."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from actors.routing import shard_of
from bench import mix
from bench.__main__ import FULL, SCENARIOS, SMOKE, failures
from bench.report import mix_tables, render
from bench.stack import MIX_CAMPAIGNS, MIX_GRADES, SHARDS, mix_config_document
from games.commission import BPS
from storage.config import parse
from tests.support import configs

CLEAN: dict[str, Any] = {**dict.fromkeys(mix.BROKEN, 0), "audit_first": []}


def _mix(**extra: Any) -> dict[str, Any]:
    return {"deals": 19_000, "deals_per_s": 950.0, "orders": 38_000, "seconds": 20.0,
            "orders_per_s": 1900.0, "commissions": 57_000, "commissions_per_s": 2850.0,
            "orders_without_commission": 0, "deals_without_orders": 0,
            "lag_p50_ms": 40.0, "lag_p99_ms": 300.0, "lag_max_ms": 900.0,
            "drain_seconds": 0.5, "teams": 256, "offered_deals_per_s": 1000,
            "window_seconds": 5, "refund_every": 50, "refund_pieces": 2000,
            "refund_codes": {"buyer 200 ok": 1500}, "settle_wait_seconds": 1.0,
            "grade_changes": 300, "grades_reached": {"silver": 290, "gold": 10},
            "refunds": {"buyer": {"pieces": 1500, "fen": 2_000_000},
                        "after_sales": {"pieces": 500, "fen": 2_200_000}},
            "orders_partly_refunded": 1200, "orders_refunded_whole": 600,
            "debt_incurred_fen": 50_000, "debt_repaid_fen": 40_000, "users_in_debt": 3,
            "debt_owed_fen": 10_000, "withdrawals": 40, "withdrawn_fen": 100_000,
            "invariants": dict(CLEAN), **extra}


def _results(**extra: Any) -> dict[str, Any]:
    return {"mode": "test", "machine": {"cpus": 2}, "team_size": 7, "storm": [],
            "invariants": {"overfull": 0, "oversold": 0, "lost_acks": 0, "acked": 0,
                           "committed": 0}, **extra}


def test_the_mix_deployment_has_grades_a_window_of_seconds_and_a_campaign_per_shard(
        tmp_path: Path) -> None:
    doc = mix_config_document("postgresql://u@localhost/mix", "redis://localhost:1",
                              "127.0.0.1:6379", "benchmix", tmp_path, 5)
    config = parse(tomllib.loads(configs.to_toml(doc)), {}, "bench-mix.toml")
    assert config.commission.return_window_seconds == 5
    assert [g.id for g in config.commission.grades] == [g["id"] for g in MIX_GRADES]
    # Every grade above the first asks something some sellers reach within a run.
    assert all(g.min_settled_sales_month_fen for g in config.commission.grades[1:])
    assert max(g.rates.level1_bps for g in config.commission.grades) + max(
        g.rates.level2_bps for g in config.commission.grades) <= BPS
    assert sorted(shard_of(c, SHARDS) for c in MIX_CAMPAIGNS) == list(range(SHARDS))
    assert {c.id for c in config.campaigns} == set(MIX_CAMPAIGNS)


def test_a_clean_mix_fails_nothing_however_slow() -> None:
    assert mix.failures(None) == []
    assert mix.failures(_mix()) == []
    slow = _mix(lag_p99_ms=60_000.0, deals_per_s=3.0, grade_changes=0)
    assert mix.failures(slow) == []
    assert failures(_results(pipeline_mix=slow)) == []


@pytest.mark.parametrize("key", mix.BROKEN)
def test_each_broken_ledger_invariant_fails_the_run(key: str) -> None:
    broken = _mix(invariants={**CLEAN, key: 1})
    found = failures(_results(pipeline_mix=broken))
    assert [f for f in found if key in f], found


def test_the_audits_problems_are_listed_as_failures() -> None:
    problem = "commission 7 (pending, 600 fen, 100 reversed): its order refunded ..."
    broken = _mix(invariants={**CLEAN, "audit_problems": 1, "audit_first": [problem]})
    assert any(problem in f for f in mix.failures(broken))


def test_a_mix_that_refunded_nothing_or_dealt_nothing_fails() -> None:
    assert any("no refund piece" in f for f in mix.failures(_mix(refund_pieces=0)))
    assert any("no deal" in f for f in mix.failures(_mix(deals=0)))
    # And deals the pipeline never turned into orders, as in the other deal runs.
    found = failures(_results(pipeline_mix=_mix(deals_without_orders=2)))
    assert any("pipeline_mix" in f and "no orders" in f for f in found), found


def test_the_plans_run_the_mix_with_every_kind_of_refund_in_the_smoke_run() -> None:
    assert "mix" in SCENARIOS
    # Five kinds of refund by order id: the smoke run's every order is one of them.
    assert SMOKE.mix_every == 5
    assert FULL.mix_every >= 5
    for plan in (SMOKE, FULL):
        # Commissions settle (grades judged, after-sales refunds made) within the run.
        assert 0 < plan.mix_window < plan.mix_seconds
    assert FULL.deal_rate == 1000


def test_the_report_shows_the_mix_and_its_checks() -> None:
    text = "\n".join(mix_tables(_mix()))
    assert "return window 5 s" in text and "300" in text and "2,200,000" in text
    assert "reversal_mismatch 0" in text and "audit_problems 0" in text
    assert mix_tables(None) == []
    whole = render(_results(pipeline_mix=_mix()))
    assert "the mix (grades, refunds) paced at 1000 deals/s" in whole
