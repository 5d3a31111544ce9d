"""The collector policy of long-running processes: measured, thresholds, freezing."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from actors import gcstats


@pytest.fixture
def policy() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    if gcstats._callback in gc.callbacks:
        gc.callbacks.remove(gcstats._callback)
    gc.unfreeze()


def test_install_sets_thresholds_and_measures_collections(policy: None) -> None:
    gcstats.install()
    gcstats.install()  # idempotent: one callback
    assert gc.get_threshold() == gcstats.THRESHOLDS
    assert gc.callbacks.count(gcstats._callback) == 1
    before = gcstats.snapshot()
    gc.collect()
    after = gcstats.snapshot()
    assert after["gc_collections"][2] == before["gc_collections"][2] + 1
    assert after["gc_seconds"][2] > before["gc_seconds"][2]
    assert after["gc_longest_seconds"] >= after["gc_seconds"][2] - before["gc_seconds"][2]


def test_settle_freezes_without_counting_its_own_collection(policy: None) -> None:
    gcstats.install()
    kept = [[n] for n in range(1000)]  # long-lived containers
    before = gcstats.snapshot()
    gcstats.settle()
    assert gcstats.snapshot()["gc_collections"] == before["gc_collections"]
    assert gc.get_freeze_count() >= len(kept)
    assert gcstats._callback in gc.callbacks  # still measuring afterwards


def test_freeze_moves_new_survivors_out_of_reach(policy: None) -> None:
    gcstats.settle()
    frozen = gc.get_freeze_count()
    grown = [[n] for n in range(1000)]  # lists are always tracked (small dicts may not be)
    gcstats.freeze()
    assert gc.get_freeze_count() >= frozen + len(grown)


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_growing_population_is_frozen_each_step_and_refreshed_rarely() -> None:
    clock = _Clock()
    population = gcstats.Population(step=4, refresh_after=6, refresh_every=60.0, clock=clock)
    gc.unfreeze()
    try:
        kept = []
        for live in range(1, 10):
            kept.append([object() for _ in range(10)])  # a socket's objects, alive
            population.opened(live)
        assert population.freezes == 2  # at 4 and at 8
        assert gc.get_freeze_count() > 0
        for live in range(8, 2, -1):
            population.closed(live)  # 6 closes, but within refresh_every of the start
        assert population.refreshes == 0
        clock.now = 61.0
        population.closed(2)
        assert population.refreshes == 1 and gc.get_freeze_count() > 0
        # Fallen to 2, regrowth by a step from there freezes the newcomers.
        for live in range(3, 7):
            population.opened(live)
        assert population.freezes == 3
    finally:
        gc.unfreeze()
