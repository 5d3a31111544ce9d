"""Group-buy (拼团) rules as a reducer.

The consistency boundary is the campaign, not the group: stock and per-user limits span
all of a campaign's groups, so one state holds them all and one actor owns it.

`decide` checks a command against the state and returns events (or raises GameError);
`evolve` folds one event into the state. `apply` is both. Rebuilding an actor is folding
its stored events with `evolve`, so events carry everything the fold needs.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from fractions import Fraction
from typing import Any

from games import payments
from games.campaign import GroupBuyCampaign, iso
from games.errors import GameError
from games.pmap import PMap


class GroupStatus(StrEnum):
    """A group's life: open until full (completed) or past its deadline (failed)."""

    OPEN = "open"
    COMPLETED = "completed"
    FAILED = "failed"


# A seat paid for (or being paid for) in a group of a campaign that takes payment.
Seat = payments.Hold
SeatStatus = payments.HoldStatus


@dataclass(frozen=True)
class Group:
    """One group. `version` counts its events: it is the seq of its live topic.

    `members` are its paid (or, in a campaign without payment, joined) members, leader
    first; `seats` every payment made for a place in it, in the order they were held.
    """

    id: str
    leader: str
    members: tuple[str, ...]
    size: int
    price: int
    created_at: int
    expires_at: int
    status: GroupStatus = GroupStatus.OPEN
    virtual: int = 0
    version: int = 0
    seats: tuple[Seat, ...] = ()

    def holding(self) -> tuple[Seat, ...]:
        """The seats taking a place unpaid."""
        return tuple(seat for seat in self.seats if seat.status.holding)

    def seat(self, payment: str) -> Seat | None:
        """The seat of `payment`, if it is this group's."""
        for seat in self.seats:
            if seat.payment == payment:
                return seat
        return None

    def seat_of(self, user: str) -> Seat | None:
        """`user`'s seat still holding a place, if any."""
        for seat in self.seats:
            if seat.user == user and seat.status.holding:
                return seat
        return None

    def places_taken(self) -> int:
        """Members, seats held for payment and virtual members."""
        return len(self.members) + len(self.holding()) + self.virtual


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenGroup:
    """`user` opens a new group and leads it. In a campaign that takes payment the seat
    is held until paid (or until its hold ends), by `payment` when the server names it,
    else by an id derived from the seat. With `paid`, the amount the provider's verified
    notification says its payer paid for the named payment (a provider paying at once:
    see games.core.Method.prepaid), the seat is taken and paid at once."""

    user: str
    payment: str = ""
    paid: int = 0


@dataclass(frozen=True)
class JoinGroup:
    """`user` joins `group` (a seat held until paid: see OpenGroup)."""

    user: str
    group: str
    payment: str = ""
    paid: int = 0


@dataclass(frozen=True)
class ExpireGroup:
    """The deadline timer of `group` fired (a no-op unless it is open and due)."""

    group: str


# The payment step's commands, shared by every game that holds something until paid.
ExpireHold = payments.ExpireHold
SettlePayment = payments.SettlePayment

Command = OpenGroup | JoinGroup | ExpireGroup | ExpireHold | SettlePayment

HOLD_KEY = payments.HOLD_KEY  # a hold's deadline key (a group's key is its id)


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupOpened:
    """A group opens. With a `payment`, the leader's seat is held for it until
    `hold_until` (and the group takes no joins until the leader has paid); without one,
    the leader is its first member at once."""

    group: str
    seq: int
    leader: str
    size: int
    price: int
    at: int
    expires_at: int
    payment: str = ""
    hold_until: int = 0
    # The leader paid within the open (the provider's verified word came with it), a
    # member at once.
    paid: bool = False
    type: str = "group_opened"


@dataclass(frozen=True)
class SeatHeld:
    """A place is held for `user` until `until`, for `payment` of `amount` fen."""

    group: str
    seq: int
    user: str
    payment: str
    amount: int
    until: int
    at: int
    type: str = "seat_held"


@dataclass(frozen=True)
class MemberJoined:
    """`user` is a member: paid for (`payment`: a held seat paid, or a seat paid within
    the join), or joined in a campaign without payment."""

    group: str
    seq: int
    user: str
    at: int
    payment: str = ""
    type: str = "member_joined"


@dataclass(frozen=True)
class HoldLapsed:
    """The hold of `payment` ended unpaid: the provider is asked before the seat goes."""

    group: str
    seq: int
    user: str
    payment: str
    amount: int
    at: int
    type: str = "hold_lapsed"


@dataclass(frozen=True)
class SeatReleased:
    """`payment` was not paid: its seat and its unit of stock go back. `ask`: released
    without the provider's word (its group's time ran out first), so the provider is
    asked now, and money it took after all goes back."""

    group: str
    seq: int
    user: str
    payment: str
    at: int
    ask: bool = False
    type: str = "seat_released"


@dataclass(frozen=True)
class PaymentReturned:
    """`payment` was paid when its seat was gone (released, or the group closed): the
    `amount` taken goes back at once."""

    group: str
    seq: int
    user: str
    payment: str
    amount: int
    at: int
    type: str = "payment_returned"


@dataclass(frozen=True)
class VirtualFilled:
    """At expiry, enough real members joined: the rest are filled virtually (虚拟成团)."""

    group: str
    seq: int
    count: int
    at: int
    type: str = "virtual_filled"


@dataclass(frozen=True)
class GroupCompleted:
    group: str
    seq: int
    at: int
    type: str = "group_completed"


@dataclass(frozen=True)
class DealCompleted:
    """The deal the pipeline turns into orders: every paying (real) member, at `price`."""

    group: str
    seq: int
    campaign: str
    sku: str
    price: int
    members: tuple[str, ...]
    at: int
    type: str = "deal_completed"


@dataclass(frozen=True)
class GroupFailed:
    group: str
    seq: int
    at: int
    type: str = "group_failed"


@dataclass(frozen=True)
class Refunded:
    """A paid member of a failed group gets `amount` fen back (of `payment`, where the
    campaign takes payment)."""

    group: str
    seq: int
    user: str
    amount: int
    at: int
    payment: str = ""
    type: str = "refunded"


Event = (
    GroupOpened | SeatHeld | MemberJoined | HoldLapsed | SeatReleased | PaymentReturned
    | VirtualFilled | GroupCompleted | DealCompleted | GroupFailed | Refunded
)

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        GroupOpened, SeatHeld, MemberJoined, HoldLapsed, SeatReleased, PaymentReturned,
        VirtualFilled, GroupCompleted, DealCompleted, GroupFailed, Refunded,
    )
}

# The deals and refunds of deals the pipeline consumes, written to the outbox in the same
# transaction (with payment in the loop, a paid `member_joined` and a `hold_lapsed` go
# there too: money taken, and a provider to ask).
OUTBOX_TYPES = frozenset({"deal_completed", "refunded"})


def event_to_dict(event: Event) -> dict[str, Any]:
    """Plain JSON-ready data for storage and the wire."""
    # Fields are flat values: a shallow read is enough (dataclasses.asdict deep-copies).
    data = {name: getattr(event, name) for name in event.__dataclass_fields__}
    if isinstance(event, DealCompleted):
        data["members"] = list(event.members)
    return data


def event_from_dict(data: dict[str, Any]) -> Event:
    """The inverse of `event_to_dict`; raises KeyError/TypeError on foreign data."""
    cls = _EVENT_TYPES[data["type"]]
    fields = dict(data)
    if cls is DealCompleted:
        fields["members"] = tuple(fields["members"])
    event: Event = cls(**fields)
    return event


# --- state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupBuyState:
    """All of one campaign: its groups, the stock left and each user's tallies.

    `led` and `joined` count a user's groups that are open or completed (a seat held for
    payment counts); a failed group, or a seat never paid, gives its places back, as it
    gives back its stock. `payments` finds the group of each payment made in the
    campaign (what a provider's word on a payment names).
    """

    campaign: GroupBuyCampaign
    stock_left: int
    groups: PMap[str, Group] = field(default_factory=PMap)
    led: PMap[str, int] = field(default_factory=PMap)
    joined: PMap[str, int] = field(default_factory=PMap)
    version: int = 0
    payments: PMap[str, str] = field(default_factory=PMap)

    def open_groups(self) -> Iterable[Group]:
        """The groups still open, whose deadlines an owner must keep armed."""
        return (g for g in self.groups.values() if g.status is GroupStatus.OPEN)


def initial_state(campaign: GroupBuyCampaign) -> GroupBuyState:
    """A campaign before anything happened."""
    return GroupBuyState(campaign=campaign, stock_left=campaign.stock)


def _new_group_id(state: GroupBuyState, rng: random.Random) -> str:
    while True:
        candidate = f"g{rng.getrandbits(48):012x}"
        if candidate not in state.groups:
            return candidate


def decide(state: GroupBuyState, command: Command, now: int, rng: random.Random) -> list[Event]:
    """The events `command` causes, or GameError when the rules refuse it."""
    campaign = state.campaign
    if isinstance(command, ExpireGroup):
        return _decide_expire(state, command, now)
    if isinstance(command, ExpireHold):
        return _decide_lapse(state, command, now)
    if isinstance(command, SettlePayment):
        return _decide_settle(state, command, now)
    if not campaign.is_active(now):
        raise GameError("campaign_not_active", f"campaign {campaign.id} is not running now")
    if isinstance(command, OpenGroup):
        user = command.user
        if state.led.get(user, 0) >= campaign.max_groups_led:
            raise GameError(
                "limit_reached", f"you may lead at most {campaign.max_groups_led} groups here"
            )
        if state.stock_left < 1:
            raise GameError("out_of_stock", "this campaign has no stock left")
        expires_at = min(now + campaign.time_limit_ms, campaign.ends_at)
        group_id = _new_group_id(state, rng)
        payment, hold_until = "", 0
        if campaign.pay_within_ms is not None:
            payment = _payment(state, command.payment) or payments.payment_id(
                campaign.id, group_id, user, "1")
            hold_until = min(now + campaign.pay_within_ms, expires_at)
        paid = _paid(campaign, command.payment, command.paid, campaign.product.group_price)
        return [
            GroupOpened(
                group=group_id, seq=1, leader=user, size=campaign.group_size,
                price=campaign.product.group_price, at=now, expires_at=expires_at,
                payment=payment, hold_until=now if paid else hold_until, paid=paid,
            )
        ]
    group = state.groups.get(command.group)
    if group is None:
        raise GameError("not_found", f"no group {command.group} in campaign {campaign.id}")
    if command.user in group.members:
        raise GameError("already_member", "you are already in this group")
    if (group.seat_of(command.user) is not None and group.status is GroupStatus.OPEN
            and now < group.expires_at):
        return []  # a seat held for this user already: the answer shows its payment
    if group.status is GroupStatus.COMPLETED or group.places_taken() >= group.size:
        raise GameError("group_full", "this group is already full")
    if group.status is GroupStatus.FAILED or now >= group.expires_at:
        raise GameError("group_closed", "this group has closed")
    if not group.members:
        raise GameError("payment_pending", "this group opens once its leader has paid")
    if state.joined.get(command.user, 0) >= campaign.max_groups_joined:
        raise GameError(
            "limit_reached", f"you may join at most {campaign.max_groups_joined} groups here"
        )
    if state.stock_left < 1:
        raise GameError("out_of_stock", "this campaign has no stock left")
    seq = group.version + 1
    payment = ""
    if campaign.pay_within_ms is not None:
        payment = _payment(state, command.payment) or payments.payment_id(
            campaign.id, group.id, command.user, str(seq))
        if not _paid(campaign, command.payment, command.paid, group.price):
            return [SeatHeld(
                group=group.id, seq=seq, user=command.user, payment=payment,
                amount=group.price,
                until=min(now + campaign.pay_within_ms, group.expires_at), at=now)]
    events: list[Event] = [MemberJoined(group=group.id, seq=seq, user=command.user, at=now,
                                        payment=payment)]
    if len(group.members) + 1 == group.size:
        events += _completion(campaign, group, group.members + (command.user,), seq + 1, now)
    return events


def _payment(state: GroupBuyState, named: str) -> str:
    """A payment id the server named for a seat ("" if none): one of this campaign's ids,
    never one a seat holds already."""
    if not named:
        return ""
    if payments.campaign_of(named, [state.campaign.id]) is None or named in state.payments:
        raise GameError("invalid_request", "that payment cannot hold a seat here")
    return named


def _paid(campaign: GroupBuyCampaign, named: str, amount: int, price: int) -> bool:
    """Whether a command comes paid: the provider's verified word that its named payment
    was paid `amount` (0: no word), which must be the seat's `price` (its group's)."""
    if not amount:
        return False
    if not named or campaign.pay_within_ms is None:
        raise GameError("invalid_request", "a payment's word needs the payment it is for")
    if amount != price:
        raise GameError("invalid_request",
                        f"{amount} fen was paid, the group price is {price}")
    return True


def _decide_lapse(state: GroupBuyState, command: ExpireHold, now: int) -> list[Event]:
    group, seat = _seat(state, command.payment)
    if group is None or seat is None or seat.status is not SeatStatus.HELD or now < seat.until:
        return []
    return [HoldLapsed(group=group.id, seq=group.version + 1, user=seat.user,
                       payment=seat.payment, amount=seat.amount, at=now)]


def _decide_settle(state: GroupBuyState, command: SettlePayment, now: int) -> list[Event]:
    group, seat = _seat(state, command.payment)
    if group is None or seat is None:
        raise GameError("not_found", f"no payment {command.payment} in campaign"
                                     f" {state.campaign.id}")
    if command.outcome not in ("paid", "closed"):
        raise GameError("invalid_request", f"no payment outcome {command.outcome!r}")
    seq = group.version + 1
    if command.outcome == "closed":
        if not seat.status.holding:
            return []  # paid, or released already: a late or repeated word changes nothing
        if seat.user == group.leader and not group.members:
            # The leader never paid: the group never opened to others. It fails, and
            # gives back what it held (no one paid, so no one is refunded).
            return [GroupFailed(group=group.id, seq=seq, at=now)]
        return [SeatReleased(group=group.id, seq=seq, user=seat.user, payment=seat.payment,
                             at=now)]
    if seat.status in (SeatStatus.PAID, SeatStatus.RETURNED, SeatStatus.REFUNDED):
        return []  # the same payment again (a redelivered notification)
    if (not seat.status.holding or group.status is not GroupStatus.OPEN
            or command.amount != seat.amount):
        # Money for a seat that is gone (or not the amount it was held for): it goes back
        # at once, all of what was taken, and the seat (if still held) with it.
        returned: list[Event] = [PaymentReturned(group=group.id, seq=seq, user=seat.user,
                                                 payment=seat.payment, amount=command.amount,
                                                 at=now)]
        if seat.status.holding and seat.user == group.leader and not group.members:
            # The leader's own seat gone unpaid: the group never opened to others.
            returned.append(GroupFailed(group=group.id, seq=seq + 1, at=now))
        return returned
    events: list[Event] = [MemberJoined(group=group.id, seq=seq, user=seat.user, at=now,
                                        payment=seat.payment)]
    if len(group.members) + 1 == group.size:
        events += _completion(state.campaign, group, group.members + (seat.user,), seq + 1,
                              now)
    return events


def _seat(state: GroupBuyState, payment: str) -> tuple[Group | None, Seat | None]:
    group_id = state.payments.get(payment)
    group = None if group_id is None else state.groups.get(group_id)
    return group, None if group is None else group.seat(payment)


def _completion(
    campaign: GroupBuyCampaign, group: Group, members: tuple[str, ...], seq: int, now: int
) -> list[Event]:
    return [
        GroupCompleted(group=group.id, seq=seq, at=now),
        DealCompleted(
            group=group.id, seq=seq + 1, campaign=campaign.id, sku=campaign.product.sku,
            price=group.price, members=members, at=now,
        ),
    ]


def _decide_expire(state: GroupBuyState, command: ExpireGroup, now: int) -> list[Event]:
    group = state.groups.get(command.group)
    if group is None or group.status is not GroupStatus.OPEN or now < group.expires_at:
        return []
    ratio = state.campaign.virtual_fill_ratio
    seq = group.version + 1
    # Exact arithmetic: 0.28 * 25 is 7.000000000000001 in floats, and 7 of 25 must count.
    if ratio is not None and group.members and len(group.members) >= _share(ratio) * group.size:
        # Seats still unpaid at the deadline go back; paid members complete the deal.
        events: list[Event] = []
        for seat in group.holding():
            events.append(SeatReleased(group=group.id, seq=seq, user=seat.user,
                                       payment=seat.payment, at=now,
                                       ask=seat.status is SeatStatus.HELD))
            seq += 1
        missing = group.size - len(group.members)
        return [
            *events,
            VirtualFilled(group=group.id, seq=seq, count=missing, at=now),
            *_completion(state.campaign, group, group.members, seq + 1, now),
        ]
    # Seats still held go back first, each asked about (money the provider took for one
    # after all goes back); then the group fails and refunds its paid members.
    events = []
    for seat in group.holding():
        events.append(SeatReleased(group=group.id, seq=seq, user=seat.user,
                                   payment=seat.payment, at=now,
                                   ask=seat.status is SeatStatus.HELD))
        seq += 1
    events.append(GroupFailed(group=group.id, seq=seq, at=now))
    paid = {seat.user: seat.payment for seat in group.seats if seat.status is SeatStatus.PAID}
    for offset, member in enumerate(group.members, start=1):
        events.append(
            Refunded(group=group.id, seq=seq + offset, user=member, amount=group.price, at=now,
                     payment=paid.get(member, ""))
        )
    return events


def _bump(tally: PMap[str, int], user: str, delta: int) -> PMap[str, int]:
    value = tally.get(user, 0) + delta
    return tally.remove(user) if value == 0 else tally.set(user, value)


def _regroup(g: Group, version: int, *, members: tuple[str, ...] | None = None,
             status: GroupStatus | None = None, virtual: int | None = None,
             seats: tuple[Seat, ...] | None = None) -> Group:
    # A direct constructor call: dataclasses.replace inspects the fields on every call,
    # and evolve runs once per event on the owner's hot path.
    return Group(g.id, g.leader, g.members if members is None else members, g.size, g.price,
                 g.created_at, g.expires_at, g.status if status is None else status,
                 g.virtual if virtual is None else virtual, version,
                 g.seats if seats is None else seats)


def _reseat(seats: tuple[Seat, ...], payment: str, status: SeatStatus) -> tuple[Seat, ...]:
    return tuple(s.becomes(status) if s.payment == payment else s for s in seats)


def _give_back(led: PMap[str, int], joined: PMap[str, int], group: Group, user: str
               ) -> tuple[PMap[str, int], PMap[str, int]]:
    """The tallies with `user`'s place in `group` given back."""
    if user == group.leader:
        return _bump(led, user, -1), joined
    return led, _bump(joined, user, -1)


def evolve(state: GroupBuyState, event: Event) -> GroupBuyState:
    """`state` after `event`. Total: it trusts events, which `decide` made valid."""
    version = state.version + 1
    campaign, groups, led, joined = state.campaign, state.groups, state.led, state.joined
    stock_left, pays = state.stock_left, state.payments
    if isinstance(event, GroupOpened):
        if event.payment:
            seat = Seat(event.leader, event.payment, event.price, event.hold_until,
                        SeatStatus.PAID if event.paid else SeatStatus.HELD)
            group = Group(event.group, event.leader, (event.leader,) if event.paid else (),
                          event.size, event.price, event.at, event.expires_at,
                          GroupStatus.OPEN, 0, event.seq, (seat,))
            pays = pays.set(event.payment, event.group)
        else:
            group = Group(event.group, event.leader, (event.leader,), event.size, event.price,
                          event.at, event.expires_at, GroupStatus.OPEN, 0, event.seq)
        return GroupBuyState(campaign, stock_left - 1, groups.set(group.id, group),
                             _bump(led, event.leader, 1), joined, version, pays)
    group = groups[event.group]
    if isinstance(event, MemberJoined):
        if event.payment and group.seat(event.payment) is not None:
            # A held seat paid: its place and stock were taken when it was held.
            group = _regroup(group, event.seq, members=group.members + (event.user,),
                             seats=_reseat(group.seats, event.payment, SeatStatus.PAID))
            return GroupBuyState(campaign, stock_left, groups.set(group.id, group), led,
                                 joined, version, pays)
        seats = group.seats
        if event.payment:  # paid within the join
            seats += (Seat(event.user, event.payment, group.price, event.at, SeatStatus.PAID),)
            pays = pays.set(event.payment, event.group)
        group = _regroup(group, event.seq, members=group.members + (event.user,), seats=seats)
        return GroupBuyState(campaign, stock_left - 1, groups.set(group.id, group), led,
                             _bump(joined, event.user, 1), version, pays)
    if isinstance(event, SeatHeld):
        group = _regroup(group, event.seq, seats=group.seats + (
            Seat(event.user, event.payment, event.amount, event.until),))
        return GroupBuyState(campaign, stock_left - 1, groups.set(group.id, group), led,
                             _bump(joined, event.user, 1), version,
                             pays.set(event.payment, event.group))
    if isinstance(event, HoldLapsed):
        group = _regroup(group, event.seq,
                         seats=_reseat(group.seats, event.payment, SeatStatus.CHECKING))
    elif isinstance(event, SeatReleased | PaymentReturned):
        gone = group.seat(event.payment)
        assert gone is not None
        if gone.status.holding:
            stock_left += 1
            led, joined = _give_back(led, joined, group, gone.user)
        status = (SeatStatus.RELEASED if isinstance(event, SeatReleased)
                  else SeatStatus.RETURNED)
        group = _regroup(group, event.seq, seats=_reseat(group.seats, event.payment, status))
    elif isinstance(event, VirtualFilled):
        group = _regroup(group, event.seq, virtual=event.count)
    elif isinstance(event, GroupCompleted):
        group = _regroup(group, event.seq, status=GroupStatus.COMPLETED)
    elif isinstance(event, GroupFailed):
        # The failure gives back every member's and every held seat's stock and limit
        # places at once; seats still unpaid are released.
        holding = group.holding()
        for user in (*group.members, *(seat.user for seat in holding)):
            led, joined = _give_back(led, joined, group, user)
        stock_left += len(group.members) + len(holding)
        seats = tuple(s.becomes(SeatStatus.RELEASED) if s.status.holding else s
                      for s in group.seats)
        group = _regroup(group, event.seq, status=GroupStatus.FAILED, seats=seats)
    elif isinstance(event, Refunded) and event.payment:
        group = _regroup(group, event.seq,
                         seats=_reseat(group.seats, event.payment, SeatStatus.REFUNDED))
    else:  # DealCompleted, Refunded without payment
        group = _regroup(group, event.seq)
    return GroupBuyState(campaign, stock_left, groups.set(group.id, group), led, joined,
                         version, pays)


def apply(
    state: GroupBuyState, command: Command, now: int, rng: random.Random
) -> tuple[GroupBuyState, list[Event]]:
    """Decide, then evolve: the new state and the events that led to it."""
    events = decide(state, command, now, rng)
    return fold(state, events), events


def fold(state: GroupBuyState, events: Sequence[Event]) -> GroupBuyState:
    """`state` after all of `events`, in order."""
    for event in events:
        state = evolve(state, event)
    return state


def group_view(campaign: str, group: Group) -> dict[str, Any]:
    """The contract's group object `G`: its summary plus `members` (paid members, leader
    first) and `held` (seats held for a payment, apart)."""
    view = group_summary(campaign, group)
    view["members"] = list(group.members)
    view["held"] = [{"user": seat.user, "expires_at": iso(seat.until)}
                    for seat in group.holding()]
    return view


def group_summary(campaign: str, group: Group) -> dict[str, Any]:
    """`G` without its member list; `joined` counts its real members, `holding` the seats
    held for payment.

    What a live frame carries: a frame's size does not grow with the group, so a group
    filled by n joins sends O(n) bytes to each watcher rather than O(n²). A watcher keeps
    the member list from its snapshot, appending each `member_joined`'s `user`.
    """
    return {
        "id": group.id,
        "campaign": campaign,
        "status": group.status.value,
        "size": group.size,
        "joined": len(group.members),
        "holding": sum(1 for seat in group.seats if seat.status.holding),
        "virtual_members": group.virtual,
        "price": group.price,
        "created_at": iso(group.created_at),
        "expires_at": iso(group.expires_at),
        "seq": group.version,
    }


def payment_view(seat: Seat) -> dict[str, object]:
    """The answer's `P` for `seat`'s payment."""
    return seat.view()


def _share(ratio: float) -> Fraction:
    """A configured share as an exact fraction (config ratios have at most 3 decimals)."""
    return Fraction(ratio).limit_denominator(1000)


def state_from_groups(
    campaign: GroupBuyCampaign, groups: Iterable[Group], version: int
) -> GroupBuyState:
    """The state whose groups are `groups`: stock and tallies follow from them.

    An owner restarts from its stored groups (a snapshot kept current in the same
    transaction as the events) instead of replaying every event since the campaign began.
    """
    stock_left = campaign.stock
    by_id: dict[str, Group] = {}
    led: dict[str, int] = {}
    joined: dict[str, int] = {}
    pays: dict[str, str] = {}
    for group in groups:
        by_id[group.id] = group
        for seat in group.seats:
            pays[seat.payment] = group.id
        if group.status is GroupStatus.FAILED:
            continue  # a failure gave back its stock and its members' places
        holding = [seat.user for seat in group.seats if seat.status.holding]
        stock_left -= len(group.members) + len(holding)
        led[group.leader] = led.get(group.leader, 0) + 1
        for member in (*group.members, *holding):
            if member != group.leader:
                joined[member] = joined.get(member, 0) + 1
    return GroupBuyState(
        campaign=campaign, stock_left=stock_left, groups=PMap(by_id), led=PMap(led),
        joined=PMap(joined), version=version, payments=PMap(pays),
    )
