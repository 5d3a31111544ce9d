"""A board's periods: which one a moment falls in, where each starts and ends, and names.

Pure calendar arithmetic in the board's time zone, the reset moment `reset_minutes` after
local midnight: a daily period is `2026-12-01`, a weekly one the ISO week of its Monday,
`2026-W49`, a monthly one `2026-12`, and an all-time board has the one period `all`.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache

from games.leaderboard.campaign import BoardCampaign

ALL = "all"
# Any period's name, whatever the board's kind (a request's `period` before the board's
# own kind checks it).
NAME = re.compile(r"all|[0-9]{4}-W[0-9]{2}|[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{4}-[0-9]{2}")
_FOREVER = (1 << 62)  # an all-time period never ends


def _local_day(board: BoardCampaign, ms: int) -> date:
    """The board's day `ms` falls in: the last day whose reset moment (`_start_of`) is
    not after it. Local arithmetic gives it but for a reset moment that a clock change
    skips or repeats, hence the check against `_start_of` itself."""
    local = datetime.fromtimestamp(ms / 1000, UTC).astimezone(board.tz)
    day = (local - timedelta(minutes=board.reset_minutes)).date()
    if _start_of(board, day) > ms:
        return day - timedelta(days=1)
    if _start_of(board, day + timedelta(days=1)) <= ms:
        return day + timedelta(days=1)
    return day


def _first_day(board: BoardCampaign, day: date) -> date:
    if board.period == "weekly":
        return day - timedelta(days=day.weekday())  # Monday
    if board.period == "monthly":
        return day.replace(day=1)
    return day


def _name(board: BoardCampaign, first: date) -> str:
    if board.period == "weekly":
        year, week, _ = first.isocalendar()
        return f"{year}-W{week:02d}"
    if board.period == "monthly":
        return f"{first.year}-{first.month:02d}"
    return first.isoformat()


def _start_of(board: BoardCampaign, day: date) -> int:
    """Epoch ms of the reset moment of local `day`."""
    local = datetime(day.year, day.month, day.day, tzinfo=board.tz) + timedelta(
        minutes=board.reset_minutes)
    return int(local.timestamp() * 1000)


# Periods a board can name: their ends must be dates too (9999-W52 ends in year 10000).
FIRST_YEAR, LAST_YEAR = 1970, 9998


def _parse(board: BoardCampaign, name: str) -> date | None:
    """The first day of the period `name`, or None when it is no period of this board
    (or one outside the years a period can start and end in)."""
    first = _first_of(board, name)
    if first is None or not FIRST_YEAR <= first.year <= LAST_YEAR:
        return None
    return first


def _first_of(board: BoardCampaign, name: str) -> date | None:
    try:
        if board.period == "weekly":
            match = re.fullmatch(r"([0-9]{4})-W([0-9]{2})", name)
            return None if match is None else date.fromisocalendar(int(match[1]),
                                                                   int(match[2]), 1)
        if board.period == "monthly":
            match = re.fullmatch(r"([0-9]{4})-([0-9]{2})", name)
            return None if match is None else date(int(match[1]), int(match[2]), 1)
        if board.period == "daily":
            match = re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", name)
            return None if match is None else date.fromisoformat(name)
    except ValueError:
        return None
    return None


@lru_cache(maxsize=4096)
def period_of(board: BoardCampaign, ms: int) -> str:
    """The name of the period of `board` that moment `ms` falls in."""
    if board.period == ALL:
        return ALL
    return _name(board, _first_day(board, _local_day(board, ms)))


def valid(board: BoardCampaign, name: str) -> bool:
    """Whether `name` is a period of `board` (spelled as `period_of` spells it)."""
    if board.period == ALL:
        return name == ALL
    first = _parse(board, name)
    return first is not None and _name(board, first) == name


@lru_cache(maxsize=4096)
def bounds(board: BoardCampaign, name: str) -> tuple[int, int]:
    """[start, end) of period `name` in epoch ms (ValueError when it is not one)."""
    if board.period == ALL:
        if name != ALL:
            raise ValueError(name)
        return 0, _FOREVER
    first = _parse(board, name)
    if first is None:
        raise ValueError(name)
    if board.period == "weekly":
        after = first + timedelta(days=7)
    elif board.period == "monthly":
        after = (first + timedelta(days=32)).replace(day=1)
    else:
        after = first + timedelta(days=1)
    return _start_of(board, first), _start_of(board, after)


def following(board: BoardCampaign, name: str) -> str:
    """The period after `name`."""
    return period_of(board, bounds(board, name)[1])


def closes(board: BoardCampaign, name: str) -> bool:
    """Whether period `name` ends while the board runs (an all-time period never does)."""
    return board.period != ALL and bounds(board, name)[0] < board.ends_at
