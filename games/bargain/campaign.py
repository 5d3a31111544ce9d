"""The bargain (砍价) campaign: what a marketer configures, and how its table is read.

A bargain campaign sells one product. A user starts a bargain at the list price; each
distinct helper cuts a random amount off it, and the `helpers_to_floor`-th helper brings
it exactly to the floor price. The initiator buys at the floor (or before it, where the
campaign allows), within `pay_within_ms` of reaching it.
"""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from games.campaign import listed
from games.commission import Rates
from games.settings import Table, read_campaign_head, read_own_rates

KIND = "bargain"
# A cut's share range: (lo, hi) with 0 < lo <= hi < 1, of the distance left to the floor.
Share = tuple[float, float]

MIN_HELPERS, MAX_HELPERS = 2, 100
MAX_SECONDS = 30 * 86400


@dataclass(frozen=True)
class BargainProduct:
    """The thing sold: prices are integer fen (分); the bargain runs from `list_price`
    down to `floor_price`."""

    sku: str
    title: str
    list_price: int
    floor_price: int


@dataclass(frozen=True)
class BargainCampaign:
    """A bargain campaign. Times are epoch milliseconds.

    `first_cut`: the initiator's own cut at start, a share range of the whole distance
    (list − floor). `newcomer_cut`: the share range of the distance still to go that a
    helper who has never ordered cuts instead of the usual random share. Both are clamped
    so that every helper still to come gets at least 1 fen.
    """

    id: str
    title: str
    starts_at: int
    ends_at: int
    product: BargainProduct
    stock: int
    helpers_to_floor: int
    time_limit_ms: int
    max_bargains_started: int = 1
    max_helps_per_day: int = 5
    max_helps_per_campaign: int = 50
    time_zone: str = "Asia/Shanghai"
    buy_before_floor: bool = False
    first_cut: Share | None = None
    newcomer_cut: Share | None = None
    pay_within_ms: int = 900_000
    # Whether a purchase is paid through the shop's payment step (held until paid, or
    # paid within the command where the provider's payer pays at once); False: the
    # payment is recorded with the deal.
    pay_to_buy: bool = False
    kind: str = KIND
    # What a referred buyer's order earns up the referral chain (None: the shop's rates).
    commission: Rates | None = None

    def is_active(self, now: int) -> bool:
        """True while the campaign takes new bargains and helps."""
        return self.starts_at <= now < self.ends_at

    @property
    def zone(self) -> ZoneInfo:
        """The time zone whose calendar days bound a helper's helps per day."""
        return ZoneInfo(self.time_zone)  # ZoneInfo caches instances by key

    def public(self) -> dict[str, object]:
        """The campaign as `GET /api/campaigns` lists it."""
        return listed(
            self,
            product={"sku": self.product.sku, "title": self.product.title,
                     "list_price": self.product.list_price,
                     "floor_price": self.product.floor_price},
            stock=self.stock, helpers_to_floor=self.helpers_to_floor,
            time_limit_seconds=self.time_limit_ms // 1000,
            max_bargains_started=self.max_bargains_started,
            max_helps_per_day=self.max_helps_per_day,
            max_helps_per_campaign=self.max_helps_per_campaign, time_zone=self.time_zone,
            buy_before_floor=self.buy_before_floor,
            first_cut=None if self.first_cut is None else list(self.first_cut),
            newcomer_cut=None if self.newcomer_cut is None else list(self.newcomer_cut),
            pay_within_seconds=self.pay_within_ms // 1000, pay_to_buy=self.pay_to_buy,
        )


def parse_campaign(s: Table, rates: Rates) -> BargainCampaign:
    """A `[[campaigns]]` table of kind "bargain"; `rates` are the shop's commission rates,
    which an optional `[campaigns.commission]` table overrides key by key. Every refusal
    names its key."""
    head = read_campaign_head(s)
    s.check("kind", head.kind == KIND, f"must be {KIND!r}")
    product = _product(Table(s.source, s.key("product"), s.get("product", dict)))
    stock = s.get("stock", int)
    s.check("stock", stock >= 0, "must not be negative")
    helpers = s.get("helpers_to_floor", int)
    s.check("helpers_to_floor", MIN_HELPERS <= helpers <= MAX_HELPERS,
            f"must be from {MIN_HELPERS} to {MAX_HELPERS}")
    time_limit = s.get("time_limit_seconds", int)
    s.check("time_limit_seconds", 1 <= time_limit <= MAX_SECONDS,
            "must be from 1 second to 30 days")
    limits = {}
    for name, default in (("max_bargains_started", 1), ("max_helps_per_day", 5),
                          ("max_helps_per_campaign", 50)):
        limits[name] = s.get(name, int, default)
        s.check(name, limits[name] >= 1, "must be at least 1")
    zone = s.get("time_zone", str, "Asia/Shanghai")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise s.fail("time_zone", f"{zone!r} is not a known time zone, e.g. "
                                  "\"Asia/Shanghai\"") from None
    before_floor = s.get("buy_before_floor", bool, False)
    first_cut = _share(s, "first_cut")
    newcomer_cut = _share(s, "newcomer_cut")
    pay_within = s.get("pay_within_seconds", int, 900)
    pay_to_buy = s.get("pay_to_buy", bool, True)
    s.check("pay_within_seconds", 1 <= pay_within <= MAX_SECONDS,
            "must be from 1 second to 30 days")
    # Every helper cuts at least 1 fen, and so does the initiator's first cut.
    distance = product.list_price - product.floor_price
    needed = helpers + (1 if first_cut is not None else 0)
    s.check("helpers_to_floor", distance >= needed,
            f"needs list_price - floor_price ({distance} fen) of at least {needed} fen, "
            "1 fen for each cut" + (" (first_cut included)" if first_cut else ""))
    rates = read_own_rates(s, rates)
    s.done()
    return BargainCampaign(
        id=head.id, title=head.title, starts_at=head.starts_at, ends_at=head.ends_at,
        product=product, stock=stock, helpers_to_floor=helpers, time_limit_ms=time_limit * 1000,
        max_bargains_started=limits["max_bargains_started"],
        max_helps_per_day=limits["max_helps_per_day"],
        max_helps_per_campaign=limits["max_helps_per_campaign"], time_zone=zone,
        buy_before_floor=before_floor, first_cut=first_cut, newcomer_cut=newcomer_cut,
        pay_within_ms=pay_within * 1000, pay_to_buy=pay_to_buy, commission=rates,
    )


def _product(p: Table) -> BargainProduct:
    product = BargainProduct(
        sku=p.get("sku", str), title=p.get("title", str),
        list_price=p.get("list_price", int), floor_price=p.get("floor_price", int),
    )
    p.check("sku", product.sku != "", "must not be empty")
    p.check("list_price", product.list_price > 0, "must be a positive number of fen")
    p.check("floor_price", product.floor_price >= 0, "must not be negative")
    p.check("floor_price", product.floor_price < product.list_price,
            "must be below list_price")
    p.done()
    return product


def _share(s: Table, name: str) -> Share | None:
    raw = s.get(name, list, None)
    if raw is None:
        return None
    s.check(name, len(raw) == 2 and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in raw),
        "must be two numbers [lo, hi], shares of the distance to the floor")
    lo, hi = float(raw[0]), float(raw[1])
    s.check(name, 0 < lo <= hi < 1, "must have 0 < lo <= hi < 1")
    return lo, hi
