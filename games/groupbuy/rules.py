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

from games.campaign import GroupBuyCampaign, iso
from games.errors import GameError
from games.pmap import PMap


class GroupStatus(StrEnum):
    """A group's life: open until full (completed) or past its deadline (failed)."""

    OPEN = "open"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class Group:
    """One group. `version` counts its events: it is the seq of its live topic."""

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


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenGroup:
    """`user` opens a new group and leads it."""

    user: str


@dataclass(frozen=True)
class JoinGroup:
    """`user` joins `group`."""

    user: str
    group: str


@dataclass(frozen=True)
class ExpireGroup:
    """The deadline timer of `group` fired (a no-op unless it is open and due)."""

    group: str


Command = OpenGroup | JoinGroup | ExpireGroup


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupOpened:
    group: str
    seq: int
    leader: str
    size: int
    price: int
    at: int
    expires_at: int
    type: str = "group_opened"


@dataclass(frozen=True)
class MemberJoined:
    group: str
    seq: int
    user: str
    at: int
    type: str = "member_joined"


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
    """A paid member of a failed group gets `amount` fen back."""

    group: str
    seq: int
    user: str
    amount: int
    at: int
    type: str = "refunded"


Event = (
    GroupOpened | MemberJoined | VirtualFilled | GroupCompleted | DealCompleted | GroupFailed
    | Refunded
)

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.type: cls
    for cls in (
        GroupOpened, MemberJoined, VirtualFilled, GroupCompleted, DealCompleted, GroupFailed,
        Refunded,
    )
}

# Events the pipeline consumes, written to the outbox in the same transaction.
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

    `led` and `joined` count a user's groups that are open or completed; a failed group
    gives its places back, as it gives back its stock.
    """

    campaign: GroupBuyCampaign
    stock_left: int
    groups: PMap[str, Group] = field(default_factory=PMap)
    led: PMap[str, int] = field(default_factory=PMap)
    joined: PMap[str, int] = field(default_factory=PMap)
    version: int = 0

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
        return [
            GroupOpened(
                group=_new_group_id(state, rng), seq=1, leader=user, size=campaign.group_size,
                price=campaign.product.group_price, at=now, expires_at=expires_at,
            )
        ]
    group = state.groups.get(command.group)
    if group is None:
        raise GameError("not_found", f"no group {command.group} in campaign {campaign.id}")
    if command.user in group.members:
        raise GameError("already_member", "you are already in this group")
    if group.status is GroupStatus.COMPLETED or len(group.members) + group.virtual >= group.size:
        raise GameError("group_full", "this group is already full")
    if group.status is GroupStatus.FAILED or now >= group.expires_at:
        raise GameError("group_closed", "this group has closed")
    if state.joined.get(command.user, 0) >= campaign.max_groups_joined:
        raise GameError(
            "limit_reached", f"you may join at most {campaign.max_groups_joined} groups here"
        )
    if state.stock_left < 1:
        raise GameError("out_of_stock", "this campaign has no stock left")
    events: list[Event] = [
        MemberJoined(group=group.id, seq=group.version + 1, user=command.user, at=now)
    ]
    if len(group.members) + 1 == group.size:
        events += _completion(campaign, group, group.members + (command.user,), group.version + 2,
                              now)
    return events


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
    if ratio is not None and len(group.members) >= _share(ratio) * group.size:
        missing = group.size - len(group.members)
        return [
            VirtualFilled(group=group.id, seq=seq, count=missing, at=now),
            *_completion(state.campaign, group, group.members, seq + 1, now),
        ]
    events: list[Event] = [GroupFailed(group=group.id, seq=seq, at=now)]
    for offset, member in enumerate(group.members, start=1):
        events.append(
            Refunded(group=group.id, seq=seq + offset, user=member, amount=group.price, at=now)
        )
    return events


def _bump(tally: PMap[str, int], user: str, delta: int) -> PMap[str, int]:
    value = tally.get(user, 0) + delta
    return tally.remove(user) if value == 0 else tally.set(user, value)


def _regroup(g: Group, version: int, *, members: tuple[str, ...] | None = None,
             status: GroupStatus | None = None, virtual: int | None = None) -> Group:
    # A direct constructor call: dataclasses.replace inspects the fields on every call,
    # and evolve runs once per event on the owner's hot path.
    return Group(g.id, g.leader, g.members if members is None else members, g.size, g.price,
                 g.created_at, g.expires_at, g.status if status is None else status,
                 g.virtual if virtual is None else virtual, version)


def evolve(state: GroupBuyState, event: Event) -> GroupBuyState:
    """`state` after `event`. Total: it trusts events, which `decide` made valid."""
    version = state.version + 1
    campaign, groups, led, joined = state.campaign, state.groups, state.led, state.joined
    stock_left = state.stock_left
    if isinstance(event, GroupOpened):
        group = Group(event.group, event.leader, (event.leader,), event.size, event.price,
                      event.at, event.expires_at, GroupStatus.OPEN, 0, event.seq)
        return GroupBuyState(campaign, stock_left - 1, groups.set(group.id, group),
                             _bump(led, event.leader, 1), joined, version)
    group = groups[event.group]
    if isinstance(event, MemberJoined):
        group = _regroup(group, event.seq, members=group.members + (event.user,))
        return GroupBuyState(campaign, stock_left - 1, groups.set(group.id, group), led,
                             _bump(joined, event.user, 1), version)
    if isinstance(event, VirtualFilled):
        group = _regroup(group, event.seq, virtual=event.count)
    elif isinstance(event, GroupCompleted):
        group = _regroup(group, event.seq, status=GroupStatus.COMPLETED)
    elif isinstance(event, GroupFailed):
        # The failure gives back every member's stock and limit places at once.
        led = _bump(led, group.leader, -1)
        for member in group.members[1:]:
            joined = _bump(joined, member, -1)
        group = _regroup(group, event.seq, status=GroupStatus.FAILED)
        stock_left += len(group.members)
    else:  # DealCompleted, Refunded
        group = _regroup(group, event.seq)
    return GroupBuyState(campaign, stock_left, groups.set(group.id, group), led, joined,
                         version)


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
    """The contract's group object `G`: its summary plus `members` (leader first)."""
    view = group_summary(campaign, group)
    view["members"] = list(group.members)
    return view


def group_summary(campaign: str, group: Group) -> dict[str, Any]:
    """`G` without its member list; `joined` counts its real members.

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
        "virtual_members": group.virtual,
        "price": group.price,
        "created_at": iso(group.created_at),
        "expires_at": iso(group.expires_at),
        "seq": group.version,
    }


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
    for group in groups:
        by_id[group.id] = group
        if group.status is GroupStatus.FAILED:
            continue  # a failure gave back its stock and its members' places
        stock_left -= len(group.members)
        led[group.leader] = led.get(group.leader, 0) + 1
        for member in group.members[1:]:
            joined[member] = joined.get(member, 0) + 1
    return GroupBuyState(
        campaign=campaign, stock_left=stock_left, groups=PMap(by_id), led=PMap(led),
        joined=PMap(joined), version=version,
    )
