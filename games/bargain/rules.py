"""Bargain (砍价) rules as a reducer: commands, events, state, `decide` and `evolve`.

The consistency boundary is the campaign, not the bargain: stock and per-user limits span
all of a campaign's bargains, so one state holds them all and one owner writes it.

A bargain's life: `open` from its start, each distinct helper cutting a random amount off
its price; `floor_reached` when the `helpers_to_floor`-th helper brings it exactly to the
floor (a unit of stock is then held for the campaign's `pay_within_ms`, if one is left);
`bought` when its initiator buys (at the floor, or before it where the campaign allows);
`expired` when its deadline passes unbought (a held unit goes back to the stock).

Every cut is drawn from the bargain's own seed (stored in its `bargain_started` event)
and the helper's position, never from the owner's random stream: `replay_cuts` recomputes
every cut of a bargain from its seed and its helpers' order, for tests and operators.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

from games import payments
from games.bargain.campaign import BargainCampaign, Share
from games.campaign import iso
from games.errors import GameError
from games.jsontext import compact
from games.pmap import PMap


class BargainStatus(StrEnum):
    """A bargain's life (the contract's statuses)."""

    OPEN = "open"
    FLOOR_REACHED = "floor_reached"
    BOUGHT = "bought"
    EXPIRED = "expired"


Helper = tuple[str, int, int]  # (user, cut in fen, at epoch ms), in the order they helped


@dataclass(frozen=True)
class Bargain:
    """One bargain. `version` counts its events: it is the seq of its live topic.

    `list_price`, `floor_price` and `helpers_to_floor` are the campaign's at the start,
    frozen here: a config change never strands a bargain half-way (its cuts were drawn
    for these numbers). `hold_until` is set when the floor is reached with a unit of stock
    held for the initiator; an unheld floor-reached bargain holds nothing.

    `purchases` are the initiator's payments to buy it, oldest first: the last may be
    held, waiting for its payment (in a campaign whose provider does not pay within the
    command); `purchase_unit` says whether that purchase took a unit of stock of its own
    (a bargain bought before its floor, or at a floor that held none).
    """

    id: str
    initiator: str
    list_price: int
    floor_price: int
    price: int
    seed: int
    helpers_to_floor: int
    created_at: int
    expires_at: int
    helpers: tuple[Helper, ...] = ()
    status: BargainStatus = BargainStatus.OPEN
    hold_until: int | None = None
    version: int = 0
    purchases: tuple[payments.Hold, ...] = ()
    purchase_unit: bool = False
    # `helpers` as the API shows them (the JSON text of B's `helpers`), with how many it
    # renders. Extended by one helper's text per help (`with_helper`), so an answer, which
    # carries every helper (up to 100), splices it rather than encoding the list again:
    # O(1) work per help, not O(helpers). Rendered afresh when it does not match the list
    # (a bargain built from a row, or without it).
    rendered: tuple[int, str] = field(default=(0, "[]"), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.rendered[0] != len(self.helpers):
            object.__setattr__(self, "rendered", (len(self.helpers), compact(
                [_helper_view(helper) for helper in self.helpers])))

    def with_helper(self, helper: Helper, price: int, version: int) -> Bargain:
        """This bargain after `helper`'s cut brought it to `price`."""
        count, text = self.rendered
        fragment = compact(_helper_view(helper))
        text = f"[{fragment}]" if count == 0 else f"{text[:-1]},{fragment}]"
        # A direct constructor call (dataclasses.replace inspects the fields each time):
        # this runs once per help on the owner's hot path.
        return Bargain(self.id, self.initiator, self.list_price, self.floor_price, price,
                       self.seed, self.helpers_to_floor, self.created_at, self.expires_at,
                       self.helpers + (helper,), self.status, self.hold_until, version,
                       self.purchases, self.purchase_unit, (count + 1, text))

    @property
    def helpers_left(self) -> int:
        """Helpers still needed to reach the floor."""
        return self.helpers_to_floor - len(self.helpers)

    @property
    def first_cut(self) -> int:
        """The initiator's own cut at start (0 when the campaign has none)."""
        return self.list_price - self.price - sum(cut for _, cut, _ in self.helpers)

    @property
    def held(self) -> bool:
        """True while a unit of stock is held for this bargain's purchase."""
        return self.status is BargainStatus.FLOOR_REACHED and self.hold_until is not None

    def deadline(self) -> int | None:
        """When this bargain expires unless bought (None once bought or expired).

        Open: its `expires_at`. At the floor with a unit held: `hold_until` (the payment
        window, which may end before or after `expires_at`). At the floor with nothing
        held: `expires_at` still — until then its initiator may buy if a unit has come
        back to the stock meanwhile.
        """
        if self.status is BargainStatus.OPEN:
            return self.expires_at
        if self.status is BargainStatus.FLOOR_REACHED:
            return self.expires_at if self.hold_until is None else self.hold_until
        return None

    def buying(self) -> payments.Hold | None:
        """The purchase waiting for its payment, if any."""
        last = self.purchases[-1] if self.purchases else None
        return last if last is not None and last.status.holding else None

    def purchase(self, payment: str) -> payments.Hold | None:
        """The purchase of `payment`, if it is this bargain's."""
        for hold in self.purchases:
            if hold.payment == payment:
                return hold
        return None

    def helped_by(self, user: str) -> bool:
        """True when `user` already helped this bargain (at most 100 helpers: a scan)."""
        return any(helper == user for helper, _, _ in self.helpers)


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class StartBargain:
    """`user` starts a bargain and is its initiator."""

    user: str


@dataclass(frozen=True)
class HelpBargain:
    """`user` helps `bargain`. `newcomer`: the user has never ordered (the gateway knows,
    the client never says), which draws from the campaign's `newcomer_cut` range."""

    user: str
    bargain: str
    newcomer: bool = False


@dataclass(frozen=True)
class BuyBargain:
    """`user` (the initiator) buys `bargain` at its current price: bought at once where
    the campaign takes no payment, else held until its payment comes (or its hold ends)."""

    user: str
    bargain: str


# The payment step's commands, shared by every game that holds something until paid.
ExpireHold = payments.ExpireHold
SettlePayment = payments.SettlePayment


@dataclass(frozen=True)
class ExpireBargain:
    """The deadline timer of `bargain` fired (a no-op unless it is still due)."""

    bargain: str


Command = StartBargain | HelpBargain | BuyBargain | ExpireBargain | ExpireHold | SettlePayment


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BargainStarted:
    """A bargain began at `list_price` less the initiator's `first_cut` (0: none)."""

    bargain: str
    seq: int
    at: int
    initiator: str
    list_price: int
    floor_price: int
    helpers_to_floor: int
    seed: int
    expires_at: int
    first_cut: int
    price: int
    type: str = "bargain_started"


@dataclass(frozen=True)
class BargainHelped:
    """`helper` cut `cut` fen; the bargain now costs `price`. `newcomer` is the flag the
    help came with (a replay needs it to draw the same cut)."""

    bargain: str
    seq: int
    at: int
    helper: str
    cut: int
    price: int
    newcomer: bool = False
    type: str = "bargain_helped"


@dataclass(frozen=True)
class FloorReached:
    """The floor price is reached; `held`: a unit of stock is kept until `hold_until`
    (None when no stock was left to hold)."""

    bargain: str
    seq: int
    at: int
    hold_until: int | None
    held: bool
    type: str = "floor_reached"


@dataclass(frozen=True)
class BargainBought:
    """The deal: `buyer` (the initiator) buys `sku` at `price`, paid by `payment` (""
    where the campaign's payment is recorded with the deal, as before payments)."""

    bargain: str
    seq: int
    at: int
    buyer: str
    price: int
    sku: str
    payment: str = ""
    type: str = "bargain_bought"


@dataclass(frozen=True)
class PurchaseHeld:
    """The initiator is buying at `amount`: held until `until` for `payment`; `unit`: the
    purchase took a unit of stock of its own (the bargain held none)."""

    bargain: str
    seq: int
    at: int
    payment: str
    amount: int
    until: int
    unit: bool
    type: str = "purchase_held"


@dataclass(frozen=True)
class PurchaseLapsed:
    """The purchase's hold ended unpaid: the provider is asked before it goes."""

    bargain: str
    seq: int
    at: int
    payment: str
    type: str = "purchase_lapsed"


@dataclass(frozen=True)
class PurchaseReleased:
    """The purchase was never paid: its own unit, if it took one, goes back."""

    bargain: str
    seq: int
    at: int
    payment: str
    type: str = "purchase_released"


@dataclass(frozen=True)
class PaymentReturned:
    """Money for a purchase that was gone (or not its amount): given back at once."""

    bargain: str
    seq: int
    at: int
    payment: str
    amount: int
    type: str = "payment_returned"


@dataclass(frozen=True)
class BargainExpired:
    """The bargain's deadline passed unbought; `released`: its held unit went back."""

    bargain: str
    seq: int
    at: int
    released: bool
    type: str = "bargain_expired"


Event = (BargainStarted | BargainHelped | FloorReached | BargainBought | BargainExpired
         | PurchaseHeld | PurchaseLapsed | PurchaseReleased | PaymentReturned)

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (BargainStarted, BargainHelped, FloorReached, BargainBought, BargainExpired,
                PurchaseHeld, PurchaseLapsed, PurchaseReleased, PaymentReturned)
}
EVENT_TYPES = frozenset(_EVENT_TYPES)


def event_to_dict(event: Event) -> dict[str, Any]:
    """Plain JSON-ready data for storage and the wire.

    The seed travels as a decimal string: a 64-bit integer is exact in Python's and
    Postgres's JSON but not in a JavaScript client's (53-bit) numbers.
    """
    # Fields are flat values: a shallow read is enough (dataclasses.asdict deep-copies).
    data = {name: getattr(event, name) for name in event.__dataclass_fields__}
    if isinstance(event, BargainStarted):
        data["seed"] = str(event.seed)
    return data


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """The inverse of `event_to_dict`; raises KeyError/TypeError/ValueError on foreign
    data."""
    cls = _EVENT_TYPES[data["type"]]
    fields = dict(data)
    if cls is BargainStarted:
        fields["seed"] = int(fields["seed"])
    event: Event = cls(**fields)
    return event


# --- cuts -----------------------------------------------------------------------------


def _rng(seed: int, k: int) -> random.Random:
    # Seeding with a string hashes it (SHA-512): the same draws on every run, platform and
    # Python version, and independent streams per k, so a cut never depends on what
    # other bargains or commands drew before it.
    return random.Random(f"{seed}:{k}")


def _bounds(share: Share, distance: int, most: int) -> tuple[int, int]:
    """The fen range [lo, hi] of `share` of `distance`, clamped into [1, most]."""
    # Exact: a float share is read as the decimal it was written as (0.3 is 3/10).
    lo = math.ceil(Fraction(repr(share[0])) * distance)
    hi = math.floor(Fraction(repr(share[1])) * distance)
    lo = min(max(lo, 1), most)
    return lo, min(max(hi, lo), most)


def draw_first_cut(seed: int, distance: int, helpers: int, share: Share | None) -> int:
    """The initiator's cut at start: `share` of `distance` (list − floor), leaving at
    least 1 fen for each of `helpers`; 0 when the campaign has no first cut."""
    if share is None:
        return 0
    most = distance - helpers
    if most < 1:
        raise ValueError("a first cut needs a distance above the number of helpers")
    lo, hi = _bounds(share, distance, most)
    return _rng(seed, 0).randint(lo, hi)


def draw_cut(seed: int, k: int, remaining: int, left: int, share: Share | None = None) -> int:
    """The cut of helper `k` (from 1) when `remaining` fen are left to the floor and
    `left` helpers (this one included) are still needed.

    The last helper takes the remainder, so the floor is reached exactly. Before it, a cut
    is at least 1 fen and leaves at least 1 fen for each helper after it: uniform up to
    twice the fair share (the red-envelope rule, so cuts vary but none starves the rest),
    or, with `share` (a newcomer's range), that share of `remaining`, clamped the same way.
    """
    if left < 1 or remaining < left:
        raise ValueError(f"cannot cut {remaining} fen among {left} helpers, 1 fen each")
    if left == 1:
        return remaining
    most = remaining - (left - 1)
    if share is None:
        lo, hi = 1, min(most, 2 * remaining // left)
    else:
        lo, hi = _bounds(share, remaining, most)
    return _rng(seed, k).randint(lo, hi)


def replay_cuts(
    seed: int, list_price: int, floor_price: int, helpers_to_floor: int,
    newcomers: Sequence[bool], first_share: Share | None = None,
    newcomer_share: Share | None = None,
) -> tuple[int, list[int]]:
    """The initiator's first cut and the cuts of helpers who came in order with
    `newcomers` flags, recomputed from `seed` alone: what a bargain's events must show."""
    distance = list_price - floor_price
    first = draw_first_cut(seed, distance, helpers_to_floor, first_share)
    remaining = distance - first
    cuts = []
    for k, newcomer in enumerate(newcomers[:helpers_to_floor], start=1):
        cut = draw_cut(seed, k, remaining, helpers_to_floor - k + 1,
                       newcomer_share if newcomer else None)
        cuts.append(cut)
        remaining -= cut
    return first, cuts


def replay_events(campaign: BargainCampaign, events: Iterable[Event | Mapping[str, Any]]
                  ) -> tuple[int, list[int]]:
    """`replay_cuts` for one bargain's stored events (decoded or in their stored form),
    with the campaign's share ranges: an operator's audit of its cuts."""
    decoded = [e if not isinstance(e, Mapping) else event_from_dict(e) for e in events]
    started = next(e for e in decoded if isinstance(e, BargainStarted))
    newcomers = [e.newcomer for e in decoded if isinstance(e, BargainHelped)]
    return replay_cuts(started.seed, started.list_price, started.floor_price,
                       started.helpers_to_floor, newcomers, campaign.first_cut,
                       campaign.newcomer_cut)


# --- state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BargainState:
    """All of one campaign: its bargains, the stock left and each user's tallies.

    `started` counts a user's bargains that did not expire (an expired bargain gives its
    place back, as a failed group does). `helps` counts a user's helps in the campaign,
    `helps_day` per (user, local day ordinal in the campaign's time zone).
    """

    campaign: BargainCampaign
    stock_left: int
    bargains: PMap[str, Bargain] = field(default_factory=PMap)
    started: PMap[str, int] = field(default_factory=PMap)
    helps: PMap[str, int] = field(default_factory=PMap)
    helps_day: PMap[tuple[str, int], int] = field(default_factory=PMap)
    version: int = 0
    # The bargain of each purchase's payment (what a provider's word names).
    payments: PMap[str, str] = field(default_factory=PMap)

    def live(self) -> Iterator[Bargain]:
        """The bargains still open or at their floor: those with a deadline armed."""
        return (b for b in self.bargains.values() if b.deadline() is not None)

    def held(self) -> int:
        """Units of stock held for floor-reached bargains awaiting their purchase, and
        for purchases waiting for their payment with a unit of their own."""
        return sum(int(b.held) + int(b.buying() is not None and b.purchase_unit)
                   for b in self.bargains.values())

    def bought(self) -> int:
        """Bargains bought: each took one unit of stock for good."""
        return sum(1 for b in self.bargains.values() if b.status is BargainStatus.BOUGHT)


def initial_state(campaign: BargainCampaign) -> BargainState:
    """A campaign before anything happened."""
    return BargainState(campaign=campaign, stock_left=campaign.stock)


def local_day(at: int, zone: ZoneInfo) -> int:
    """The calendar day (proleptic ordinal) of epoch ms `at` in `zone`."""
    # Whole seconds: a day boundary is on a second, so the milliseconds never move it.
    return datetime.fromtimestamp(at // 1000, zone).date().toordinal()


def _new_id(state: BargainState, rng: random.Random) -> str:
    while True:
        candidate = f"b{rng.getrandbits(48):012x}"
        if candidate not in state.bargains:
            return candidate


def decide(state: BargainState, command: Command, now: int, rng: random.Random) -> list[Event]:
    """The events `command` causes, or GameError when the rules refuse it."""
    if isinstance(command, ExpireBargain):
        return _decide_expire(state, command, now)
    if isinstance(command, ExpireHold):
        return _decide_lapse(state, command, now)
    if isinstance(command, SettlePayment):
        return _decide_settle(state, command, now)
    if isinstance(command, BuyBargain):
        # A bargain at its floor stays buyable through its payment window, even past the
        # campaign's end: the floor was reached while the campaign ran.
        return _decide_buy(state, command, now)
    campaign = state.campaign
    if not campaign.is_active(now):
        raise GameError("campaign_not_active", f"campaign {campaign.id} is not running now")
    if isinstance(command, StartBargain):
        return _decide_start(state, command, now, rng)
    return _decide_help(state, command, now)


def _decide_start(state: BargainState, command: StartBargain, now: int, rng: random.Random
                  ) -> list[Event]:
    campaign = state.campaign
    if state.started.get(command.user, 0) >= campaign.max_bargains_started:
        raise GameError("limit_reached",
                        f"you may start at most {campaign.max_bargains_started} bargains here")
    if state.stock_left < 1:
        raise GameError("out_of_stock", "this campaign has no stock left")
    bargain_id = _new_id(state, rng)
    seed = rng.getrandbits(64)
    product = campaign.product
    first = draw_first_cut(seed, product.list_price - product.floor_price,
                           campaign.helpers_to_floor, campaign.first_cut)
    return [BargainStarted(
        bargain=bargain_id, seq=1, at=now, initiator=command.user,
        list_price=product.list_price, floor_price=product.floor_price,
        helpers_to_floor=campaign.helpers_to_floor, seed=seed,
        expires_at=min(now + campaign.time_limit_ms, campaign.ends_at), first_cut=first,
        price=product.list_price - first,
    )]


def _find(state: BargainState, bargain_id: str) -> Bargain:
    bargain = state.bargains.get(bargain_id)
    if bargain is None:
        raise GameError("not_found",
                        f"no bargain {bargain_id} in campaign {state.campaign.id}")
    return bargain


def _decide_help(state: BargainState, command: HelpBargain, now: int) -> list[Event]:
    campaign = state.campaign
    bargain = _find(state, command.bargain)
    user = command.user
    if user == bargain.initiator:
        raise GameError("own_bargain", "you cannot help your own bargain")
    if bargain.helped_by(user):
        raise GameError("already_helped", "you already helped this bargain")
    if bargain.status is not BargainStatus.OPEN or now >= bargain.expires_at \
            or bargain.buying() is not None:
        raise GameError("bargain_closed", "this bargain takes no more help")
    if state.helps.get(user, 0) >= campaign.max_helps_per_campaign:
        raise GameError("limit_reached",
                        f"you may help at most {campaign.max_helps_per_campaign} times here")
    if state.helps_day.get((user, local_day(now, campaign.zone)), 0) \
            >= campaign.max_helps_per_day:
        raise GameError("limit_reached",
                        f"you may help at most {campaign.max_helps_per_day} times a day here")
    left = bargain.helpers_left
    share = campaign.newcomer_cut if command.newcomer else None
    cut = draw_cut(bargain.seed, len(bargain.helpers) + 1, bargain.price - bargain.floor_price,
                   left, share)
    seq = bargain.version + 1
    events: list[Event] = [BargainHelped(
        bargain=bargain.id, seq=seq, at=now, helper=user, cut=cut, price=bargain.price - cut,
        newcomer=command.newcomer,
    )]
    if left == 1:  # the last helper took the remainder: the price is the floor
        held = state.stock_left >= 1
        events.append(FloorReached(
            bargain=bargain.id, seq=seq + 1, at=now,
            hold_until=now + campaign.pay_within_ms if held else None, held=held,
        ))
    return events


def _decide_buy(state: BargainState, command: BuyBargain, now: int) -> list[Event]:
    bargain = _find(state, command.bargain)
    if command.user != bargain.initiator:
        raise GameError("forbidden", "only the bargain's initiator can buy it")
    if bargain.buying() is not None and bargain.deadline() is not None:
        return []  # a purchase waits for its payment: the answer shows it again
    deadline = bargain.deadline()
    if deadline is None:
        raise GameError("bargain_closed", f"this bargain is {bargain.status.value}")
    if now >= deadline:  # due, its timer not yet run
        raise GameError("bargain_closed", "this bargain has expired")
    if bargain.status is BargainStatus.OPEN and not state.campaign.buy_before_floor:
        raise GameError("floor_not_reached",
                        "this bargain can only be bought once it reaches its floor price")
    if not bargain.held and state.stock_left < 1:
        raise GameError("out_of_stock", "this campaign has no stock left")
    seq = bargain.version + 1
    campaign = state.campaign
    payment = ""
    if campaign.pay_to_buy:
        payment = payments.payment_id(campaign.id, bargain.id, "buy", str(seq))
        return [PurchaseHeld(bargain=bargain.id, seq=seq, at=now, payment=payment,
                             amount=bargain.price,
                             until=min(now + campaign.pay_within_ms, deadline),
                             unit=not bargain.held)]
    return [BargainBought(
        bargain=bargain.id, seq=seq, at=now, buyer=command.user, price=bargain.price,
        sku=campaign.product.sku, payment="",
    )]


def _by_payment(state: BargainState, payment: str
                ) -> tuple[Bargain | None, payments.Hold | None]:
    bargain_id = state.payments.get(payment)
    bargain = None if bargain_id is None else state.bargains.get(bargain_id)
    return bargain, None if bargain is None else bargain.purchase(payment)


def _decide_lapse(state: BargainState, command: ExpireHold, now: int) -> list[Event]:
    bargain, hold = _by_payment(state, command.payment)
    if bargain is None or hold is None or hold.status is not payments.HoldStatus.HELD \
            or now < hold.until:
        return []
    return [PurchaseLapsed(bargain=bargain.id, seq=bargain.version + 1, at=now,
                           payment=hold.payment)]


def _decide_settle(state: BargainState, command: SettlePayment, now: int) -> list[Event]:
    bargain, hold = _by_payment(state, command.payment)
    if bargain is None or hold is None:
        raise GameError("not_found", f"no payment {command.payment} in campaign"
                                     f" {state.campaign.id}")
    if command.outcome not in ("paid", "closed"):
        raise GameError("invalid_request", f"no payment outcome {command.outcome!r}")
    seq = bargain.version + 1
    if command.outcome == "closed":
        if not hold.status.holding:
            return []
        events: list[Event] = [PurchaseReleased(bargain=bargain.id, seq=seq, at=now,
                                                payment=hold.payment)]
        deadline = bargain.deadline()
        if deadline is not None and now >= deadline:
            # The bargain's own time ran out while its purchase was being asked about.
            events.append(BargainExpired(bargain=bargain.id, seq=seq + 1, at=now,
                                         released=bargain.held))
        return events
    if hold.status in (payments.HoldStatus.PAID, payments.HoldStatus.RETURNED):
        return []  # the same word again
    if not hold.status.holding or command.amount != hold.amount:
        return [PaymentReturned(bargain=bargain.id, seq=seq, at=now, payment=hold.payment,
                                amount=command.amount)]
    return [BargainBought(bargain=bargain.id, seq=seq, at=now, buyer=bargain.initiator,
                          price=hold.amount, sku=state.campaign.product.sku,
                          payment=hold.payment)]


def _decide_expire(state: BargainState, command: ExpireBargain, now: int) -> list[Event]:
    bargain = state.bargains.get(command.bargain)
    deadline = None if bargain is None else bargain.deadline()
    if bargain is None or deadline is None or now < deadline:
        return []
    if bargain.buying() is not None:
        return []  # its purchase's word decides first (and expires it, if not paid)
    return [BargainExpired(bargain=bargain.id, seq=bargain.version + 1, at=now,
                           released=bargain.held)]


def _bump(tally: PMap[Any, int], key: Any, delta: int) -> PMap[Any, int]:
    value = tally.get(key, 0) + delta
    return tally.remove(key) if value == 0 else tally.set(key, value)


def evolve(state: BargainState, event: Event) -> BargainState:
    """`state` after `event`. Total: it trusts events, which `decide` made valid."""
    version = state.version + 1
    if isinstance(event, BargainStarted):
        bargain = Bargain(
            id=event.bargain, initiator=event.initiator, list_price=event.list_price,
            floor_price=event.floor_price, price=event.price, seed=event.seed,
            helpers_to_floor=event.helpers_to_floor, created_at=event.at,
            expires_at=event.expires_at, version=event.seq,
        )
        return replace(state, bargains=state.bargains.set(bargain.id, bargain),
                       started=_bump(state.started, event.initiator, 1), version=version)
    bargain = state.bargains[event.bargain]
    stock_left = state.stock_left
    if isinstance(event, BargainHelped):
        bargain = bargain.with_helper((event.helper, event.cut, event.at), event.price,
                                      event.seq)
        day = local_day(event.at, state.campaign.zone)
        return BargainState(state.campaign, state.stock_left,
                            state.bargains.set(bargain.id, bargain), state.started,
                            _bump(state.helps, event.helper, 1),
                            _bump(state.helps_day, (event.helper, day), 1), version,
                            state.payments)
    started = state.started
    pays = state.payments
    if isinstance(event, PurchaseHeld):
        hold = payments.Hold(bargain.initiator, event.payment, event.amount, event.until)
        bargain = replace(bargain, purchases=bargain.purchases + (hold,),
                          purchase_unit=event.unit, version=event.seq)
        return replace(state, bargains=state.bargains.set(bargain.id, bargain),
                       stock_left=stock_left - (1 if event.unit else 0), version=version,
                       payments=pays.set(event.payment, bargain.id))
    if isinstance(event, PurchaseLapsed | PurchaseReleased | PaymentReturned):
        found = bargain.purchase(event.payment)
        assert found is not None
        status = (payments.HoldStatus.CHECKING if isinstance(event, PurchaseLapsed)
                  else payments.HoldStatus.RELEASED if isinstance(event, PurchaseReleased)
                  else payments.HoldStatus.RETURNED)
        if found.status.holding and not status.holding and bargain.purchase_unit:
            stock_left += 1  # the purchase's own unit goes back
        bargain = replace(bargain, purchases=tuple(
            h.becomes(status) if h.payment == event.payment else h
            for h in bargain.purchases), version=event.seq)
        return replace(state, bargains=state.bargains.set(bargain.id, bargain),
                       stock_left=stock_left, version=version)
    if isinstance(event, FloorReached):
        bargain = replace(bargain, status=BargainStatus.FLOOR_REACHED,
                          hold_until=event.hold_until, version=event.seq)
        stock_left -= 1 if event.held else 0
    elif isinstance(event, BargainBought):
        # A held unit (the floor's, or the purchase's own) becomes the sold one;
        # otherwise the purchase takes a unit now.
        paying = bargain.purchase(event.payment) if event.payment else None
        purchases = bargain.purchases
        if paying is not None:
            purchases = tuple(h.becomes(payments.HoldStatus.PAID)
                              if h.payment == event.payment else h for h in purchases)
        elif event.payment:  # paid within the command
            purchases += (payments.Hold(bargain.initiator, event.payment, event.price,
                                        event.at, payments.HoldStatus.PAID),)
            pays = pays.set(event.payment, bargain.id)
        took = bargain.held or (paying is not None and paying.status.holding
                                and bargain.purchase_unit)
        stock_left -= 0 if took else 1
        bargain = replace(bargain, status=BargainStatus.BOUGHT, price=event.price,
                          version=event.seq, purchases=purchases)
    else:  # BargainExpired
        stock_left += 1 if event.released else 0
        started = _bump(started, bargain.initiator, -1)
        bargain = replace(bargain, status=BargainStatus.EXPIRED, version=event.seq)
    return replace(state, bargains=state.bargains.set(bargain.id, bargain),
                   stock_left=stock_left, started=started, version=version, payments=pays)


def apply(state: BargainState, command: Command, now: int, rng: random.Random
          ) -> tuple[BargainState, list[Event]]:
    """Decide, then evolve: the new state and the events that led to it."""
    events = decide(state, command, now, rng)
    return fold(state, events), events


def fold(state: BargainState, events: Sequence[Event]) -> BargainState:
    """`state` after all of `events`, in order."""
    for event in events:
        state = evolve(state, event)
    return state


# --- views and read-model rows --------------------------------------------------------


def bargain_view(campaign: str, bargain: Bargain) -> dict[str, Any]:
    """The contract's bargain object `B`: its summary plus `helpers`, in order."""
    view = bargain_summary(campaign, bargain)
    view["helpers"] = [_helper_view(helper) for helper in bargain.helpers]
    return view


def bargain_text(campaign: str, bargain: Bargain) -> str:
    """`bargain_view` as JSON text, its helper list spliced from `Bargain.rendered`."""
    summary = compact(bargain_summary(campaign, bargain))
    return f'{summary[:-1]},"helpers":{bargain.rendered[1]}}}'


def _helper_view(helper: Helper) -> dict[str, Any]:
    user, cut, at = helper
    return {"user": user, "cut": cut, "at": iso(at)}


def bargain_summary(campaign: str, bargain: Bargain) -> dict[str, Any]:
    """`B` without its helper list: what a live frame carries, so a frame's size does not
    grow with the bargain (100 helps send each watcher O(n) bytes, not O(n²)). A watcher
    keeps the list from its snapshot, appending each `bargain_helped`'s helper, cut and
    time."""
    return {
        "id": bargain.id,
        "campaign": campaign,
        "status": bargain.status.value,
        "initiator": bargain.initiator,
        "list_price": bargain.list_price,
        "floor_price": bargain.floor_price,
        "price": bargain.price,
        "helpers_to_floor": bargain.helpers_to_floor,
        "helpers_left": bargain.helpers_left,
        "created_at": iso(bargain.created_at),
        "expires_at": iso(bargain.expires_at),
        "hold_until": None if bargain.hold_until is None else iso(bargain.hold_until),
        "payment": bargain.purchases[-1].view() if bargain.purchases else None,
        "seq": bargain.version,
    }


def bargain_row(campaign: str, bargain: Bargain) -> tuple[Any, ...]:
    """The read-model row of `bargain`, in `READ_MODEL` column order: times as epoch ms,
    the seed as decimal text, helpers as their (user, cut, at_ms) tuples, which encode as
    JSON arrays (the tuple itself: a row is made on every help, and copying up to 100
    helpers each time was a visible share of the owner's work)."""
    return (
        campaign, bargain.id, bargain.status.value, bargain.initiator, bargain.list_price,
        bargain.floor_price, bargain.price, str(bargain.seed),
        bargain.helpers, bargain.created_at,
        bargain.expires_at, bargain.hold_until, bargain.version, bargain.helpers_to_floor,
        [hold.row() for hold in bargain.purchases], bargain.purchase_unit,
    )


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(value: Any) -> int:
    # Rows carry epoch ms; a driver handing back datetimes is read exactly too.
    if isinstance(value, datetime):
        return (value - _EPOCH) // timedelta(milliseconds=1)
    return int(value)


def bargain_from_row(row: Mapping[str, Any]) -> Bargain:
    """The bargain a read-model row holds (the inverse of `bargain_row`)."""
    hold = row["hold_until"]
    return Bargain(
        id=row["id"], initiator=row["initiator"], list_price=int(row["list_price"]),
        floor_price=int(row["floor_price"]), price=int(row["price"]), seed=int(row["seed"]),
        helpers_to_floor=int(row["helpers_to_floor"]), created_at=_ms(row["created_at"]),
        expires_at=_ms(row["expires_at"]),
        helpers=tuple((str(user), int(cut), _ms(at)) for user, cut, at in row["helpers"]),
        status=BargainStatus(row["status"]), hold_until=None if hold is None else _ms(hold),
        version=int(row["version"]),
        purchases=tuple(payments.Hold.from_row(p) for p in row.get("purchases") or ()),
        purchase_unit=bool(row.get("purchase_unit") or False),
    )


def state_from_bargains(campaign: BargainCampaign, bargains: Iterable[Bargain], version: int
                        ) -> BargainState:
    """The state whose bargains are `bargains`: stock and tallies follow from them.

    An owner restarts from its stored bargains (a snapshot kept current in the same
    transaction as the events) instead of replaying every event since the campaign began.
    """
    zone = campaign.zone
    by_id: dict[str, Bargain] = {}
    started: dict[str, int] = {}
    helps: dict[str, int] = {}
    helps_day: dict[tuple[str, int], int] = {}
    taken = 0
    pays: dict[str, str] = {}
    for bargain in bargains:
        by_id[bargain.id] = bargain
        for purchase in bargain.purchases:
            pays[purchase.payment] = bargain.id
        if bargain.held or bargain.status is BargainStatus.BOUGHT:
            taken += 1
        elif bargain.buying() is not None and bargain.purchase_unit:
            taken += 1
        if bargain.status is not BargainStatus.EXPIRED:
            started[bargain.initiator] = started.get(bargain.initiator, 0) + 1
        for user, _, at in bargain.helpers:
            helps[user] = helps.get(user, 0) + 1
            key = (user, local_day(at, zone))
            helps_day[key] = helps_day.get(key, 0) + 1
    return BargainState(
        campaign=campaign, stock_left=campaign.stock - taken, bargains=PMap(by_id),
        started=PMap(started), helps=PMap(helps), helps_day=PMap(helps_day),
        version=version, payments=PMap(pays),
    )
