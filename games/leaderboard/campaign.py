"""The leaderboard (排行榜) campaign: a board a marketer configures, and how its table reads.

A board ranks sellers by one metric over one kind of period, for everyone or per region:

    [[campaigns]]
    id = "weekly-sales"
    kind = "leaderboard"
    title = "本周带货榜"
    starts_at = "2026-01-01T00:00:00+08:00"
    ends_at = "2030-12-31T23:59:59+08:00"
    metric = "sales"              # sales (fen), commission (fen), orders, members
    period = "weekly"             # all, daily, weekly (from Monday), monthly
    scope = "everyone"            # or "region": one board per region, plus everyone's
    regions = ["YN", "SH"]        # optional, regional boards: shown from the start
    ranks = 10                    # how many ranks the board shows (1-100)
    reset_at = "00:00"            # optional: when a period starts, local time
    time_zone = "Asia/Shanghai"   # optional, the default
    keep_days = 60                # optional: how long an order can still move the board

Metrics, per paid order of a referred buyer: `sales` adds the order's amount (fen) to the
buyer's direct referrer; `orders` adds one order to them; `commission` adds each
beneficiary's commission (both levels); `members` counts the referrer's direct members
who bought in the period (one however many orders). A refund takes back what its order
added; a piece refunded takes back the fen refunded (`sales`) or the commission reversed
(`commission`), the counts wait for the whole refund. A board's orders earn nothing
themselves: `commission` is None.

An order moves a board for `keep_days` after it was made (longer than the shop's return
window, `commission.return_window_days`, so every refund still takes its score back); a
notice of an older order changes nothing, so the owner lets go of what it held for older
orders and closed periods, and its memory is bounded by that window, not the board's age.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from games.campaign import listed
from games.commission import Rates
from games.settings import Table, read_campaign_head
from games.topics import IDENT_RE

KIND = "leaderboard"
DEFAULT_ZONE = "Asia/Shanghai"
METRICS = ("sales", "commission", "orders", "members")
PERIODS = ("all", "daily", "weekly", "monthly")
SCOPES = ("everyone", "region")
MAX_RANKS = 100

_RESET_AT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_REGION = IDENT_RE


@dataclass(frozen=True)
class BoardCampaign:
    """A leaderboard. Times are epoch milliseconds; `reset_minutes` is when each period
    starts, in minutes after local midnight in `zone` (weeks start on Monday)."""

    id: str
    title: str
    starts_at: int
    ends_at: int
    metric: str
    period: str
    scope: str
    ranks: int
    reset_minutes: int = 0
    zone: str = DEFAULT_ZONE
    # Regions whose boards exist from the start (others appear with their first score).
    regions: tuple[str, ...] = ()
    keep_days: int = 60
    kind: str = KIND
    commission: Rates | None = field(default=None, init=False)

    @property
    def tz(self) -> ZoneInfo:
        """The time zone whose days bound the periods."""
        return ZoneInfo(self.zone)

    @property
    def keep_ms(self) -> int:
        """How long after it was made an order still moves the board (ms)."""
        return self.keep_days * 86_400_000

    @property
    def regional(self) -> bool:
        """Whether the board ranks each region apart (besides everyone together)."""
        return self.scope == "region"

    @property
    def reset_at(self) -> str:
        """`reset_minutes` as the config writes it, "HH:MM"."""
        return f"{self.reset_minutes // 60:02d}:{self.reset_minutes % 60:02d}"

    def public(self) -> dict[str, object]:
        """The board as `GET /api/campaigns` and `GET /api/leaderboards` list it."""
        return listed(self, metric=self.metric, period=self.period, scope=self.scope,
                      ranks=self.ranks, reset_at=self.reset_at, time_zone=self.zone,
                      regions=list(self.regions))


def parse_campaign(s: Table, rates: Rates) -> BoardCampaign:
    """A `[[campaigns]]` table of kind "leaderboard"; every refusal names its key. `rates`
    is unused: a board sells nothing."""
    del rates
    head = read_campaign_head(s)
    s.check("kind", head.kind == KIND, f"must be {KIND!r}")
    metric = s.get("metric", str)
    s.check("metric", metric in METRICS, f"must be one of {list(METRICS)}")
    period = s.get("period", str)
    s.check("period", period in PERIODS, f"must be one of {list(PERIODS)}")
    scope = s.get("scope", str, "everyone")
    s.check("scope", scope in SCOPES, f"must be one of {list(SCOPES)}")
    ranks = s.get("ranks", int, 10)
    s.check("ranks", 1 <= ranks <= MAX_RANKS, f"must be from 1 to {MAX_RANKS}")
    reset = s.get("reset_at", str, "00:00")
    match = _RESET_AT.fullmatch(reset)
    s.check("reset_at", match is not None, "must be a local time \"HH:MM\", e.g. \"00:00\"")
    assert match is not None  # check raised otherwise
    zone = s.get("time_zone", str, DEFAULT_ZONE)
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise s.fail("time_zone", f"{zone!r} is not a known time zone, e.g. "
                                  "\"Asia/Shanghai\"") from None
    regions = s.get("regions", list, [])
    s.check("regions", scope == "region" or not regions, "is for a board of scope \"region\"")
    s.check("regions", all(isinstance(r, str) and _REGION.fullmatch(r) and r != "all"
                           for r in regions),
            "must be region names of 1-64 characters of A-Z, a-z, 0-9, - and _ (not \"all\")")
    s.check("regions", len(set(regions)) == len(regions), "names a region twice")
    keep = s.get("keep_days", int, 60)
    s.check("keep_days", 1 <= keep <= 3660, "must be from 1 to 3660 (days)")
    s.done()
    return BoardCampaign(
        id=head.id, title=head.title, starts_at=head.starts_at, ends_at=head.ends_at,
        metric=metric, period=period, scope=scope, ranks=ranks,
        reset_minutes=int(match[1]) * 60 + int(match[2]), zone=zone, regions=tuple(regions),
        keep_days=keep)
