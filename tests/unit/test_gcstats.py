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
