"""The bench's open-loop sweep as the report prints and charts it, and what fails a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.__main__ import failures
from bench.report import chart, render


def _point(system: str, offered: int, acked: float, p99: float) -> dict[str, Any]:
    return {"system": system, "teams": 256, "offered_ops_per_s": offered,
            "ops_per_s": acked, "ok": int(acked * 8), "p50_ms": p99 / 2, "p99_ms": p99,
            "saturated": acked < 0.9 * offered}


SWEEP = [
    _point("fission_ws", 500, 500, 27.0),
    _point("fission_ws", 1000, 998, 26.4),
    _point("fission_ws", 2000, 1500, 240.0),
    _point("mall", 500, 498, 84.6),
    _point("mall", 1000, 636, 1232.6),
]


def _results(**extra: Any) -> dict[str, Any]:
    return {"mode": "test", "machine": {"cpus": 2}, "team_size": 7, "storm": [],
            "invariants": {"overfull": 0, "oversold": 0, "lost_acks": 0, "acked": 1,
                           "committed": 1}, **extra}


def test_sweep_table_has_a_row_per_offered_rate_and_marks_saturation() -> None:
    text = render(_results(sweep=SWEEP))
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    assert [row.split("|")[1].strip() for row in rows] == ["500", "1,000", "2,000"]
    # mall saturated at 1000 and its sweep stopped there: nothing at 2000
    assert "636 (616.3 / 1,232.6) saturated" in rows[1]
    assert rows[2].split("|")[3].strip() == "–"
    assert "1,500 (120.0 / 240.0) saturated" in rows[2]
    assert "saturated" not in rows[0]


def _png_width(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")  # the IHDR chunk's width


def test_chart_draws_only_what_the_run_measured(tmp_path: Path) -> None:
    # A panel per measured scenario, each the same width: a sweep-only run gets one.
    one = _png_width(chart(_results(sweep=SWEEP), tmp_path / "one.png"))
    # The sweep's points serve as closed-loop levels too (they carry teams and rates).
    two = _png_width(chart(_results(sweep=SWEEP, storm=SWEEP), tmp_path / "two.png"))
    assert two == 2 * one


def test_a_sweep_point_that_acked_nothing_fails_the_run() -> None:
    assert failures(_results(sweep=SWEEP)) == []
    dead = _point("mall", 250, 0, float("nan"))
    assert failures(_results(sweep=[dead])) == [
        "mall offered 250 cmds/s acknowledged nothing"]
