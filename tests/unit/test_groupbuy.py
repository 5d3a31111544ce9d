"""Unit tests for the group-buy reducer in games/groupbuy.py.

Everything here is pure: campaigns are built in memory, time is an explicit epoch-ms
number and randomness is a seeded random.Random.
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from games.campaign import GroupBuyCampaign, Product, iso
from games.errors import GameError
from games.groupbuy import (
    OUTBOX_TYPES,
    DealCompleted,
    Event,
    ExpireGroup,
    Group,
    GroupBuyState,
    GroupCompleted,
    GroupFailed,
    GroupOpened,
    GroupStatus,
    JoinGroup,
    MemberJoined,
    OpenGroup,
    Refunded,
    VirtualFilled,
    apply,
    decide,
    event_from_dict,
    event_to_dict,
    evolve,
    fold,
    group_summary,
    group_view,
    initial_state,
    state_from_groups,
)
from tests.support.frames import apply_event

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
START = 1_767_196_800_000  # 2026-01-01T00:00:00+08:00
END = START + 10 * DAY
NOW = START + HOUR
LIMIT = 2 * HOUR
PRICE = 12_900
LIST_PRICE = 19_900


def make_campaign(**overrides: object) -> GroupBuyCampaign:
    fields: dict[str, object] = {
        "id": "tea-trio",
        "title": "Tea, 3-person group",
        "starts_at": START,
        "ends_at": END,
        "product": Product(sku="TEA-1", title="Tea", list_price=LIST_PRICE,
                           group_price=PRICE),
        "group_size": 3,
        "time_limit_ms": LIMIT,
        "stock": 100,
        "max_groups_led": 2,
        "max_groups_joined": 2,
        "virtual_fill_ratio": None,
    }
    fields.update(overrides)
    return GroupBuyCampaign(**fields)  # type: ignore[arg-type]


class Game:
    """A campaign's state driven through `apply`, keeping every event emitted."""

    def __init__(self, campaign: GroupBuyCampaign | None = None, seed: int = 0) -> None:
        self.campaign = campaign or make_campaign()
        self.state = initial_state(self.campaign)
        self.rng = random.Random(seed)
        self.log: list[Event] = []

    def do(self, command: OpenGroup | JoinGroup | ExpireGroup, now: int) -> list[Event]:
        self.state, events = apply(self.state, command, now, self.rng)
        self.log.extend(events)
        return events

    def open(self, user: str, now: int = NOW) -> str:
        events = self.do(OpenGroup(user), now)
        assert len(events) == 1 and isinstance(events[0], GroupOpened)
        return events[0].group

    def join(self, user: str, group: str, now: int = NOW) -> list[Event]:
        return self.do(JoinGroup(user, group), now)

    def expire(self, group: str, now: int) -> list[Event]:
        return self.do(ExpireGroup(group), now)

    def group(self, group: str) -> Group:
        return self.state.groups[group]


# --- refusals -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A scenario: `setup` plays a game and returns the refused command and its time."""

    campaign: dict[str, object]
    setup: Callable[[Game], tuple[OpenGroup | JoinGroup, int]]
    code: str


def _open_before_start(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    return OpenGroup("a"), START - 1


def _open_at_end(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    return OpenGroup("a"), END


def _open_after_end(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    return OpenGroup("a"), END + DAY


def _join_at_end(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a", END - MINUTE)
    return JoinGroup("b", gid), END


def _join_after_end(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a", END - MINUTE)
    return JoinGroup("b", gid), END + 1


def _join_unknown_before_start(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    # Activity is checked first, even before the group is looked up.
    return JoinGroup("b", "g-missing"), START - 1


def _lead_limit(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    g.open("a")
    g.open("a")
    return OpenGroup("a"), NOW


def _lead_limit_counts_completed(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    g.join("b", gid)
    g.join("c", gid)
    assert g.group(gid).status is GroupStatus.COMPLETED
    g.open("a")
    return OpenGroup("a"), NOW


def _join_limit(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    g1, g2, g3 = g.open("a"), g.open("b"), g.open("c")
    g.join("z", g1)
    g.join("z", g2)
    return JoinGroup("z", g3), NOW


def _join_limit_counts_completed(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    g1, g2, g3 = g.open("a"), g.open("b"), g.open("c")
    g.join("z", g1)
    g.join("y", g1)  # g1 completes
    g.join("z", g2)
    return JoinGroup("z", g3), NOW


def _out_of_stock_open_zero(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    return OpenGroup("a"), NOW


def _out_of_stock_open(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    g.open("a")
    return OpenGroup("b"), NOW


def _out_of_stock_join(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    g.join("b", gid)
    return JoinGroup("c", gid), NOW


def _not_found(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    g.open("a")
    return JoinGroup("b", "g-missing"), NOW


def _leader_joins_own(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    return JoinGroup("a", gid), NOW


def _double_join(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    g.join("b", gid)
    return JoinGroup("b", gid), NOW


def _join_completed(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    g.join("b", gid)
    g.join("c", gid)
    return JoinGroup("d", gid), NOW


def _member_joins_completed(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    g.join("b", gid)
    g.join("c", gid)
    return JoinGroup("c", gid), NOW


def _join_failed(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    g.expire(gid, NOW + LIMIT)
    assert g.group(gid).status is GroupStatus.FAILED
    # Even a time before the deadline cannot reopen a failed group.
    return JoinGroup("b", gid), NOW + MINUTE


def _join_at_deadline(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    return JoinGroup("b", gid), g.group(gid).expires_at


def _join_after_deadline(g: Game) -> tuple[OpenGroup | JoinGroup, int]:
    gid = g.open("a")
    return JoinGroup("b", gid), g.group(gid).expires_at + 1


REFUSALS: dict[str, Refusal] = {
    "open before start": Refusal({}, _open_before_start, "campaign_not_active"),
    "open at end": Refusal({}, _open_at_end, "campaign_not_active"),
    "open after end": Refusal({}, _open_after_end, "campaign_not_active"),
    "join at end": Refusal({}, _join_at_end, "campaign_not_active"),
    "join after end": Refusal({}, _join_after_end, "campaign_not_active"),
    "join before start": Refusal({}, _join_unknown_before_start, "campaign_not_active"),
    "lead limit": Refusal({}, _lead_limit, "limit_reached"),
    "lead limit counts completed": Refusal({}, _lead_limit_counts_completed, "limit_reached"),
    "join limit": Refusal({}, _join_limit, "limit_reached"),
    "join limit counts completed": Refusal(
        {}, _join_limit_counts_completed, "limit_reached"
    ),
    "open with zero stock": Refusal({"stock": 0}, _out_of_stock_open_zero, "out_of_stock"),
    "open after stock used": Refusal({"stock": 1}, _out_of_stock_open, "out_of_stock"),
    "join after stock used": Refusal({"stock": 2}, _out_of_stock_join, "out_of_stock"),
    "unknown group": Refusal({}, _not_found, "not_found"),
    "leader joins own group": Refusal({}, _leader_joins_own, "already_member"),
    "double join": Refusal({}, _double_join, "already_member"),
    "join completed group": Refusal({}, _join_completed, "group_full"),
    "member re-joins completed group": Refusal({}, _member_joins_completed, "already_member"),
    "join failed group": Refusal({}, _join_failed, "group_closed"),
    "join at deadline before timer": Refusal({}, _join_at_deadline, "group_closed"),
    "join after deadline before timer": Refusal({}, _join_after_deadline, "group_closed"),
}


@pytest.mark.parametrize("case", list(REFUSALS.values()), ids=list(REFUSALS))
def test_refusals(case: Refusal) -> None:
    game = Game(make_campaign(**case.campaign))
    command, now = case.setup(game)
    before = game.state
    with pytest.raises(GameError) as info:
        decide(game.state, command, now, game.rng)
    assert info.value.code == case.code
    assert info.value.to_dict() == {"code": case.code, "message": info.value.message}
    assert info.value.message
    # apply refuses the same way and the (immutable) state is untouched.
    with pytest.raises(GameError) as again:
        apply(game.state, command, now, game.rng)
    assert again.value.code == case.code
    assert game.state is before


def test_expire_is_never_refused_outside_the_campaign() -> None:
    game = Game()
    gid = game.open("a", END - MINUTE)
    assert decide(game.state, ExpireGroup("g-missing"), END + DAY, game.rng) == []
    events = game.expire(gid, END + DAY)
    assert [type(e) for e in events] == [GroupFailed, Refunded]


def test_limits_are_per_campaign_user_not_global() -> None:
    game = Game()
    game.open("a")
    game.open("a")
    # Another user is unaffected by a's lead limit, and a may still join others' groups.
    gid = game.open("b")
    game.join("a", gid)
    assert game.state.led == {"a": 2, "b": 1}
    assert game.state.joined == {"a": 1}


# --- opening --------------------------------------------------------------------------------


def test_open_group_event_and_state() -> None:
    game = Game()
    events = game.do(OpenGroup("alice"), NOW)
    assert len(events) == 1
    opened = events[0]
    assert isinstance(opened, GroupOpened)
    assert (opened.seq, opened.leader, opened.size, opened.price, opened.at) == (
        1, "alice", 3, PRICE, NOW
    )
    assert opened.expires_at == NOW + LIMIT
    group = game.group(opened.group)
    assert group.leader == "alice"
    assert group.members == ("alice",)
    assert group.status is GroupStatus.OPEN
    assert group.version == 1
    assert group.virtual == 0
    assert group.created_at == NOW
    assert game.state.stock_left == 99
    assert game.state.led == {"alice": 1}
    assert dict(game.state.joined) == {}
    assert game.state.version == 1
    assert list(game.state.open_groups()) == [group]


def test_group_ids_are_unique_and_driven_by_rng() -> None:
    campaign = make_campaign(max_groups_led=50)
    a, b = Game(campaign, seed=7), Game(campaign, seed=7)
    ids_a = [a.open("u") for _ in range(20)]
    ids_b = [b.open("u") for _ in range(20)]
    assert ids_a == ids_b
    assert len(set(ids_a)) == 20


def test_group_id_collision_draws_again() -> None:
    game = Game(seed=3)
    first = game.open("a")
    # Replaying the same rng stream would draw `first` again; decide must skip it.
    rng = random.Random(3)
    events = decide(game.state, OpenGroup("b"), NOW, rng)
    assert events[0].group != first


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(START, START + LIMIT, id="start"),
        pytest.param(NOW, NOW + LIMIT, id="early"),
        pytest.param(END - LIMIT - 1, END - 1, id="just-before-clamp"),
        pytest.param(END - LIMIT, END, id="exactly-at-end"),
        pytest.param(END - LIMIT + 1, END, id="clamped"),
        pytest.param(END - 1, END, id="last-ms"),
    ],
)
def test_expires_at_is_min_of_time_limit_and_campaign_end(now: int, expected: int) -> None:
    game = Game()
    gid = game.open("a", now)
    assert game.group(gid).expires_at == expected
    assert game.group(gid).expires_at == min(now + LIMIT, END)


# --- completion -----------------------------------------------------------------------------


def test_joining_last_place_completes_the_deal() -> None:
    game = Game()
    gid = game.open("leader", NOW)
    first = game.join("bob", gid, NOW + 1)
    assert first == [MemberJoined(group=gid, seq=2, user="bob", at=NOW + 1)]
    assert game.group(gid).status is GroupStatus.OPEN
    last = game.join("carol", gid, NOW + 2)
    assert last == [
        MemberJoined(group=gid, seq=3, user="carol", at=NOW + 2),
        GroupCompleted(group=gid, seq=4, at=NOW + 2),
        DealCompleted(
            group=gid, seq=5, campaign="tea-trio", sku="TEA-1", price=PRICE,
            members=("leader", "bob", "carol"), at=NOW + 2,
        ),
    ]
    group = game.group(gid)
    assert group.status is GroupStatus.COMPLETED
    assert group.members == ("leader", "bob", "carol")
    assert group.version == 5
    assert group.virtual == 0
    assert game.state.stock_left == 97
    assert game.state.led == {"leader": 1}
    assert game.state.joined == {"bob": 1, "carol": 1}
    assert list(game.state.open_groups()) == []
    # Completion is final: the deadline timer firing later changes nothing.
    assert game.expire(gid, group.expires_at) == []
    assert game.expire(gid, END + DAY) == []
    assert game.group(gid) == group


def test_two_person_group_completes_on_first_join() -> None:
    game = Game(make_campaign(group_size=2))
    gid = game.open("a")
    events = game.join("b", gid)
    assert [e.type for e in events] == ["member_joined", "group_completed", "deal_completed"]
    assert [e.seq for e in events] == [2, 3, 4]
    deal = events[-1]
    assert isinstance(deal, DealCompleted)
    assert deal.members == ("a", "b")


def reprice(game: Game, group_price: int) -> None:
    """The marketer changes the campaign's group price after groups were opened."""
    product = replace(game.campaign.product, group_price=group_price)
    game.state = replace(game.state, campaign=replace(game.campaign, product=product))


def test_group_price_is_frozen_at_open() -> None:
    """The deal's price is the group's price (taken when it opened), not the campaign's."""
    game = Game()
    gid = game.open("a")
    reprice(game, 1)
    game.join("b", gid)
    deal = game.join("c", gid)[-1]
    assert isinstance(deal, DealCompleted)
    assert deal.price == PRICE


def test_seqs_are_per_group_and_rise_by_one() -> None:
    game = Game(make_campaign(max_groups_joined=5))
    g1, g2 = game.open("a"), game.open("b")
    game.join("x", g1)
    game.join("y", g2)
    game.join("z", g1)  # completes g1: seqs 3, 4, 5
    game.expire(g2, NOW + LIMIT)  # fails g2: seqs 3, 4 (refund b), 5 (refund y)
    by_group: dict[str, list[int]] = defaultdict(list)
    for e in game.log:
        by_group[e.group].append(e.seq)
    assert by_group == {g1: [1, 2, 3, 4, 5], g2: [1, 2, 3, 4, 5]}
    assert game.state.version == len(game.log) == 10


# --- expiry ---------------------------------------------------------------------------------


def test_expire_before_deadline_is_noop() -> None:
    game = Game()
    gid = game.open("a")
    before = game.state
    deadline = game.group(gid).expires_at
    assert decide(before, ExpireGroup(gid), deadline - 1, game.rng) == []
    assert game.expire(gid, deadline - 1) == []
    assert game.state == before


def test_expire_unknown_group_is_noop() -> None:
    game = Game()
    assert decide(game.state, ExpireGroup("nope"), END, game.rng) == []


@pytest.mark.parametrize("late", [0, 1, DAY], ids=["at-deadline", "1ms-late", "day-late"])
def test_expire_open_group_fails_and_refunds(late: int) -> None:
    game = Game()
    gid = game.open("a")
    game.join("b", gid)
    other = game.open("c")  # an unrelated group keeps its stock and tallies
    deadline = game.group(gid).expires_at
    events = game.expire(gid, deadline + late)
    at = deadline + late
    assert events == [
        GroupFailed(group=gid, seq=3, at=at),
        Refunded(group=gid, seq=4, user="a", amount=PRICE, at=at),
        Refunded(group=gid, seq=5, user="b", amount=PRICE, at=at),
    ]
    group = game.group(gid)
    assert group.status is GroupStatus.FAILED
    assert group.version == 5
    assert group.members == ("a", "b")  # history is kept
    assert game.state.stock_left == 100 - 1  # only `other` holds stock
    assert game.state.led == {"c": 1}
    assert dict(game.state.joined) == {}
    assert [g.id for g in game.state.open_groups()] == [other]
    # A failed group is final.
    assert game.expire(gid, at + DAY) == []


def test_failure_releases_limits_for_reuse() -> None:
    game = Game(make_campaign(max_groups_led=1, max_groups_joined=1, stock=2))
    gid = game.open("a")
    game.join("b", gid)
    assert game.state.stock_left == 0
    with pytest.raises(GameError) as info:
        decide(game.state, OpenGroup("a"), NOW, game.rng)
    assert info.value.code == "limit_reached"
    game.expire(gid, NOW + LIMIT)
    assert game.state.stock_left == 2
    later = NOW + LIMIT + 1
    again = game.open("a", later)  # lead limit and stock given back
    game.join("b", again, later)  # join limit given back
    assert game.state.led == {"a": 1}
    assert game.state.joined == {"b": 1}


def test_refunds_use_group_price() -> None:
    game = Game()
    gid = game.open("a")
    reprice(game, 1)
    events = game.expire(gid, NOW + LIMIT)
    refunds = [e for e in events if isinstance(e, Refunded)]
    assert [r.amount for r in refunds] == [PRICE]


@pytest.mark.parametrize(
    ("ratio", "size", "real", "completes"),
    [
        pytest.param(0.6, 5, 3, True, id="0.6x5-3-fills"),
        pytest.param(0.6, 5, 4, True, id="0.6x5-4-fills"),
        pytest.param(0.6, 5, 2, False, id="0.6x5-2-fails"),
        pytest.param(0.6, 5, 1, False, id="0.6x5-1-fails"),
        pytest.param(0.5, 4, 2, True, id="0.5x4-2-fills"),
        pytest.param(0.5, 4, 1, False, id="0.5x4-1-fails"),
        pytest.param(0.5, 2, 1, True, id="0.5x2-leader-alone-fills"),
        pytest.param(0.01, 3, 1, True, id="tiny-ratio-fills"),
        pytest.param(1.0, 3, 2, False, id="ratio-1-never-fills"),
        pytest.param(0.7, 3, 2, False, id="0.7x3-needs-ceil-2.1"),
        pytest.param(0.7, 10, 7, True, id="0.7x10-7-fills"),
        # Exactly the share, where float products overshoot (0.28 * 25 = 7.000000000000001).
        pytest.param(0.28, 25, 7, True, id="0.28x25-7-fills"),
        pytest.param(0.14, 50, 7, True, id="0.14x50-7-fills"),
        pytest.param(0.28, 25, 6, False, id="0.28x25-6-fails"),
    ],
)
def test_virtual_fill_at_expiry(ratio: float, size: int, real: int, completes: bool) -> None:
    campaign = make_campaign(group_size=size, virtual_fill_ratio=ratio, max_groups_joined=1)
    game = Game(campaign)
    gid = game.open("m0")
    for i in range(1, real):
        game.join(f"m{i}", gid)
    members = tuple(f"m{i}" for i in range(real))
    assert game.group(gid).members == members
    deadline = game.group(gid).expires_at
    assert game.expire(gid, deadline - 1) == []
    events = game.expire(gid, deadline)
    seq = real + 1
    if completes:
        assert events == [
            VirtualFilled(group=gid, seq=seq, count=size - real, at=deadline),
            GroupCompleted(group=gid, seq=seq + 1, at=deadline),
            DealCompleted(
                group=gid, seq=seq + 2, campaign=campaign.id, sku="TEA-1", price=PRICE,
                members=members, at=deadline,
            ),
        ]
        group = game.group(gid)
        assert group.status is GroupStatus.COMPLETED
        assert group.virtual == size - real
        assert len(group.members) + group.virtual == size
        # Virtual members take no stock and no tallies.
        assert game.state.stock_left == campaign.stock - real
        assert sum(game.state.joined.values()) == real - 1
        assert game.state.led == {"m0": 1}
        with pytest.raises(GameError) as info:
            decide(game.state, JoinGroup("late", gid), NOW, game.rng)
        assert info.value.code == "group_full"
        assert game.expire(gid, deadline + 1) == []
    else:
        assert events == [
            GroupFailed(group=gid, seq=seq, at=deadline),
            *(
                Refunded(group=gid, seq=seq + 1 + i, user=m, amount=PRICE, at=deadline)
                for i, m in enumerate(members)
            ),
        ]
        assert game.group(gid).status is GroupStatus.FAILED
        assert game.group(gid).virtual == 0
        assert game.state.stock_left == campaign.stock
        assert dict(game.state.led) == {}
        assert dict(game.state.joined) == {}


def test_virtual_fill_with_config_campaign_fruit_five() -> None:
    """The shipped example: 3 of 5 real members complete a 0.6 group."""
    campaign = make_campaign(group_size=5, virtual_fill_ratio=0.6)
    game = Game(campaign)
    gid = game.open("a")
    game.join("b", gid)
    game.join("c", gid)
    events = game.expire(gid, game.group(gid).expires_at)
    assert [e.type for e in events] == ["virtual_filled", "group_completed", "deal_completed"]
    filled = events[0]
    assert isinstance(filled, VirtualFilled)
    assert filled.count == 2


# --- events ---------------------------------------------------------------------------------

ONE_OF_EACH: list[Event] = [
    GroupOpened(group="g1", seq=1, leader="a", size=3, price=PRICE, at=NOW,
                expires_at=NOW + LIMIT),
    MemberJoined(group="g1", seq=2, user="b", at=NOW + 1),
    VirtualFilled(group="g1", seq=3, count=1, at=NOW + 2),
    GroupCompleted(group="g1", seq=4, at=NOW + 2),
    DealCompleted(group="g1", seq=5, campaign="c", sku="S", price=PRICE, members=("a", "b"),
                  at=NOW + 2),
    GroupFailed(group="g2", seq=2, at=NOW + 3),
    Refunded(group="g2", seq=3, user="a", amount=PRICE, at=NOW + 3),
]


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.type)
def test_event_dict_round_trip(event: Event) -> None:
    data = event_to_dict(event)
    assert data["type"] == event.type
    assert data["group"] == event.group
    assert data["seq"] == event.seq
    # JSON-ready: survives a trip through JSON text too.
    wire = json.loads(json.dumps(data))
    assert wire == data
    assert event_from_dict(data) == event
    assert event_from_dict(wire) == event
    assert type(event_from_dict(wire)) is type(event)


def test_every_event_type_is_covered() -> None:
    assert {e.type for e in ONE_OF_EACH} == {
        "group_opened", "member_joined", "virtual_filled", "group_completed",
        "deal_completed", "group_failed", "refunded",
    }
    assert {"deal_completed", "refunded"} == OUTBOX_TYPES


def test_deal_members_serialise_as_list_and_come_back_as_tuple() -> None:
    deal = ONE_OF_EACH[4]
    data = event_to_dict(deal)
    assert data["members"] == ["a", "b"]
    assert isinstance(data["members"], list)
    back = event_from_dict(data)
    assert isinstance(back, DealCompleted)
    assert back.members == ("a", "b")


def test_event_from_dict_rejects_foreign_data() -> None:
    with pytest.raises(KeyError):
        event_from_dict({"type": "group_exploded", "group": "g", "seq": 1})
    with pytest.raises(KeyError):
        event_from_dict({"group": "g", "seq": 1})
    with pytest.raises(TypeError):
        event_from_dict({"type": "group_failed", "group": "g", "seq": 1, "at": 0, "x": 1})


def test_played_events_round_trip_and_refold() -> None:
    game = Game(make_campaign(group_size=3, virtual_fill_ratio=0.6, max_groups_joined=3))
    g1, g2, g3 = game.open("a"), game.open("b"), game.open("c")
    game.join("x", g1)
    game.join("y", g1)
    game.join("x", g2)
    game.expire(g2, NOW + LIMIT)  # 2/3 >= 0.6: virtual fill
    game.expire(g3, NOW + LIMIT)  # 1/3 < 0.6: fails
    types = {e.type for e in game.log}
    assert types == {e.type for e in ONE_OF_EACH}
    restored = [event_from_dict(json.loads(json.dumps(event_to_dict(e)))) for e in game.log]
    assert restored == game.log
    assert fold(initial_state(game.campaign), restored) == game.state


def test_evolve_counts_state_version() -> None:
    game = Game()
    gid = game.open("a")
    state = evolve(game.state, MemberJoined(group=gid, seq=2, user="b", at=NOW))
    assert state.version == game.state.version + 1
    assert state.groups[gid].version == 2
    assert game.state.groups[gid].members == ("a",)  # the old state is untouched


# --- group_view -----------------------------------------------------------------------------


def test_group_view() -> None:
    game = Game(make_campaign(virtual_fill_ratio=0.5))
    gid = game.open("a", NOW)
    game.join("b", gid, NOW)
    game.expire(gid, NOW + LIMIT)
    view = group_view("tea-trio", game.group(gid))
    assert view == {
        "id": gid,
        "campaign": "tea-trio",
        "status": "completed",
        "size": 3,
        "joined": 2,
        "holding": 0,
        "members": ["a", "b"],
        "held": [],
        "virtual_members": 1,
        "price": PRICE,
        "created_at": iso(NOW),
        "expires_at": iso(NOW + LIMIT),
        "seq": 5,
    }
    assert view["created_at"] == "2025-12-31T17:00:00.000Z"
    json.dumps(view)
    # A live frame's summary is the same object without the member and held lists.
    assert group_summary("tea-trio", game.group(gid)) == {
        k: v for k, v in view.items() if k not in ("members", "held")}


def test_iso_format() -> None:
    assert iso(START) == "2025-12-31T16:00:00.000Z"
    assert iso(START + 7) == "2025-12-31T16:00:00.007Z"


# --- properties -----------------------------------------------------------------------------

P_LIMIT = 4 * HOUR
P_START = START
P_END = P_START + 5 * P_LIMIT // 2  # some groups get clamped to the campaign end
# Times on a half-limit grid, so deadlines (t + limit) land on other pool times.
TIMES = sorted(
    {P_START - 1, P_END - 1, P_END, P_END + P_LIMIT}
    | {P_START + k * P_LIMIT // 2 for k in range(6)}
    | {P_START + k * P_LIMIT // 2 - 1 for k in range(1, 6)}
)
ACTIVE_TIMES = [t for t in TIMES if P_START <= t < P_END]
USERS = ["u0", "u1", "u2", "u3", "u4"]
CODES = {
    "campaign_not_active", "limit_reached", "out_of_stock", "not_found", "already_member",
    "group_full", "group_closed",
}

campaigns = st.builds(
    make_campaign,
    starts_at=st.just(P_START),
    ends_at=st.just(P_END),
    time_limit_ms=st.just(P_LIMIT),
    group_size=st.integers(2, 4),
    stock=st.integers(0, 20),
    max_groups_led=st.integers(1, 3),
    max_groups_joined=st.integers(1, 3),
    virtual_fill_ratio=st.sampled_from([None, 0.3, 0.5, 0.6, 1.0]),
)

commands = st.lists(
    st.tuples(
        st.sampled_from(["open", "join", "join", "join", "expire"]),
        st.integers(0, len(USERS) - 1),
        st.integers(0, 4),  # which group, counting back from the newest; too far = unknown
        st.one_of(st.sampled_from(ACTIVE_TIMES), st.sampled_from(TIMES)),
    ),
    min_size=15,  # long enough games for groups to fill, fail and free their places
    max_size=60,
)


def check_invariants(state: GroupBuyState, log: list[Event]) -> None:
    campaign = state.campaign
    held = 0
    led: Counter[str] = Counter()
    joined: Counter[str] = Counter()
    for gid, group in state.groups.items():
        assert group.id == gid
        assert group.size == campaign.group_size
        assert group.members[0] == group.leader
        assert len(set(group.members)) == len(group.members), "duplicate member"
        assert 0 <= group.virtual
        assert len(group.members) + group.virtual <= group.size
        assert group.expires_at == min(group.created_at + campaign.time_limit_ms,
                                       campaign.ends_at)
        if group.status is GroupStatus.COMPLETED:
            assert len(group.members) + group.virtual == group.size
        else:
            assert group.virtual == 0
        if group.status is GroupStatus.OPEN:
            assert len(group.members) < group.size
        if group.status is not GroupStatus.FAILED:
            held += len(group.members)
            led[group.leader] += 1
            joined.update(group.members[1:])
    assert state.stock_left == campaign.stock - held
    assert state.stock_left >= 0
    assert dict(state.led) == dict(led)
    assert dict(state.joined) == dict(joined)
    assert all(v <= campaign.max_groups_led for v in state.led.values())
    assert all(v <= campaign.max_groups_joined for v in state.joined.values())
    assert all(v > 0 for v in state.led.values())
    assert all(v > 0 for v in state.joined.values())

    # Refolding the whole log reproduces the state.
    refolded = fold(initial_state(campaign), log)
    assert dict(refolded.groups) == dict(state.groups)
    assert refolded.stock_left == state.stock_left
    assert dict(refolded.led) == dict(state.led)
    assert dict(refolded.joined) == dict(state.joined)
    assert refolded.version == state.version == len(log)
    assert refolded == state

    # Restoring from the groups alone (the owner's restart snapshot) is the same state.
    assert state_from_groups(campaign, state.groups.values(), state.version) == state

    # Each group's seqs run 1..n and its version is n.
    seqs: dict[str, list[int]] = defaultdict(list)
    for e in log:
        seqs[e.group].append(e.seq)
    assert set(seqs) == set(state.groups)
    for gid, group_seqs in seqs.items():
        assert group_seqs == list(range(1, len(group_seqs) + 1))
        assert state.groups[gid].version == len(group_seqs)


def check_events(before: GroupBuyState, events: list[Event]) -> None:
    """Per-command event shapes that the state alone cannot show."""
    for e in events:
        if isinstance(e, DealCompleted):
            group = before.groups[e.group]
            assert e.price == group.price
            assert e.campaign == before.campaign.id
            assert e.sku == before.campaign.product.sku
            assert e.members[0] == group.leader
            assert set(e.members) >= set(group.members)
        if isinstance(e, GroupFailed):
            group = before.groups[e.group]
            refunds = [e for e in events if isinstance(e, Refunded)]
            assert [r.user for r in refunds] == list(group.members)
            assert all(r.amount == group.price for r in refunds)
    types = [e.type for e in events]
    if "deal_completed" in types:
        assert types[-2:] == ["group_completed", "deal_completed"]


class Player:
    """Drives random commands through `apply`, checking everything after each step."""

    def __init__(
        self, campaign: GroupBuyCampaign, seed: int, note: Callable[[str], object] = event
    ) -> None:
        self.note = note
        self.rng = random.Random(seed)
        self.state = initial_state(campaign)
        self.log: list[Event] = []
        self.opened: list[str] = []
        self.watched: dict[str, dict[str, object]] = {}

    def pick(self, back: int) -> str:
        """A group, counting back from the newest (recent ones are likelier open)."""
        return self.opened[-1 - back] if back < len(self.opened) else "g-unknown"

    def step(self, command: OpenGroup | JoinGroup | ExpireGroup, now: int) -> None:
        state = self.state
        try:
            new_state, events = apply(state, command, now, self.rng)
        except GameError as error:
            assert error.code in CODES
            assert not isinstance(command, ExpireGroup), "expiry is never refused"
            self.note(f"refused {error.code}")
            return
        check_events(state, events)
        as_of = state
        for emitted in events:
            self.note(f"emitted {emitted.type}")
            # Every event survives serialisation.
            assert event_from_dict(event_to_dict(emitted)) == emitted
            as_of = evolve(as_of, emitted)
            group = as_of.groups[emitted.group]
            if isinstance(emitted, GroupOpened):
                self.opened.append(emitted.group)
                self.watched[emitted.group] = group_view("c", group)  # a snapshot
            else:
                # A watcher applying each live frame to its copy holds the group.
                frame = {**event_to_dict(emitted), "group": group_summary("c", group)}
                self.watched[emitted.group] = apply_event(self.watched[emitted.group], frame)
            assert self.watched[emitted.group] == group_view("c", group)
        if isinstance(command, ExpireGroup):
            expiring = state.groups.get(command.group)
            due = (expiring is not None and expiring.status is GroupStatus.OPEN
                   and now >= expiring.expires_at)
            assert bool(events) == due
        else:
            assert events, "an accepted open/join always emits an event"
        self.log.extend(events)
        self.state = new_state
        check_invariants(self.state, self.log)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(campaign=campaigns, script=commands, seed=st.integers(0, 2**32 - 1))
def test_random_play_keeps_invariants(
    campaign: GroupBuyCampaign, script: list[tuple[str, int, int, int]], seed: int
) -> None:
    player = Player(campaign, seed)
    for kind, user_i, back, now in script:
        user = USERS[user_i]
        command: OpenGroup | JoinGroup | ExpireGroup
        if kind == "open":
            command = OpenGroup(user)
        elif kind == "join":
            command = JoinGroup(user, player.pick(back))
        else:
            command = ExpireGroup(player.pick(back))
        player.step(command, now)


class GroupBuyMachine(RuleBasedStateMachine):
    """The same invariants over longer runs: hypothesis picks one rule per step."""

    def __init__(self) -> None:
        super().__init__()
        self.player: Player | None = None

    @initialize(campaign=campaigns, seed=st.integers(0, 2**32 - 1))
    def setup(self, campaign: GroupBuyCampaign, seed: int) -> None:
        self.player = Player(campaign, seed)

    @property
    def p(self) -> Player:
        assert self.player is not None
        return self.player

    @rule(user=st.sampled_from(USERS), now=st.sampled_from(TIMES))
    def open(self, user: str, now: int) -> None:
        self.p.step(OpenGroup(user), now)

    @rule(user=st.sampled_from(USERS), back=st.integers(0, 4), now=st.sampled_from(TIMES))
    def join(self, user: str, back: int, now: int) -> None:
        self.p.step(JoinGroup(user, self.p.pick(back)), now)

    @rule(user=st.sampled_from(USERS), back=st.integers(0, 2),
          now=st.sampled_from(ACTIVE_TIMES))
    def join_active(self, user: str, back: int, now: int) -> None:
        """A join at an in-campaign time on a recent group: the path most often accepted."""
        self.p.step(JoinGroup(user, self.p.pick(back)), now)

    @rule(user=st.sampled_from(USERS), now=st.sampled_from(ACTIVE_TIMES))
    def open_active(self, user: str, now: int) -> None:
        self.p.step(OpenGroup(user), now)

    @rule(back=st.integers(0, 4), now=st.sampled_from(TIMES))
    def expire(self, back: int, now: int) -> None:
        self.p.step(ExpireGroup(self.p.pick(back)), now)

    @rule(back=st.integers(0, 2), late=st.sampled_from([-1, 0, 1]))
    def expire_near_deadline(self, back: int, late: int) -> None:
        """The timer firing right around a group's own deadline."""
        gid = self.p.pick(back)
        group = self.p.state.groups.get(gid)
        now = group.expires_at + late if group else P_END
        self.p.step(ExpireGroup(gid), now)

    @invariant()
    def refold(self) -> None:
        if self.player is not None:
            check_invariants(self.p.state, self.p.log)


TestGroupBuyMachine = GroupBuyMachine.TestCase
TestGroupBuyMachine.settings = settings(
    max_examples=200, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_seeded_random_play_covers_every_rule() -> None:
    """A fixed sweep of long random games: same checks, and proof they reach every path."""
    seen: Counter[str] = Counter()
    for seed in range(60):
        r = random.Random(seed)
        campaign = make_campaign(
            starts_at=P_START, ends_at=P_END, time_limit_ms=P_LIMIT,
            group_size=r.randint(2, 4), stock=r.choice([0, 3, 8, 20]),
            max_groups_led=r.randint(1, 3), max_groups_joined=r.randint(1, 3),
            virtual_fill_ratio=r.choice([None, 0.3, 0.5, 0.6, 1.0]),
        )
        player = Player(campaign, seed, note=lambda name: seen.update([name]))
        for _ in range(60):
            kind = r.choice(["open", "join", "join", "join", "expire"])
            back = r.randint(0, 3)
            now = r.choice(TIMES) if r.random() < 0.3 else r.choice(ACTIVE_TIMES)
            if kind == "open":
                player.step(OpenGroup(r.choice(USERS)), now)
            elif kind == "join":
                player.step(JoinGroup(r.choice(USERS), player.pick(back)), now)
            else:
                player.step(ExpireGroup(player.pick(back)), now)
    assert {f"refused {code}" for code in CODES} <= set(seen)
    assert {f"emitted {e.type}" for e in ONE_OF_EACH} <= set(seen)
