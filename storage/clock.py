"""The one clock the owners and the pipeline decide by, and a clock tests move.

A `Clock` is any callable that returns the time as epoch milliseconds: the owners take
it as it is (their deadlines are epoch ms), the pipeline reads it as an aware datetime
through `moment` and passes that to its SQL as a parameter, so every business time
(settlement due, the return window, bindings, tax years, grade months, retries) is on
this clock and never on the database's `now()`. A deployment passes `wall`; a test
passes one `MovableClock` to an owner and a pipeline worker together, and moving it
moves both (and the database's view of "now" with them, since SQL reads only `$now`).

On this clock (written as `$now` parameters, compared as `<= $now`): orders'
`created_at`, `confirmed_at` (which `settle_at` runs from) and `refunded_at`;
commissions' `settle_at` and `closed_at`; tax flags' year and `flagged_at`; grade
months and `grade_changes.changed_at`; referrals' `bound_at`/`ended_at`; withdrawals'
`created_at`/`closed_at`; distributors' `applied_at`/`decided_at` and their changes'
`at`; provider refunds' and checks' `next_attempt_at` (and a check's `answered_at`). On
the database's clock (`DEFAULT now()` / `clock_timestamp()`), as
records of when a row was written that decide nothing: the outbox's `created_at` and
`processed_at` (the lag metric), events' and command results' `created_at` (the
owners' retention housekeeping), `updated_at` columns, notices' `sent_at`, commissions'
and refund pieces' `created_at`.

It lives in `storage/` so both `storage/` and `actors/` may use it; `games/` never reads
a clock and takes the time as an argument.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], int]
"""The time as epoch milliseconds."""


def wall() -> int:
    """The wall clock in epoch milliseconds: a deployment's clock."""
    return time.time_ns() // 1_000_000


def moment(clock: Clock) -> datetime:
    """`clock`'s time as an aware UTC datetime (what SQL parameters take)."""
    return from_ms(clock())


def from_ms(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, UTC)


def to_ms(when: datetime) -> int:
    """An aware datetime as epoch milliseconds (exact to the millisecond)."""
    if when.tzinfo is None:
        raise ValueError(f"{when!r} has no time zone: a clock's times are absolute")
    delta = when - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


class MovableClock:
    """A clock a test sets and moves by hand; it never moves by itself.

    Called, it is a `Clock` (epoch ms); `now()` is the same time as a datetime. `ms` is
    the time itself, for tests that move it as a number.
    """

    def __init__(self, start: datetime | int | None = None) -> None:
        self.ms = wall() if start is None else _ms(start)

    def __call__(self) -> int:
        return self.ms

    def now_ms(self) -> int:
        """The clock's time, epoch ms."""
        return self.ms

    def now(self) -> datetime:
        """The clock's time as an aware UTC datetime."""
        return from_ms(self.ms)

    def set(self, when: datetime | int) -> None:
        """Set the clock to `when` (a datetime, or epoch ms); it may go back."""
        self.ms = _ms(when)

    def advance(self, by: timedelta | int) -> None:
        """Move the clock on by `by` (a timedelta, or ms)."""
        self.ms += by if isinstance(by, int) else _delta_ms(by)


def _ms(when: datetime | int) -> int:
    return when if isinstance(when, int) else to_ms(when)


def _delta_ms(by: timedelta) -> int:
    return (by.days * 86_400 + by.seconds) * 1000 + by.microseconds // 1000
