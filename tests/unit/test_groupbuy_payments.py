"""The group-buy's payment step, pure: seats held until paid, holds that lapse, the
provider's word taken once, money back for what cannot be seated.

Time is an argument; the provider's word is a command (`SettlePayment`), as the server
sends it after verifying a notification or asking the provider.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from games import payments
from games.campaign import GroupBuyCampaign, Product
from games.errors import GameError
from games.groupbuy import GAME
from games.groupbuy.rules import (
    HOLD_KEY,
    DealCompleted,
    Event,
    ExpireGroup,
    ExpireHold,
    GroupBuyState,
    GroupFailed,
    GroupOpened,
    GroupStatus,
    HoldLapsed,
    JoinGroup,
    MemberJoined,
    OpenGroup,
    PaymentReturned,
    Refunded,
    SeatHeld,
    SeatReleased,
    SeatStatus,
    SettlePayment,
    apply,
    decide,
    event_from_dict,
    event_to_dict,
    evolve,
    fold,
    initial_state,
    state_from_groups,
)

MINUTE = 60_000
START = 1_767_196_800_000
NOW = START + 60 * MINUTE
PRICE = 6_000
HOLD = 15 * MINUTE
LIMIT = 2 * 60 * MINUTE


def make_campaign(**overrides: object) -> GroupBuyCampaign:
    fields: dict[str, object] = {
        "id": "pay-trio", "title": "Pay to join", "starts_at": START,
        "ends_at": START + 10 * 24 * 60 * MINUTE,
        "product": Product(sku="TEA-1", title="Tea", list_price=9_900, group_price=PRICE),
        "group_size": 3, "time_limit_ms": LIMIT, "stock": 100, "max_groups_led": 2,
        "max_groups_joined": 2, "virtual_fill_ratio": None, "pay_within_ms": HOLD,
    }
    fields.update(overrides)
    return GroupBuyCampaign(**fields)  # type: ignore[arg-type]


class Play:
    """One campaign driven through `apply`, every event kept."""

    def __init__(self, campaign: GroupBuyCampaign | None = None) -> None:
        self.state = initial_state(campaign or make_campaign())
        self.rng = random.Random(7)
        self.log: list[Event] = []

    def do(self, command: object, now: int = NOW) -> list[Event]:
        self.state, events = apply(self.state, command, now, self.rng)  # type: ignore[arg-type]
        self.log += events
        return events

    def open(self, user: str, now: int = NOW) -> tuple[str, str]:
        [opened] = self.do(OpenGroup(user), now)
        assert isinstance(opened, GroupOpened)
        return opened.group, opened.payment

    def hold(self, user: str, group: str, now: int = NOW) -> str:
        [held] = self.do(JoinGroup(user, group), now)
        assert isinstance(held, SeatHeld)
        return held.payment

    def pay(self, payment: str, now: int = NOW, amount: int = PRICE) -> list[Event]:
        return self.do(SettlePayment(payment, "paid", amount), now)

    def paid_group(self, leader: str = "lead", now: int = NOW) -> str:
        group, payment = self.open(leader, now)
        assert [e.type for e in self.pay(payment, now)] == ["member_joined"]
        return group


def test_the_leader_holds_a_seat_until_paid_and_the_group_opens_to_others_then() -> None:
    play = Play()
    group, payment = play.open("lead")
    assert payment.startswith(payments.campaign_code("pay-trio"))
    assert len(payment) == payments.ID_LENGTH
    assert play.state.groups[group].members == ()
    assert play.state.stock_left == 99  # the held seat takes its unit
    with pytest.raises(GameError) as refused:
        play.do(JoinGroup("amy", group))
    assert refused.value.code == "payment_pending"
    [joined] = play.pay(payment)
    assert isinstance(joined, MemberJoined) and joined.user == "lead"
    assert play.state.groups[group].members == ("lead",)
    assert play.state.stock_left == 99  # paid: the same unit, not another


def test_a_group_completes_only_with_paid_members() -> None:
    play = Play()
    group = play.paid_group()
    first, second = play.hold("amy", group), play.hold("bob", group)
    # Full of seats, not of members: no one else gets in, and nothing is done yet.
    with pytest.raises(GameError) as refused:
        play.do(JoinGroup("cat", group))
    assert refused.value.code == "group_full"
    assert play.state.groups[group].status is GroupStatus.OPEN
    play.pay(first)
    events = play.pay(second)
    assert [e.type for e in events] == ["member_joined", "group_completed", "deal_completed"]
    deal = events[-1]
    assert isinstance(deal, DealCompleted) and deal.members == ("lead", "amy", "bob")


def test_an_unpaid_hold_lapses_then_the_provider_is_asked_before_the_seat_goes() -> None:
    play = Play()
    group = play.paid_group()
    payment = play.hold("amy", group)
    assert play.do(ExpireHold(payment), NOW + HOLD - 1) == []  # not due yet
    [lapsed] = play.do(ExpireHold(payment), NOW + HOLD)
    assert isinstance(lapsed, HoldLapsed)
    seat = play.state.groups[group].seat(payment)
    assert seat is not None and seat.status is SeatStatus.CHECKING
    assert play.do(ExpireHold(payment), NOW + HOLD + 1) == []  # asked once
    # The provider says never paid: the seat and the unit go back, and the seat is free.
    stock = play.state.stock_left
    [released] = play.do(SettlePayment(payment, "closed"), NOW + HOLD + 2)
    assert isinstance(released, SeatReleased)
    assert play.state.stock_left == stock + 1
    assert play.state.joined.get("amy", 0) == 0
    again = play.hold("amy", group, NOW + HOLD + 3)
    assert again != payment  # a new payment for the new hold


def test_a_lapsed_hold_the_provider_says_was_paid_is_seated() -> None:
    play = Play()
    group = play.paid_group()
    payment = play.hold("amy", group)
    play.do(ExpireHold(payment), NOW + HOLD)
    events = play.pay(payment, NOW + HOLD + 5)
    assert [e.type for e in events] == ["member_joined"]
    assert play.state.groups[group].members == ("lead", "amy")


def test_a_payment_after_its_seat_went_is_returned_once() -> None:
    play = Play()
    group = play.paid_group()
    payment = play.hold("amy", group)
    play.do(ExpireHold(payment), NOW + HOLD)
    play.do(SettlePayment(payment, "closed"), NOW + HOLD + 1)
    stock = play.state.stock_left
    [returned] = play.pay(payment, NOW + HOLD + 2)
    assert isinstance(returned, PaymentReturned) and returned.amount == PRICE
    assert play.state.stock_left == stock  # the seat was already given back
    assert play.pay(payment, NOW + HOLD + 3) == []  # the same notification again
    assert play.do(SettlePayment(payment, "closed"), NOW + HOLD + 4) == []


def test_the_same_word_twice_changes_nothing() -> None:
    play = Play()
    group = play.paid_group()
    payment = play.hold("amy", group)
    play.pay(payment)
    before = play.state
    assert play.pay(payment) == [] and play.state is before
    assert play.do(SettlePayment(payment, "closed")) == []  # out of order: harmless
    with pytest.raises(GameError) as unknown:
        play.pay("0" * payments.ID_LENGTH)
    assert unknown.value.code == "not_found"


def test_a_wrong_amount_is_returned_whole_and_seats_no_one() -> None:
    play = Play()
    group = play.paid_group()
    payment = play.hold("amy", group)
    [returned] = play.pay(payment, amount=PRICE - 1)
    assert isinstance(returned, PaymentReturned) and returned.amount == PRICE - 1
    assert play.state.groups[group].members == ("lead",)
    assert play.state.stock_left == 99


def test_a_failed_group_refunds_paid_members_what_they_paid_and_releases_holds() -> None:
    play = Play()
    group = play.paid_group()
    held = play.hold("amy", group)
    events = play.do(ExpireGroup(group), NOW + LIMIT)
    assert [e.type for e in events] == ["seat_released", "group_failed", "refunded"]
    released = events[0]
    # Released before its own hold ended: the provider is asked, in case it was paid.
    assert isinstance(released, SeatReleased) and released.ask
    outbox = GAME.applied(play.state.campaign, play.state, released).outbox
    assert outbox is not None and outbox.kind == "check"
    assert [line.payment for line in outbox.lines] == [held]
    refund = events[2]
    assert isinstance(refund, Refunded) and refund.user == "lead" and refund.amount == PRICE
    assert refund.payment == play.state.groups[group].seats[0].payment
    assert play.state.stock_left == 100
    seat = play.state.groups[group].seat(held)
    assert seat is not None and seat.status is SeatStatus.RELEASED
    # Amy pays after the group failed: her money goes straight back.
    assert [e.type for e in play.pay(held, NOW + LIMIT + 1)] == ["payment_returned"]


def test_a_hold_ending_with_its_group_is_asked_about_not_dropped() -> None:
    """A join in its group's last minutes: its hold ends when the group does, and the
    group's deadline fires first. The seat goes with the group, and the provider is
    asked; money it took after all goes back whole."""
    play = Play()
    group = play.paid_group()
    held = play.hold("amy", group, NOW + LIMIT - 60_000)
    seat = play.state.groups[group].seat(held)
    assert seat is not None and seat.until == NOW + LIMIT
    events = play.do(ExpireGroup(group), NOW + LIMIT)
    assert [(e.type, getattr(e, "ask", None)) for e in events] == [
        ("seat_released", True), ("group_failed", None), ("refunded", None)]
    assert play.do(ExpireHold(held), NOW + LIMIT) == []  # its own deadline: nothing left
    assert [e.type for e in play.pay(held, NOW + LIMIT + 5)] == ["payment_returned"]


def test_a_leader_who_never_pays_fails_the_group_with_nothing_to_refund() -> None:
    play = Play()
    _, payment = play.open("lead")
    play.do(ExpireHold(payment), NOW + HOLD)
    events = play.do(SettlePayment(payment, "closed"), NOW + HOLD + 1)
    assert [e.type for e in events] == ["group_failed"]
    assert play.state.stock_left == 100 and play.state.led.get("lead", 0) == 0


def test_virtual_fill_completes_with_paid_members_and_gives_back_unpaid_seats() -> None:
    play = Play(make_campaign(group_size=4, virtual_fill_ratio=0.5))
    group = play.paid_group()
    play.pay(play.hold("amy", group))
    held = play.hold("bob", group)
    events = play.do(ExpireGroup(group), NOW + LIMIT)
    assert [e.type for e in events] == ["seat_released", "virtual_filled", "group_completed",
                                        "deal_completed"]
    deal = events[-1]
    assert isinstance(deal, DealCompleted) and deal.members == ("lead", "amy")
    seat = play.state.groups[group].seat(held)
    assert seat is not None and seat.status is SeatStatus.RELEASED
    assert play.state.stock_left == 98


def test_a_leader_paid_within_the_open_replays_as_a_member_with_a_paid_seat() -> None:
    # A group opened paid (paid=True: the provider's word came with the open, or an
    # event stored so by an earlier version) replays as it was: the leader a member, the
    # seat paid, the group open to others.
    play = Play()
    opened = GroupOpened(group="g1", seq=1, leader="lead", size=3, price=100, at=NOW,
                         expires_at=NOW + LIMIT, payment="p" * 24, hold_until=NOW, paid=True)
    state = evolve(play.state, opened)
    assert state.groups["g1"].members == ("lead",)
    seat = state.groups["g1"].seat("p" * 24)
    assert seat is not None and seat.status is SeatStatus.PAID
    assert [e.type for e in decide(state, JoinGroup("amy", "g1"), NOW + 1, random.Random(1))] == [
        "seat_held"]


def test_the_game_arms_a_deadline_per_hold_and_its_tick_lapses_it() -> None:
    play = Play()
    group, payment = play.open("lead")
    opened = play.log[0]
    applied = GAME.applied(play.state.campaign, play.state, opened)
    assert applied.deadline == (NOW + LIMIT, group)
    assert applied.also == ((NOW + HOLD, HOLD_KEY + payment),)
    assert (NOW + HOLD, HOLD_KEY + payment) in set(GAME.deadlines(play.state))
    assert GAME.tick(HOLD_KEY + payment) == ExpireHold(payment)
    assert GAME.tick(group) == ExpireGroup(group)


def test_what_the_pipeline_is_handed() -> None:
    play = Play()
    group = play.paid_group()
    payment = play.hold("amy", group)
    campaign = play.state.campaign
    kinds = []
    state = initial_state(campaign)
    for event in play.log:
        state = fold(state, [event])
        outbox = GAME.applied(campaign, state, event).outbox
        kinds.append(None if outbox is None else outbox.kind)
    assert kinds == [None, "paid", None]
    [lapsed] = play.do(ExpireHold(payment), NOW + HOLD)
    outbox = GAME.applied(campaign, play.state, lapsed).outbox
    assert outbox is not None and outbox.kind == "check"
    assert [(line.user, line.payment, line.amount) for line in outbox.lines] == [
        ("amy", payment, PRICE)]


def test_answers_carry_the_payment() -> None:
    play = Play()
    group, payment = play.open("lead")
    campaign = play.state.campaign
    import json
    answer = json.loads(GAME.answer(campaign, play.state, OpenGroup("lead"), play.log, NOW))
    assert answer["payment"] == {"id": payment, "amount": PRICE, "status": "pending",
                                 "expires_at": "2025-12-31T17:15:00.000Z"}
    assert answer["group"]["members"] == [] and answer["group"]["held"] == [
        {"user": "lead", "expires_at": "2025-12-31T17:15:00.000Z"}]
    events = play.pay(payment)
    paid = json.loads(GAME.answer(campaign, play.state, SettlePayment(payment, "paid", PRICE),
                                  events, NOW))
    assert paid["payment"]["status"] == "paid" and paid["group"]["members"] == ["lead"]
    # A second join by a user already holding a seat answers that seat, with no event.
    held = play.hold("amy", group)
    assert play.do(JoinGroup("amy", group)) == []
    again = json.loads(GAME.answer(campaign, play.state, JoinGroup("amy", group), [], NOW))
    assert again["payment"]["id"] == held and again["payment"]["status"] == "pending"


# --- random play ------------------------------------------------------------------------

USERS = ["u0", "u1", "u2", "u3", "u4", "u5"]
STEPS = st.lists(st.tuples(
    st.sampled_from(["open", "join", "join", "pay", "pay", "close", "lapse", "expire",
                     "wrong"]),
    st.integers(0, len(USERS) - 1), st.integers(0, 30), st.integers(0, 3)),
    min_size=10, max_size=70)


def check(state: GroupBuyState, log: list[Event]) -> None:
    """What must hold whatever the order of holds, payments, lapses and deadlines."""
    campaign = state.campaign
    taken = 0
    led: Counter[str] = Counter()
    joined: Counter[str] = Counter()
    for group in state.groups.values():
        holding = group.holding()
        assert group.places_taken() <= group.size, "over-full"
        kept = (SeatStatus.REFUNDED if group.status is GroupStatus.FAILED
                else SeatStatus.PAID)
        paid_users = [s.user for s in group.seats if s.status is kept]
        # Never a paid member without a seat, never a seat paid for no member (a failed
        # group's members are its refunded ones).
        assert sorted(paid_users) == sorted(group.members)
        assert all(s.status is not SeatStatus.PAID for s in group.seats) or (
            group.status is not GroupStatus.FAILED)
        if group.members:
            assert group.members[0] == group.leader
        if group.status is GroupStatus.FAILED:
            assert not holding
            continue
        taken += len(group.members) + len(holding)
        led[group.leader] += 1
        joined.update(u for u in (*group.members, *(s.user for s in holding))
                      if u != group.leader)
    assert state.stock_left == campaign.stock - taken >= 0
    assert dict(state.led) == dict(led) and dict(state.joined) == dict(joined)
    # Money: every payment taken is kept by exactly one completed deal's member, or given
    # back exactly once (refunded with its failed group, or returned).
    taken_money: Counter[str] = Counter()
    back: Counter[str] = Counter()
    for e in log:
        if isinstance(e, MemberJoined) and e.payment:
            taken_money[e.payment] += 1
        elif isinstance(e, GroupOpened) and e.paid:
            taken_money[e.payment] += 1
        elif isinstance(e, PaymentReturned):
            taken_money[e.payment] += 1
            back[e.payment] += 1
        elif isinstance(e, Refunded):
            back[e.payment] += 1
    assert all(n == 1 for n in taken_money.values()) and all(n == 1 for n in back.values())
    for group in state.groups.values():
        for seat in group.seats:
            if seat.status is SeatStatus.PAID:
                assert back[seat.payment] == 0
                if group.status is GroupStatus.FAILED:
                    raise AssertionError("a failed group keeps a paid member's money")
    assert fold(initial_state(campaign), log) == state
    assert state_from_groups(campaign, state.groups.values(), state.version) == state
    for e in log:
        assert event_from_dict(event_to_dict(e)) == e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS, size=st.integers(2, 4), stock=st.integers(0, 12),
       ratio=st.sampled_from([None, 0.5]))
def test_random_play_with_payments_keeps_seats_stock_and_money_exact(
        steps: list[tuple[str, int, int, int]], size: int, stock: int,
        ratio: float | None) -> None:
    play = Play(make_campaign(group_size=size, stock=stock, virtual_fill_ratio=ratio))
    now = NOW
    for kind, user_i, advance, back in steps:
        now += advance * MINUTE
        state = play.state
        groups = list(state.groups.values())
        seats = [seat for g in groups for seat in g.seats]
        try:
            if kind == "open":
                play.do(OpenGroup(USERS[user_i]), now)
            elif kind == "join" and groups:
                play.do(JoinGroup(USERS[user_i], groups[-1 - back % len(groups)].id), now)
            elif kind in ("pay", "close", "lapse", "wrong") and seats:
                seat = seats[-1 - back % len(seats)]
                if kind == "pay":
                    play.pay(seat.payment, now, seat.amount)
                elif kind == "wrong":
                    play.pay(seat.payment, now, seat.amount + 1)
                elif kind == "close":
                    play.do(SettlePayment(seat.payment, "closed"), now)
                else:
                    play.do(ExpireHold(seat.payment), now)
            elif kind == "expire" and groups:
                play.do(ExpireGroup(groups[-1 - back % len(groups)].id), now)
        except GameError:
            assert play.state is state
        check(play.state, play.log)
    # Whatever happened, the end: every deadline fires, every check comes back closed.
    for group in list(play.state.groups.values()):
        play.do(ExpireGroup(group.id), group.expires_at)
    for group in play.state.groups.values():
        assert group.status is not GroupStatus.OPEN
        assert not group.holding()
    check(play.state, play.log)


def test_failures_and_events_cover_every_type() -> None:
    play = Play()
    group = play.paid_group()
    held = play.hold("amy", group)
    play.do(ExpireHold(held), NOW + HOLD)
    play.do(SettlePayment(held, "closed"), NOW + HOLD)
    play.pay(held, NOW + HOLD)
    play.do(ExpireGroup(group), NOW + LIMIT)
    seen = {e.type for e in play.log}
    assert {"group_opened", "member_joined", "seat_held", "hold_lapsed", "seat_released",
            "payment_returned", "group_failed", "refunded"} <= seen
    assert any(isinstance(e, GroupFailed) for e in play.log)


def test_a_seat_paid_at_once_by_the_providers_word_that_came_with_the_command() -> None:
    # The sandbox paying at once names the payment and verifies its notification before
    # the command, which carries both (games.core.Method.prepaid): one event a seat.
    play = Play()
    named = payments.payment_id("pay-trio", "prepaid", "lead", "groupbuy.open", "", "k1")
    [opened] = play.do(OpenGroup("lead", payment=named, paid=PRICE))
    assert isinstance(opened, GroupOpened) and opened.paid and opened.payment == named
    group = opened.group
    assert play.state.groups[group].members == ("lead",)
    outbox = GAME.applied(play.state.campaign, play.state, opened).outbox
    assert outbox is not None and outbox.kind == "paid"  # its order, made at once
    joining = payments.payment_id("pay-trio", "prepaid", "amy", "groupbuy.join", group, "k2")
    [joined] = play.do(JoinGroup("amy", group, payment=joining, paid=PRICE))
    assert isinstance(joined, MemberJoined) and joined.payment == joining
    seat = play.state.groups[group].seat(joining)
    assert seat is not None and seat.status is SeatStatus.PAID
    assert play.pay(joining) == []  # the same word again (a redelivery): nothing more
    # The word must be for this campaign's unused payment and the group price; else the
    # command is refused and nothing changes.
    for bad in (JoinGroup("bob", group, payment=payments.payment_id("other", "x"),
                          paid=PRICE),
                JoinGroup("bob", group, payment=named, paid=PRICE),
                JoinGroup("bob", group, paid=PRICE - 1, payment=payments.payment_id(
                    "pay-trio", "prepaid", "bob", "groupbuy.join", group, "k4")),
                JoinGroup("bob", group, paid=PRICE)):
        before = play.state
        with pytest.raises(GameError) as refused:
            play.do(bad)
        assert refused.value.code == "invalid_request" and play.state == before
    # A refused join (the group full) takes its seat from nobody: nothing was paid.
    full = Play(make_campaign(group_size=2))
    group2 = full.paid_group()
    full.pay(full.hold("amy", group2))
    late = payments.payment_id("pay-trio", "prepaid", "bob", "groupbuy.join", group2, "k3")
    with pytest.raises(GameError) as closed:
        full.do(JoinGroup("bob", group2, payment=late, paid=PRICE))
    assert closed.value.code == "group_full"
    assert late not in full.state.payments


def test_a_campaign_that_takes_no_payment_has_nothing_to_pay_before_its_commands() -> None:
    free = make_campaign(pay_within_ms=None)
    open_, join = (next(m for m in GAME.methods if m.name == name)
                   for name in ("groupbuy.open", "groupbuy.join"))
    assert open_.prepaid is not None and join.prepaid is not None
    assert (open_.prepaid(free), join.prepaid(free)) == (None, None)
    assert open_.prepaid(make_campaign()) == PRICE
    play = Play(free)
    [opened] = play.do(OpenGroup("lead"))
    assert isinstance(opened, GroupOpened) and not opened.payment and not opened.paid
