"""The one stock check both systems' lottery runs are held to (Fission's and the mall's)."""

from __future__ import annotations

from collections.abc import Iterable


def faults(prizes: Iterable[tuple[int, int, int]]) -> tuple[int, int]:
    """(oversold, mismatch) over prizes given as (initial stock, stock left, draws won):
    a prize oversold counts once for a stock left below 0 and once per unit won beyond its
    stock; the mismatch is |initial - left - won| summed."""
    oversold = mismatch = 0
    for initial, left, taken in prizes:
        oversold += (left < 0) + max(0, taken - initial)
        mismatch += abs(initial - left - taken)
    return oversold, mismatch
