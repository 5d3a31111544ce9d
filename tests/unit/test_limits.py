"""The token bucket: what it lets through, and how long it tells a refused client to wait."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.limits import Bucket, UserLimiter, retry_after_ms


def test_a_full_bucket_lets_its_burst_through_then_says_when() -> None:
    bucket = Bucket(rate=20, burst=40, now=0.0)
    assert [bucket.take(0.0) for _ in range(40)] == [0.0] * 40
    wait = bucket.take(0.0)
    assert wait == pytest.approx(1 / 20)
    assert retry_after_ms(wait) == 50
    # Waiting exactly as long as told is enough; a little less is not.
    assert bucket.take(0.0 + wait * 0.9) > 0
    assert bucket.take(0.0 + wait + 1e-9) == 0.0


@given(rate=st.floats(0.5, 1000), burst=st.integers(1, 100),
       gaps=st.lists(st.floats(0, 2), max_size=200))
def test_a_client_that_waits_as_told_is_always_let_through(rate: float, burst: int,
                                                           gaps: list[float]) -> None:
    bucket, now = Bucket(rate, burst, now=0.0), 0.0
    for gap in gaps:
        now += gap
        wait = bucket.take(now)
        if wait:
            assert wait <= 1 / rate + 1e-9  # never longer than one token's refill
            now += retry_after_ms(wait) / 1000
            assert bucket.take(now) == 0.0


@given(rate=st.floats(0.5, 1000), burst=st.integers(1, 100),
       times=st.lists(st.floats(0, 60), max_size=300))
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int,
                                                       times: list[float]) -> None:
    bucket = Bucket(rate, burst, now=0.0)
    moments = sorted(times)
    taken = sum(1 for t in moments if bucket.take(t) == 0.0)
    assert taken <= burst + rate * (moments[-1] if moments else 0.0) + 1e-6


@pytest.mark.parametrize("wait,ms", [(0.0, 1), (0.0001, 1), (0.05, 50), (0.0501, 51),
                                     (2.5, 2500)])
def test_retry_after_rounds_up_to_whole_milliseconds(wait: float, ms: int) -> None:
    assert retry_after_ms(wait) == ms


def test_users_have_buckets_of_their_own_and_the_oldest_is_forgotten() -> None:
    limiter = UserLimiter(rate=1, burst=1, capacity=2)
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0
    assert limiter.take("b") == 0.0
    assert limiter.take("c") == 0.0  # a forgotten: its next bucket starts full
    assert limiter.take("a") == 0.0
