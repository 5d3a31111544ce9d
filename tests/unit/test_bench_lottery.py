"""The bench's lottery scenario: the mall baseline's weighted pick, the lottery
deployment's config, the routes and the answers' tally, the report's tables and what
fails a run."""

from __future__ import annotations

import random
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bench import stock
from bench.__main__ import failures, lottery_failures
from bench.clients import fission_route, mall_route
from bench.loadgen import LotteryStats
from bench.mall_baseline import pick_prize
from bench.report import lottery_checks, lottery_tables, render, run_label
from bench.stack import (
    LOTTERY_CAMPAIGN,
    LOTTERY_FREE_DRAWS,
    LOTTERY_PRIZES,
    lottery_config_document,
)
from storage.config import parse
from tests.support import configs

STOCK = {"teapot": 50, "coupon-5": 2000, "coupon-1": 10_000_000, "thanks": None}
CLEAN = {"oversold": 0, "stock_mismatch": 0, "over_limit": 0, "lost_acks": 0,
         "acked": 1000, "draws": 1000, "read_model": True, "stock": STOCK,
         "won": {"thanks": 600, "coupon-1": 300, "coupon-5": 50, "teapot": 50}}


def _run(system: str, users: int, draws_per_s: float, p99: float, **extra: Any
         ) -> dict[str, Any]:
    return {"system": system, "users": users, "draws_per_s": draws_per_s,
            "draws": int(draws_per_s * 8), "stopped": 0, "won": {}, "p50_ms": p99 / 2,
            "p99_ms": p99, "codes": {}, "cpu": {}, "load_1m": 1.5, "others_cores": 0.25,
            **extra}


RUNS = [
    _run("fission_ws", 64, 3000, 40.0),
    _run("fission_http", 64, 2000, 60.0),
    _run("mall", 64, 500, 300.0),
    _run("fission_ws", 256, 4000, 120.0, codes={"no_draws_left": 3}),
]
PACED = _run("fission_ws", 256, 1990, 30.0, target_fraction=0.5, target_draws_per_s=2000)


def _results(**extra: Any) -> dict[str, Any]:
    return {"mode": "test", "machine": {"cpus": 2}, "team_size": 7, "storm": [],
            "invariants": {"overfull": 0, "oversold": 0, "lost_acks": 0, "acked": 0,
                           "committed": 0},
            "lottery": RUNS, "lottery_paced": PACED, "lottery_invariants": CLEAN,
            "mall_lottery_invariants": CLEAN, **extra}


def _rows(lines: list[str]) -> list[list[str]]:
    table = [line for line in lines if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.split("|")[1:-1]] for row in table]


# --- the mall's pick -------------------------------------------------------------------


def test_the_roll_walks_the_weights_in_table_order() -> None:
    slots = [(10, 5), (30, 100), (60, None)]  # weights sum to 100
    assert pick_prize(slots, 0.0) == 0
    assert pick_prize(slots, 0.099) == 0
    assert pick_prize(slots, 0.10) == 1
    assert pick_prize(slots, 0.399) == 1
    assert pick_prize(slots, 0.40) == 2
    assert pick_prize(slots, 0.999999) == 2


def test_prizes_out_of_stock_or_of_no_weight_are_never_won() -> None:
    slots = [(10, 0), (0, 100), (30, 1), (60, None)]
    picked = {pick_prize(slots, n / 1000) for n in range(1000)}
    assert picked == {2, 3}
    # the others keep their relative weights: 30 of 90 go to the prize in stock
    assert sum(pick_prize(slots, n / 900) == 2 for n in range(900)) == 300


def test_nothing_in_stock_is_refused_and_a_roll_of_one_stays_in_the_table() -> None:
    with pytest.raises(ValueError):
        pick_prize([(10, 0), (0, None)], 0.5)
    assert pick_prize([(10, 3), (5, 0)], 1.0) == 0


def test_picks_follow_the_weights() -> None:
    rng = random.Random(11)
    slots = [(pz["weight"], pz.get("stock")) for pz in LOTTERY_PRIZES]
    counts = Counter(pick_prize(slots, rng.random()) for _ in range(20_000))
    total = sum(w for w, _ in slots)
    for n, (weight, _) in enumerate(slots):
        expected = 20_000 * weight / total
        assert abs(counts[n] - expected) < 5 * expected ** 0.5 + 5


# --- the lottery deployment's campaign -------------------------------------------------


def test_the_bench_lottery_is_a_valid_campaign_with_a_product_that_sells_out(
        tmp_path: Path) -> None:
    doc = lottery_config_document("postgresql://bench@127.0.0.1:5432/x",
                                  "redis://127.0.0.1:6379", "127.0.0.1:6379", "ns", tmp_path)
    # as the gateway reads it: through the TOML file the bench writes
    config = parse(tomllib.loads(configs.to_toml(doc)), {}, "bench-lottery.toml")
    (campaign,) = config.campaigns
    assert campaign.id == LOTTERY_CAMPAIGN and campaign.kind == "lottery"
    assert doc["campaigns"][0]["free_draws_per_day"] == LOTTERY_FREE_DRAWS
    kinds = {pz["kind"] for pz in LOTTERY_PRIZES}
    assert {"product", "coupon", "thanks"} <= kinds
    product = next(pz for pz in LOTTERY_PRIZES if pz["kind"] == "product")
    assert product["stock"] <= 100  # small: it runs out within a run


# --- routes and the answers' tally ------------------------------------------------------


def test_both_systems_take_draws_on_the_contracts_route() -> None:
    params = {"campaign": "bench-lottery"}
    assert fission_route("http://f")("lottery.draw", params) == \
        "http://f/api/lotteries/bench-lottery/draws"
    assert mall_route("http://m")("lottery.draw", params) == \
        "http://m/api/lotteries/bench-lottery/draws"
    assert mall_route("http://m")("bargain.help", params) == "http://m/bargain/help"


def test_acked_draws_are_kept_and_refusals_counted() -> None:
    stats = LotteryStats()
    won = {"ok": True, "result": {"draw": {"id": "d7", "prize": {"id": "teapot"}},
                                  "draws_left": 3}}
    assert stats.drew(won, 0.0, "u1") is None
    refused = {"ok": False, "error": {"code": "no_draws_left"}}
    assert stats.drew(refused, 0.0, "u1") == "no_draws_left"
    assert stats.acked == [("d7", "u1", "teapot")]
    assert stats.draws == 1 and stats.won == {"teapot": 1}
    assert stats.codes == {"no_draws_left": 1} and len(stats.latencies) == 2


# --- the report ---------------------------------------------------------------------------


def test_a_row_per_level_with_each_system_and_the_ratios_to_the_mall() -> None:
    rows = _rows(lottery_tables(_results()))
    assert rows == [
        ["64", "3,000 (20.0 / 40.0)", "2,000 (30.0 / 60.0)", "500 (150.0 / 300.0)",
         "6.00×", "4.00×"],
        # no HTTP or mall run at 256 users: dashes
        ["256", "4,000 (60.0 / 120.0)", "–", "–", "–×", "–×"],
    ]


def test_the_paced_run_load_refusals_and_checks_are_printed() -> None:
    text = "\n".join(lottery_tables(_results()))
    assert ("Fission /ws paced at 50% of its peak (2,000 draws/s offered by 256 users):"
            " 1,990 draws/s, ack p50 15.0 ms, p99 30.0 ms") in text
    assert "fission_ws@256p 1.50, 0.25" in text
    assert "fission_ws@256: {'no_draws_left': 3}" in text
    assert "### g. Lottery draw storm" in render(_results())
    assert run_label(PACED) == "fission_ws@256p"


def test_the_checks_sentence_lists_each_prize_won_against_its_stock() -> None:
    text = lottery_checks(_results())
    assert text.startswith("Postgres after the lottery runs — Fission: oversold 0,")
    assert ("won/stock: teapot 50/50, coupon-5 50/2,000, coupon-1 300/10,000,000,"
            " thanks 600/∞") in text
    assert "mall: not checked" in lottery_checks(_results(mall_lottery_invariants=None))


def test_no_lottery_runs_no_section() -> None:
    assert lottery_tables(_results(lottery=[])) == []
    assert "Lottery" not in render(_results(lottery=[]))


# --- what fails a run ---------------------------------------------------------------------


def test_a_clean_lottery_run_passes() -> None:
    assert lottery_failures(_results()) == []
    assert failures(_results()) == []
    assert lottery_failures({"storm": []}) == []  # the scenario did not run


def test_oversold_prizes_lost_acks_and_empty_runs_fail_the_run() -> None:
    broken = _results(lottery_invariants={**CLEAN, "oversold": 2, "read_model": False},
                      mall_lottery_invariants={**CLEAN, "lost_acks": 1, "over_limit": 4})
    assert lottery_failures(broken) == [
        "Fission lottery oversold = 2",
        "Fission lottery: the campaign has no row in lotteries",
        "mall lottery over_limit = 4",
        "mall lottery lost_acks = 1"]
    dead = _results(lottery=[_run("mall", 64, 0, 0.0)], lottery_paced={**PACED, "draws": 0})
    assert lottery_failures(dead) == ["lottery mall at 64 users acknowledged no draw",
                                      "lottery fission_ws at 256 users paced acknowledged"
                                      " no draw"]
    unchecked = _results()
    del unchecked["lottery_invariants"]
    assert lottery_failures(unchecked) == ["Fission lottery invariants were not checked"]
    assert "Fission lottery oversold = 2" in failures(broken)


@pytest.mark.parametrize(("prizes", "expected"), [
    pytest.param([(50, 0, 50), (2000, 10, 1990)], (0, 0), id="exact"),
    pytest.param([(50, -1, 51)], (2, 0), id="oversold-below-zero-and-beyond-stock"),
    pytest.param([(50, 5, 44)], (0, 1), id="a-unit-unaccounted"),
    pytest.param([], (0, 0), id="no-prize-with-stock"),
])
def test_stock_faults(prizes: list[tuple[int, int, int]], expected: tuple[int, int]) -> None:
    assert stock.faults(prizes) == expected
