"""The lottery (抽奖) campaign: what a marketer configures, and how its table is read.

A lottery campaign has an ordered prize table (the order is part of the fairness
construction, see `games.lottery.fairness`), a number of free draws per user per local day
(they come back at `reset_at`, local time in `time_zone`) and extra draws a user earns per
paid order. Draws cost nothing, so a lottery's orders earn no commission.

A `[[campaigns]]` table of kind "lottery":

    [[campaigns]]
    id = "spring-draw"
    kind = "lottery"
    title = "Spring lucky draw"
    starts_at = "2026-01-01T00:00:00+08:00"
    ends_at = "2026-02-01T00:00:00+08:00"
    free_draws_per_day = 1
    reset_at = "06:00"            # optional, "00:00" by default
    time_zone = "Asia/Shanghai"   # optional, the default
    draws_per_order = 1           # optional, the default
    [[campaigns.prizes]]
    id = "teapot"
    title = "Clay teapot"
    kind = "product"              # product, coupon, points or thanks
    sku = "POT-1"                 # product prizes only, required there
    weight = 5
    stock = 10
    max_wins_per_user = 1         # optional
    [[campaigns.prizes]]
    id = "thanks"
    title = "谢谢参与"
    kind = "thanks"
    weight = 95                   # no stock: unlimited

A coupon prize names its `coupon` (the code or batch granted), a points prize its
`points` (int >= 1). Without a thanks prize the table gets one of weight 0 at its end, so
the weight of a prize that runs out has somewhere to go.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from games.campaign import listed
from games.commission import Rates
from games.lottery.fairness import KINDS, THANKS, Prize, check_table
from games.settings import Table, read_campaign_head
from games.topics import SLUG_RE

KIND = "lottery"
DEFAULT_ZONE = "Asia/Shanghai"
THANKS_TITLE = "谢谢参与"
MAX_DRAWS = 1000  # a sanity bound on free draws per day and draws per order
MINUTES_PER_DAY = 24 * 60

_RESET_AT = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True)
class LotteryPrize(Prize):
    """A row of the prize table, and what winning it grants.

    A `fairness.Prize` (so the table goes to the fairness core as it is), plus `sku` (a
    product prize's product), `coupon` (a coupon prize's code or batch) and `points` (a
    points prize's amount); each is None on every other kind.
    """

    sku: str | None = None
    coupon: str | None = None
    points: int | None = None

    def public(self) -> dict[str, object]:
        """The prize as the campaign listing shows it."""
        return {"id": self.id, "title": self.title, "kind": self.kind, "weight": self.weight,
                "stock": self.stock, "max_wins_per_user": self.max_wins, "sku": self.sku,
                "coupon": self.coupon, "points": self.points}


def thanks_prize(weight: int = 0, title: str = THANKS_TITLE) -> LotteryPrize:
    """The "thanks" (no prize) slot: unlimited, never capped."""
    return LotteryPrize(THANKS, title, weight, None, THANKS)


@dataclass(frozen=True)
class LotteryCampaign:
    """A lottery campaign. Times are epoch milliseconds.

    `prizes` is the prize table in config order, exactly one "thanks" prize included.
    `reset_minutes` is when a day's free draws come back: minutes after local midnight in
    `zone` (an IANA time zone name). `draws_per_order` is how many draws a paid order
    earns. `commission` is always None: a draw costs nothing, so its orders earn nothing.
    """

    id: str
    title: str
    starts_at: int
    ends_at: int
    prizes: tuple[LotteryPrize, ...]
    free_draws_per_day: int
    reset_minutes: int = 0
    zone: str = DEFAULT_ZONE
    draws_per_order: int = 1
    kind: str = KIND
    commission: Rates | None = field(default=None, init=False)

    def is_active(self, now: int) -> bool:
        """True while the campaign takes draws."""
        return self.starts_at <= now < self.ends_at

    @property
    def tz(self) -> ZoneInfo:
        """The time zone whose days (from `reset_minutes`) bound the free draws."""
        return ZoneInfo(self.zone)  # ZoneInfo caches instances by key

    @property
    def reset_at(self) -> str:
        """`reset_minutes` as the config writes it, "HH:MM"."""
        return f"{self.reset_minutes // 60:02d}:{self.reset_minutes % 60:02d}"

    def prize(self, prize_id: str) -> LotteryPrize:
        """The prize with id `prize_id` (KeyError if the table has none)."""
        for prize in self.prizes:
            if prize.id == prize_id:
                return prize
        raise KeyError(prize_id)

    def public(self) -> dict[str, object]:
        """The campaign as `GET /api/campaigns` lists it."""
        return listed(
            self,
            prizes=[prize.public() for prize in self.prizes],
            free_draws_per_day=self.free_draws_per_day, reset_at=self.reset_at,
            time_zone=self.zone, draws_per_order=self.draws_per_order,
        )


def parse_campaign(s: Table, rates: Rates) -> LotteryCampaign:
    """A `[[campaigns]]` table of kind "lottery". `rates` (the shop's commission rates)
    are not used: a lottery's orders earn nothing, and a `commission` table is refused as
    an unknown key. Every refusal names its key."""
    del rates  # the Game protocol's signature; see the docstring
    head = read_campaign_head(s)
    s.check("kind", head.kind == KIND, f"must be {KIND!r}")
    free = s.get("free_draws_per_day", int)
    s.check("free_draws_per_day", 0 <= free <= MAX_DRAWS, f"must be from 0 to {MAX_DRAWS}")
    reset = s.get("reset_at", str, "00:00")
    match = _RESET_AT.fullmatch(reset)
    s.check("reset_at", match is not None, "must be a local time \"HH:MM\", e.g. \"06:00\"")
    assert match is not None  # for the type checker: check raised otherwise
    reset_minutes = int(match[1]) * 60 + int(match[2])
    zone = s.get("time_zone", str, DEFAULT_ZONE)
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise s.fail("time_zone", f"{zone!r} is not a known time zone, e.g. "
                                  "\"Asia/Shanghai\"") from None
    per_order = s.get("draws_per_order", int, 1)
    s.check("draws_per_order", 0 <= per_order <= MAX_DRAWS, f"must be from 0 to {MAX_DRAWS}")
    s.check("free_draws_per_day", free > 0 or per_order > 0,
            "is 0 and so is draws_per_order: nobody could ever draw")
    prizes = _prizes(s)
    s.done()
    return LotteryCampaign(
        id=head.id, title=head.title, starts_at=head.starts_at, ends_at=head.ends_at,
        prizes=prizes, free_draws_per_day=free, reset_minutes=reset_minutes, zone=zone,
        draws_per_order=per_order,
    )


def _prizes(s: Table) -> tuple[LotteryPrize, ...]:
    raw = s.get("prizes", list)
    s.check("prizes", len(raw) > 0, "needs at least one prize ([[campaigns.prizes]])")
    prizes: list[LotteryPrize] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        p = Table(s.source, f"{s.key('prizes')}[{index}]", item)
        prize = _prize(p)
        p.check("id", prize.id not in seen, f"{prize.id!r} is used twice")
        seen.add(prize.id)
        prizes.append(prize)
    if THANKS not in seen:
        prizes.append(thanks_prize())
    try:
        check_table(prizes)
    except ValueError as error:  # what the per-prize checks leave: the table as a whole
        raise s.fail("prizes", str(error)) from None
    return tuple(prizes)


def _prize(p: Table) -> LotteryPrize:
    pid = p.get("id", str)
    p.check("id", SLUG_RE.fullmatch(pid) is not None,
            "must be 1-64 characters of a-z, 0-9, - and _")
    title = p.get("title", str)
    kind = p.get("kind", str)
    p.check("kind", kind in KINDS, f"must be one of {sorted(KINDS)}")
    p.check("id", (pid == THANKS) == (kind == THANKS),
            "must be 'thanks' exactly for the prize of kind 'thanks'")
    weight = p.get("weight", int)
    p.check("weight", weight >= 0, "must not be negative")
    extras: dict[str, Any] = {}
    if kind == THANKS:
        for name in ("stock", "max_wins_per_user"):
            p.check(name, name not in p.data, "is not set on the thanks prize: it is unlimited")
        stock, max_wins = None, None
    else:
        stock = p.get("stock", int)
        p.check("stock", stock >= 0, "must not be negative")
        max_wins = p.get("max_wins_per_user", int, None)
        p.check("max_wins_per_user", max_wins is None or max_wins >= 1,
                "must be at least 1 (use weight 0 or stock 0 to withhold a prize)")
    # What the prize grants: each key on its own kind only, and required there.
    for name, own, typ in (("sku", "product", str), ("coupon", "coupon", str),
                           ("points", "points", int)):
        if kind != own:
            p.check(name, name not in p.data, f"is only for a prize of kind {own!r}")
            continue
        value = p.get(name, typ)
        if typ is str:
            p.check(name, value != "", "must not be empty")
        else:
            p.check(name, value >= 1, "must be at least 1")
        extras[name] = value
    p.done()
    return LotteryPrize(pid, title, weight, stock, kind, max_wins, **extras)
