"""Campaign value types: what a marketer configures, validated elsewhere, frozen here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from games.commission import Rates


@dataclass(frozen=True)
class Product:
    """The thing sold: prices are integer fen (分)."""

    sku: str
    title: str
    list_price: int
    group_price: int


@dataclass(frozen=True)
class GroupBuyCampaign:
    """A group-buy (拼团) campaign. Times are epoch milliseconds."""

    id: str
    title: str
    starts_at: int
    ends_at: int
    product: Product
    group_size: int
    time_limit_ms: int
    stock: int
    max_groups_led: int
    max_groups_joined: int
    virtual_fill_ratio: float | None = None
    # How long a seat is held for its payment (ms); None: no payment step, a join is a
    # member at once and the deal's payment is recorded when it completes.
    pay_within_ms: int | None = None
    kind: str = "groupbuy"
    # What a referred buyer's order earns up the referral chain (None: the shop's rates).
    commission: Rates | None = None

    def is_active(self, now: int) -> bool:
        """True while the campaign takes new groups and joins."""
        return self.starts_at <= now < self.ends_at

    def public(self) -> dict[str, object]:
        """The campaign as `GET /api/campaigns` lists it."""
        return listed(
            self,
            product={"sku": self.product.sku, "title": self.product.title,
                     "list_price": self.product.list_price,
                     "group_price": self.product.group_price},
            group_size=self.group_size, time_limit_seconds=self.time_limit_ms // 1000,
            stock=self.stock, max_groups_led=self.max_groups_led,
            max_groups_joined=self.max_groups_joined,
            virtual_fill_ratio=self.virtual_fill_ratio,
            pay_within_seconds=(None if self.pay_within_ms is None
                                else self.pay_within_ms // 1000),
        )


def listed(campaign: GroupBuyCampaign | Any, **fields: object) -> dict[str, object]:
    """A campaign as `GET /api/campaigns` lists it: what every campaign shows, its own
    `fields`, and the commission a referred buyer's order earns (a sharer's page shows
    what sharing earns, 分享赚)."""
    rates = campaign.commission
    return {
        "id": campaign.id, "kind": campaign.kind, "title": campaign.title,
        "starts_at": iso(campaign.starts_at), "ends_at": iso(campaign.ends_at), **fields,
        "commission": None if rates is None else {"level1_bps": rates.level1_bps,
                                                  "level2_bps": rates.level2_bps},
    }


@lru_cache(maxsize=65536)
def iso(ms: int) -> str:
    """Epoch milliseconds as an ISO-8601 UTC string, the API's time format.

    Cached: a group's two times are formatted again for every frame it appears in.
    """
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
