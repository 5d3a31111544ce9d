"""actors.metrics.Histogram and what /metrics and the bench read from it: buckets
inclusive of their bound, cumulative in the text, and a run's slow commits told apart
from those since the start."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from actors.metrics import LATENCY_BUCKETS, Histogram
from bench import scrape


def series(lines: list[str]) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines}


def test_a_value_on_a_bound_counts_in_that_bucket_and_the_text_is_cumulative() -> None:
    h = Histogram((1.0, 5.0))
    for value in (1.0, 0.5, 5.0, 7.0):
        h.observe(value)
    assert series(h.lines("x", 'shard="0"')) == {
        'x_bucket{shard="0",le="1.0"}': 2, 'x_bucket{shard="0",le="5.0"}': 3,
        'x_bucket{shard="0",le="+Inf"}': 4, 'x_sum{shard="0"}': 13.5,
        'x_count{shard="0"}': 4}


@given(st.lists(st.floats(0, 10, allow_nan=False)))
def test_each_bucket_counts_the_values_up_to_its_bound(values: list[float]) -> None:
    h = Histogram(LATENCY_BUCKETS)
    for value in values:
        h.observe(value)
    found = series(h.lines("x"))
    for bound in LATENCY_BUCKETS:
        assert found[f'x_bucket{{le="{bound}"}}'] == sum(1 for v in values if v <= bound)
    assert found['x_bucket{le="+Inf"}'] == found["x_count"] == len(values)


def test_the_bench_counts_the_slow_commits_of_its_run_only() -> None:
    def scraped(commits: dict[int, list[float]]) -> dict[str, float]:
        """What the bench reads of a /metrics whose shards made `commits`."""
        lines = []
        for shard, times in commits.items():
            h = Histogram(LATENCY_BUCKETS)
            for took in times:
                h.observe(took)
            lines += h.lines("fission_commit_seconds", f'shard="{shard}"')
        return scrape.parse("# TYPE fission_commit_seconds histogram\n" + "\n".join(lines))

    before = {0: [0.3, 0.002], 1: [0.004]}  # a slow commit before the run
    during = {0: [0.003, 0.1, 0.25], 1: [0.101, 0.004]}
    figures = scrape.explain(scraped(before),
                             scraped({k: before[k] + during[k] for k in before}))
    assert figures["commits_over_100ms"] == 2  # 0.1 itself is within 100 ms


def test_a_run_without_the_commit_histogram_counts_no_slow_commits_it_cannot_see() -> None:
    # (A /metrics whose shards did not answer: 0 would read as "every commit slow".)
    figures = scrape.explain(scrape.parse(""), scrape.parse(""))
    assert math.isnan(figures["commits_over_100ms"])


def test_a_snapshot_does_not_move_with_its_histogram() -> None:
    h = Histogram(LATENCY_BUCKETS)
    h.observe(0.2)
    kept = h.copy()
    h.observe(0.3)
    assert (kept.n, kept.total, sum(kept.counts)) == (1, 0.2, 1)
