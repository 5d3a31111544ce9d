"""The one clock (storage.clock): epoch ms and datetimes agree, and a MovableClock moves
only when told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from storage.clock import MovableClock, from_ms, moment, to_ms, wall

MS = st.integers(min_value=0, max_value=4_102_444_800_000)  # 1970 to 2100


@given(MS)
def test_epoch_ms_and_datetimes_round_trip_exactly(ms: int) -> None:
    assert to_ms(from_ms(ms)) == ms
    assert from_ms(ms).tzinfo is UTC


def test_a_datetime_in_any_zone_is_the_same_instant() -> None:
    shanghai = datetime(2031, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=8)))
    assert to_ms(shanghai) == to_ms(datetime(2030, 12, 31, 16, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="no time zone"):
        to_ms(datetime(2030, 1, 1))


@given(MS, st.integers(min_value=-10**10, max_value=10**10))
def test_a_movable_clock_moves_only_when_told(start: int, by: int) -> None:
    clock = MovableClock(start)
    assert clock() == clock() == clock.now_ms() == start
    assert moment(clock) == clock.now() == from_ms(start)
    clock.advance(by)
    assert clock() == start + by
    clock.advance(timedelta(milliseconds=-by))
    assert clock() == start
    clock.set(from_ms(start) + timedelta(days=30))
    assert clock() == start + 30 * 86_400_000


def test_the_wall_clock_is_now_in_epoch_ms() -> None:
    before = int(datetime.now(UTC).timestamp() * 1000)
    assert before - 1000 <= wall() <= before + 1000
    assert abs(MovableClock()() - before) <= 1000
