"""Unit tests for the bargain (砍价) game in games/bargain/.

Everything here is pure: campaigns are built in memory, time is an explicit epoch-ms
number and randomness is a seeded random.Random. The rules are driven through `apply`,
the seam (`GAME`) through its own methods, as the generic owner drives them.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from games import jsontext, payments
from games.bargain import GAME
from games.bargain.campaign import BargainCampaign, BargainProduct, parse_campaign
from games.bargain.game import NEWCOMER, READ_MODEL
from games.bargain.rules import (
    EVENT_TYPES,
    Bargain,
    BargainBought,
    BargainExpired,
    BargainHelped,
    BargainStarted,
    BargainState,
    BargainStatus,
    BuyBargain,
    Command,
    Event,
    ExpireBargain,
    ExpireHold,
    FloorReached,
    HelpBargain,
    PaymentReturned,
    PurchaseHeld,
    PurchaseLapsed,
    PurchaseReleased,
    SettlePayment,
    StartBargain,
    apply,
    bargain_summary,
    bargain_text,
    bargain_view,
    decide,
    draw_cut,
    draw_first_cut,
    event_from_dict,
    event_to_dict,
    evolve,
    fold,
    initial_state,
    local_day,
    replay_cuts,
    replay_events,
    state_from_bargains,
)
from games.campaign import iso
from games.commission import Rates
from games.core import ANSWERS_KEPT_MS, Line, Outbox
from games.errors import GameError
from games.settings import ConfigError, Table
from games.topics import parse as parse_topic

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
START = 1_767_196_800_000  # 2026-01-01T00:00:00+08:00
END = START + 10 * DAY
NOW = START + HOUR
LIMIT = 24 * HOUR
PAY = 15 * MINUTE
LIST_PRICE = 19_900
FLOOR_PRICE = 9_900
SHOP = Rates(1000, 500)
MIGRATION = Path(__file__).resolve().parents[2] / "storage/migrations/0005_bargain.sql"


def make_campaign(**overrides: object) -> BargainCampaign:
    fields: dict[str, object] = {
        "id": "teapot",
        "title": "Clay teapot, bargain it down",
        "starts_at": START,
        "ends_at": END,
        "product": BargainProduct(sku="POT-1", title="Teapot", list_price=LIST_PRICE,
                                  floor_price=FLOOR_PRICE),
        "stock": 10,
        "helpers_to_floor": 3,
        "time_limit_ms": LIMIT,
        "max_bargains_started": 2,
        "pay_within_ms": PAY,
    }
    fields.update(overrides)
    return BargainCampaign(**fields)  # type: ignore[arg-type]


class Play:
    """A campaign's state driven through `apply`, keeping every event emitted."""

    def __init__(self, campaign: BargainCampaign | None = None, seed: int = 0) -> None:
        self.campaign = campaign or make_campaign()
        self.state = initial_state(self.campaign)
        self.rng = random.Random(seed)
        self.log: list[Event] = []

    def do(self, command: Command, now: int) -> list[Event]:
        self.state, events = apply(self.state, command, now, self.rng)
        self.log.extend(events)
        return events

    def start(self, user: str, now: int = NOW) -> str:
        events = self.do(StartBargain(user), now)
        assert len(events) == 1 and isinstance(events[0], BargainStarted)
        return events[0].bargain

    def help(self, user: str, bargain: str, now: int = NOW, newcomer: bool = False
             ) -> list[Event]:
        return self.do(HelpBargain(user, bargain, newcomer), now)

    def buy(self, user: str, bargain: str, now: int = NOW) -> list[Event]:
        return self.do(BuyBargain(user, bargain), now)

    def expire(self, bargain: str, now: int) -> list[Event]:
        return self.do(ExpireBargain(bargain), now)

    def to_floor(self, bargain: str, now: int = NOW, prefix: str = "h") -> None:
        """Help `bargain` with as many fresh helpers as it still needs."""
        for i in range(self.b(bargain).helpers_left):
            self.help(f"{prefix}{i}", bargain, now)
        assert self.b(bargain).status is BargainStatus.FLOOR_REACHED

    def b(self, bargain: str) -> Bargain:
        return self.state.bargains[bargain]


# --- refusals -------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """A scenario: `setup` plays a game and returns the refused command and its time."""

    campaign: dict[str, object]
    setup: Callable[[Play], tuple[Command, int]]
    code: str


def _start_before_start(p: Play) -> tuple[Command, int]:
    return StartBargain("a"), START - 1


def _start_at_end(p: Play) -> tuple[Command, int]:
    return StartBargain("a"), END


def _help_at_end(p: Play) -> tuple[Command, int]:
    bid = p.start("a", END - MINUTE)
    return HelpBargain("b", bid), END


def _help_unknown_before_start(p: Play) -> tuple[Command, int]:
    # Activity is checked first, even before the bargain is looked up.
    return HelpBargain("b", "b-missing"), START - 1


def _start_limit(p: Play) -> tuple[Command, int]:
    p.start("a")
    p.start("a")
    return StartBargain("a"), NOW


def _start_limit_counts_bought(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.to_floor(bid)
    p.buy("a", bid)
    p.start("a")
    return StartBargain("a"), NOW


def _start_limit_counts_floor_reached(p: Play) -> tuple[Command, int]:
    p.to_floor(p.start("a"))
    p.start("a")
    return StartBargain("a"), NOW


def _start_no_stock(p: Play) -> tuple[Command, int]:
    return StartBargain("a"), NOW


def _start_stock_all_held(p: Play) -> tuple[Command, int]:
    p.to_floor(p.start("a"))
    assert p.state.stock_left == 0
    return StartBargain("b"), NOW


def _help_unknown(p: Play) -> tuple[Command, int]:
    p.start("a")
    return HelpBargain("b", "b-missing"), NOW


def _buy_unknown(p: Play) -> tuple[Command, int]:
    return BuyBargain("a", "b-missing"), NOW


def _help_own(p: Play) -> tuple[Command, int]:
    return HelpBargain("a", p.start("a")), NOW


def _help_twice(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.help("b", bid)
    return HelpBargain("b", bid), NOW


def _helper_again_at_floor(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.to_floor(bid)
    return HelpBargain("h0", bid), NOW


def _help_at_floor(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.to_floor(bid)
    return HelpBargain("z", bid), NOW


def _help_bought(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.help("b", bid)
    p.buy("a", bid)
    return HelpBargain("c", bid), NOW


def _help_expired(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.expire(bid, NOW + LIMIT)
    # Even a time before the deadline cannot reopen an expired bargain.
    return HelpBargain("b", bid), NOW + MINUTE


def _help_at_deadline(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    return HelpBargain("b", bid), p.b(bid).expires_at


def _help_limit_campaign(p: Play) -> tuple[Command, int]:
    b1, b2, b3 = p.start("a"), p.start("b"), p.start("c")
    p.help("z", b1)
    p.help("z", b2, NOW + DAY)  # another day: only the campaign's limit counts
    return HelpBargain("z", b3), NOW + 2 * DAY


def _help_limit_day(p: Play) -> tuple[Command, int]:
    b1, b2, b3 = p.start("a"), p.start("b"), p.start("c")
    p.help("z", b1)
    p.help("z", b2)
    return HelpBargain("z", b3), NOW + MINUTE


def _buy_by_other(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.to_floor(bid)
    return BuyBargain("h0", bid), NOW


def _buy_before_floor(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.help("b", bid)
    return BuyBargain("a", bid), NOW


def _buy_bought(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.to_floor(bid)
    p.buy("a", bid)
    return BuyBargain("a", bid), NOW


def _buy_expired(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.expire(bid, NOW + LIMIT)
    return BuyBargain("a", bid), NOW + MINUTE


def _buy_after_hold_before_timer(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    p.to_floor(bid)
    hold = p.b(bid).hold_until
    assert hold == NOW + PAY
    return BuyBargain("a", bid), hold


def _buy_open_at_deadline(p: Play) -> tuple[Command, int]:
    bid = p.start("a")
    return BuyBargain("a", bid), p.b(bid).expires_at


def _buy_unheld_no_stock(p: Play) -> tuple[Command, int]:
    b1, b2 = p.start("a"), p.start("b")
    p.to_floor(b1, prefix="x")  # holds the only unit
    p.to_floor(b2, prefix="y")  # reaches its floor holding nothing
    assert not p.b(b2).held and p.b(b2).hold_until is None
    return BuyBargain("b", b2), NOW


def _buy_unheld_after_deadline(p: Play) -> tuple[Command, int]:
    b1, b2 = p.start("a"), p.start("b")
    p.to_floor(b1, prefix="x")
    p.to_floor(b2, prefix="y")
    p.expire(b1, NOW + PAY)  # the unit comes back, but b2's own deadline is past
    return BuyBargain("b", b2), p.b(b2).expires_at


def _buy_early_no_stock(p: Play) -> tuple[Command, int]:
    b1, b2 = p.start("a"), p.start("b")
    p.to_floor(b1)
    return BuyBargain("b", b2), NOW


REFUSALS: dict[str, Refusal] = {
    "start before start": Refusal({}, _start_before_start, "campaign_not_active"),
    "start at end": Refusal({}, _start_at_end, "campaign_not_active"),
    "help at end": Refusal({}, _help_at_end, "campaign_not_active"),
    "help before start": Refusal({}, _help_unknown_before_start, "campaign_not_active"),
    "start limit": Refusal({}, _start_limit, "limit_reached"),
    "start limit counts bought": Refusal({}, _start_limit_counts_bought, "limit_reached"),
    "start limit counts floor reached": Refusal(
        {}, _start_limit_counts_floor_reached, "limit_reached"),
    "start with zero stock": Refusal({"stock": 0}, _start_no_stock, "out_of_stock"),
    "start with all stock held": Refusal({"stock": 1}, _start_stock_all_held, "out_of_stock"),
    "help unknown bargain": Refusal({}, _help_unknown, "not_found"),
    "buy unknown bargain": Refusal({}, _buy_unknown, "not_found"),
    "help own bargain": Refusal({}, _help_own, "own_bargain"),
    "help twice": Refusal({}, _help_twice, "already_helped"),
    "helper helps again at the floor": Refusal({}, _helper_again_at_floor, "already_helped"),
    "help at the floor": Refusal({}, _help_at_floor, "bargain_closed"),
    "help a bought bargain": Refusal({"buy_before_floor": True}, _help_bought,
                                     "bargain_closed"),
    "help an expired bargain": Refusal({}, _help_expired, "bargain_closed"),
    "help at deadline before timer": Refusal({}, _help_at_deadline, "bargain_closed"),
    "help limit per campaign": Refusal({"max_helps_per_campaign": 2,
                                        "time_limit_ms": 3 * DAY}, _help_limit_campaign,
                                       "limit_reached"),
    "help limit per day": Refusal({"max_helps_per_day": 2}, _help_limit_day, "limit_reached"),
    "buy by another user": Refusal({}, _buy_by_other, "forbidden"),
    "buy before the floor": Refusal({}, _buy_before_floor, "floor_not_reached"),
    "buy twice": Refusal({}, _buy_bought, "bargain_closed"),
    "buy an expired bargain": Refusal({}, _buy_expired, "bargain_closed"),
    "buy after the hold before timer": Refusal({}, _buy_after_hold_before_timer,
                                               "bargain_closed"),
    "buy early at deadline": Refusal({"buy_before_floor": True}, _buy_open_at_deadline,
                                     "bargain_closed"),
    "buy at unheld floor, no stock": Refusal({"stock": 1}, _buy_unheld_no_stock,
                                             "out_of_stock"),
    "buy at unheld floor after deadline": Refusal({"stock": 1}, _buy_unheld_after_deadline,
                                                  "bargain_closed"),
    "buy early, no stock": Refusal({"stock": 1, "buy_before_floor": True},
                                   _buy_early_no_stock, "out_of_stock"),
}


@pytest.mark.parametrize("case", list(REFUSALS.values()), ids=list(REFUSALS))
def test_refusals(case: Refusal) -> None:
    play = Play(make_campaign(**case.campaign))
    command, now = case.setup(play)
    before = play.state
    with pytest.raises(GameError) as info:
        decide(play.state, command, now, play.rng)
    assert info.value.code == case.code
    assert info.value.message
    # The seam refuses the same way and the (immutable) state is untouched.
    with pytest.raises(GameError) as again:
        GAME.decide(play.state, command, now, play.rng)
    assert again.value.code == case.code
    assert play.state is before


def test_expire_is_never_refused() -> None:
    play = Play()
    bid = play.start("a", END - MINUTE)
    assert decide(play.state, ExpireBargain("b-missing"), END + DAY, play.rng) == []
    assert [e.type for e in play.expire(bid, END + DAY)] == ["bargain_expired"]


# --- status transitions ---------------------------------------------------------------


def test_start_event_and_state() -> None:
    play = Play()
    events = play.do(StartBargain("alice"), NOW)
    assert len(events) == 1
    started = events[0]
    assert isinstance(started, BargainStarted)
    assert (started.seq, started.at, started.initiator, started.list_price,
            started.floor_price, started.helpers_to_floor, started.first_cut,
            started.price, started.expires_at) == (
        1, NOW, "alice", LIST_PRICE, FLOOR_PRICE, 3, 0, LIST_PRICE, NOW + LIMIT)
    assert 0 <= started.seed < 2**64
    b = play.b(started.bargain)
    assert (b.status, b.initiator, b.price, b.helpers, b.helpers_left, b.hold_until,
            b.version, b.created_at, b.seed) == (
        BargainStatus.OPEN, "alice", LIST_PRICE, (), 3, None, 1, NOW, started.seed)
    # Starting takes no stock: only the floor (or a purchase) does.
    assert play.state.stock_left == 10
    assert play.state.started == {"alice": 1}
    assert play.state.version == 1
    assert re.fullmatch(r"b[0-9a-f]{12}", b.id)


@pytest.mark.parametrize(("now", "expected"), [
    pytest.param(NOW, NOW + LIMIT, id="early"),
    pytest.param(END - LIMIT, END, id="exactly-at-end"),
    pytest.param(END - LIMIT + 1, END, id="clamped"),
    pytest.param(END - 1, END, id="last-ms"),
])
def test_expires_at_is_min_of_time_limit_and_campaign_end(now: int, expected: int) -> None:
    play = Play()
    assert play.b(play.start("a", now)).expires_at == expected


def test_ids_and_seeds_come_from_the_rng() -> None:
    campaign = make_campaign(max_bargains_started=20)
    a, b = Play(campaign, seed=7), Play(campaign, seed=7)
    ids = [a.start("u") for _ in range(20)]
    assert ids == [b.start("u") for _ in range(20)]
    assert len(set(ids)) == 20
    assert [a.b(i).seed for i in ids] == [b.b(i).seed for i in ids]
    assert len({a.b(i).seed for i in ids}) == 20


def test_id_collision_draws_again() -> None:
    play = Play(seed=3)
    first = play.start("a")
    # Replaying the same rng stream would draw `first` again; decide must skip it.
    events = decide(play.state, StartBargain("b"), NOW, random.Random(3))
    assert events[0].bargain != first


def test_helps_down_to_the_floor_hold_stock() -> None:
    play = Play()
    bid = play.start("a")
    seed = play.b(bid).seed
    first, cuts = replay_cuts(seed, LIST_PRICE, FLOOR_PRICE, 3, [False] * 3)
    assert first == 0
    e1 = play.help("b", bid, NOW + 1)
    assert e1 == [BargainHelped(bargain=bid, seq=2, at=NOW + 1, helper="b", cut=cuts[0],
                                price=LIST_PRICE - cuts[0])]
    play.help("c", bid, NOW + 2)
    assert play.b(bid).status is BargainStatus.OPEN
    assert play.b(bid).helpers_left == 1
    last = play.help("d", bid, NOW + 3)
    assert last == [
        BargainHelped(bargain=bid, seq=4, at=NOW + 3, helper="d", cut=cuts[2],
                      price=FLOOR_PRICE),
        FloorReached(bargain=bid, seq=5, at=NOW + 3, hold_until=NOW + 3 + PAY, held=True),
    ]
    b = play.b(bid)
    assert b.status is BargainStatus.FLOOR_REACHED
    assert b.price == FLOOR_PRICE
    assert b.helpers == (("b", cuts[0], NOW + 1), ("c", cuts[1], NOW + 2),
                         ("d", cuts[2], NOW + 3))
    assert b.helpers_left == 0
    assert (b.hold_until, b.held, b.version, b.deadline()) == (
        NOW + 3 + PAY, True, 5, NOW + 3 + PAY)
    assert play.state.stock_left == 9
    assert play.state.helps == {"b": 1, "c": 1, "d": 1}


def test_buy_at_the_floor_takes_the_held_unit() -> None:
    play = Play()
    bid = play.start("a")
    play.to_floor(bid)
    assert play.state.stock_left == 9
    events = play.buy("a", bid, NOW + PAY - 1)
    assert events == [BargainBought(bargain=bid, seq=6, at=NOW + PAY - 1, buyer="a",
                                    price=FLOOR_PRICE, sku="POT-1")]
    b = play.b(bid)
    assert b.status is BargainStatus.BOUGHT
    assert b.deadline() is None
    assert play.state.stock_left == 9  # the held unit is the one sold
    assert (play.state.held(), play.state.bought()) == (0, 1)
    # Bought is final: its timer firing later changes nothing.
    assert play.expire(bid, NOW + PAY) == []
    assert play.expire(bid, END + DAY) == []


def test_buy_before_the_floor_where_allowed_takes_stock_at_its_price() -> None:
    play = Play(make_campaign(buy_before_floor=True))
    bid = play.start("a")
    play.help("b", bid)
    price = play.b(bid).price
    assert FLOOR_PRICE < price < LIST_PRICE
    [bought] = play.buy("a", bid)
    assert isinstance(bought, BargainBought)
    assert bought.price == price
    assert play.state.stock_left == 9
    assert play.b(bid).hold_until is None
    # A bargain bought straight away is bought at the list price.
    other = play.start("a")
    [at_list] = play.buy("a", other)
    assert isinstance(at_list, BargainBought)
    assert at_list.price == LIST_PRICE
    assert play.state.stock_left == 8


def test_held_floor_expires_at_hold_until_and_releases_the_unit() -> None:
    play = Play()
    bid = play.start("a")
    play.to_floor(bid)
    assert play.expire(bid, NOW + PAY - 1) == []
    assert play.expire(bid, NOW + PAY) == [
        BargainExpired(bargain=bid, seq=6, at=NOW + PAY, released=True)]
    assert play.b(bid).status is BargainStatus.EXPIRED
    assert play.state.stock_left == 10
    assert dict(play.state.started) == {}  # the place is given back
    assert play.expire(bid, END) == []


def test_hold_can_outlast_the_campaign_and_the_bargain_deadline() -> None:
    """A floor reached at the last minute is buyable through its whole payment window."""
    play = Play()
    bid = play.start("a", END - LIMIT)
    play.to_floor(bid, END - MINUTE)
    b = play.b(bid)
    assert b.expires_at == END
    assert b.hold_until == END - MINUTE + PAY > END
    assert play.expire(bid, END) == []  # its deadline is now the hold's
    assert [e.type for e in play.buy("a", bid, END + PAY - MINUTE - 1)] == ["bargain_bought"]


def test_unheld_floor_waits_for_its_deadline_and_may_buy_a_returned_unit() -> None:
    play = Play(make_campaign(stock=1))
    b1, b2 = play.start("a"), play.start("b")
    play.to_floor(b1, prefix="x")
    last = play.help("y0", b2) + play.help("y1", b2) + play.help("y2", b2, NOW + 5)
    assert last[-1] == FloorReached(bargain=b2, seq=5, at=NOW + 5, hold_until=None,
                                    held=False)
    b = play.b(b2)
    assert (b.status, b.held, b.hold_until, b.deadline()) == (
        BargainStatus.FLOOR_REACHED, False, None, b.expires_at)
    assert (play.state.stock_left, play.state.held()) == (0, 1)
    play.expire(b1, NOW + PAY)  # b1 unbought: its unit comes back
    assert play.state.stock_left == 1
    [bought] = play.buy("b", b2, NOW + PAY + 1)
    assert isinstance(bought, BargainBought) and bought.price == FLOOR_PRICE
    assert play.state.stock_left == 0


def test_unheld_floor_expires_at_its_own_deadline_releasing_nothing() -> None:
    play = Play(make_campaign(stock=1))
    b1, b2 = play.start("a"), play.start("b")
    play.to_floor(b1, prefix="x")
    play.to_floor(b2, prefix="y")
    deadline = play.b(b2).expires_at
    assert play.expire(b2, NOW + PAY) == []  # no hold of its own to run out
    assert play.expire(b2, deadline) == [
        BargainExpired(bargain=b2, seq=6, at=deadline, released=False)]
    assert play.state.stock_left == 0  # b1 still holds the unit


def test_open_bargain_expires_at_its_deadline() -> None:
    play = Play()
    bid = play.start("a")
    play.help("b", bid)
    deadline = play.b(bid).expires_at
    assert play.expire(bid, deadline - 1) == []
    assert play.expire(bid, deadline + 5) == [
        BargainExpired(bargain=bid, seq=3, at=deadline + 5, released=False)]
    assert play.state.stock_left == 10
    assert play.state.helps == {"b": 1}  # a help given stays given


def test_an_expired_bargain_gives_its_start_back() -> None:
    play = Play(make_campaign(max_bargains_started=1))
    bid = play.start("a")
    play.expire(bid, NOW + LIMIT)
    again = play.start("a", NOW + LIMIT)
    assert again != bid
    assert play.state.started == {"a": 1}


def test_first_cut_is_the_initiators_own() -> None:
    play = Play(make_campaign(first_cut=(0.2, 0.4)))
    bid = play.start("a")
    b = play.b(bid)
    first = b.first_cut
    distance = LIST_PRICE - FLOOR_PRICE
    assert 0.2 * distance <= first <= 0.4 * distance
    assert b.price == LIST_PRICE - first
    assert b.helpers_left == 3  # the first cut is no helper's
    assert draw_first_cut(b.seed, distance, 3, (0.2, 0.4)) == first
    play.to_floor(bid)
    assert play.b(bid).price == FLOOR_PRICE
    assert replay_events(play.campaign, play.log)[0] == first


def test_newcomer_cut_takes_its_share_of_the_distance_left() -> None:
    play = Play(make_campaign(newcomer_cut=(0.5, 0.6), helpers_to_floor=5))
    bid = play.start("a")
    [helped] = play.help("new", bid, newcomer=True)
    assert isinstance(helped, BargainHelped) and helped.newcomer
    distance = LIST_PRICE - FLOOR_PRICE
    assert 0.5 * distance <= helped.cut <= 0.6 * distance
    # Without a newcomer range in the campaign the flag draws the usual cut.
    plain = Play(make_campaign(helpers_to_floor=5))
    bid = plain.start("a")
    [usual] = plain.help("new", bid, newcomer=True)
    assert isinstance(usual, BargainHelped)
    seed = plain.b(bid).seed
    assert usual.cut == draw_cut(seed, 1, distance, 5) <= 2 * distance // 5


def test_help_day_follows_the_campaign_time_zone() -> None:
    midnight = START + DAY  # 2026-01-02T00:00:00+08:00 (16:00 UTC on the 1st)
    for zone, second_day_ok in (("Asia/Shanghai", True), ("UTC", False)):
        play = Play(make_campaign(max_helps_per_day=1, time_zone=zone))
        b1, b2 = play.start("a"), play.start("b")
        play.help("z", b1, midnight - 1)
        if second_day_ok:
            assert [e.type for e in play.help("z", b2, midnight)] == ["bargain_helped"]
            assert set(play.state.helps_day) == {
                ("z", local_day(midnight - 1, play.campaign.zone)),
                ("z", local_day(midnight, play.campaign.zone))}
        else:
            with pytest.raises(GameError) as info:
                decide(play.state, HelpBargain("z", b2), midnight, play.rng)
            assert info.value.code == "limit_reached"


def test_local_day() -> None:
    zone = make_campaign().zone
    assert datetime(2026, 1, 1).toordinal() == local_day(START, zone)
    assert local_day(START - 1, zone) == local_day(START, zone) - 1
    assert local_day(START + DAY - 1, zone) == local_day(START, zone)


def test_limits_are_per_user() -> None:
    play = Play(make_campaign(max_helps_per_day=1))
    b1, b2 = play.start("a"), play.start("b")
    play.help("z", b1)
    play.help("y", b1)
    play.help("y", b2, START + DAY)  # the next day in Shanghai, before b2 expires
    # The initiator of one bargain may help another's.
    play.help("a", b2, START + DAY)
    assert play.state.helps == {"z": 1, "y": 2, "a": 1}
    assert play.state.started == {"a": 1, "b": 1}


def test_seqs_are_per_bargain_and_rise_by_one() -> None:
    play = Play(make_campaign(max_helps_per_day=9))
    b1, b2 = play.start("a"), play.start("b")
    play.help("x", b1)
    play.help("x", b2)
    play.to_floor(b1)
    play.buy("a", b1)
    play.expire(b2, NOW + LIMIT)
    seqs: dict[str, list[int]] = defaultdict(list)
    for e in play.log:
        seqs[e.bargain].append(e.seq)
    assert seqs == {b1: [1, 2, 3, 4, 5, 6], b2: [1, 2, 3]}
    assert play.state.version == len(play.log) == 9


def test_bargain_price_frozen_at_start() -> None:
    """A campaign's price change never touches a started bargain's numbers."""
    play = Play()
    bid = play.start("a")
    product = replace(play.campaign.product, list_price=50_000, floor_price=1)
    play.state = replace(play.state, campaign=replace(play.campaign, product=product,
                                                      helpers_to_floor=50))
    play.help("h0", bid)
    play.help("h1", bid)
    events = play.help("h2", bid)
    assert events[-1].type == "floor_reached"
    assert play.b(bid).price == FLOOR_PRICE


# --- cuts -------------------------------------------------------------------------------

shares = st.tuples(st.integers(1, 98), st.integers(0, 98)).map(
    lambda t: (t[0] / 100, min(t[0] + t[1], 99) / 100))


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 100), floor=st.integers(0, 10**6),
       extra=st.one_of(st.integers(0, 5), st.integers(0, 10**6)),
       seed=st.integers(0, 2**64 - 1), first=st.none() | shares,
       newcomer=st.none() | shares, flags=st.lists(st.booleans(), min_size=100,
                                                   max_size=100))
def test_n_distinct_helpers_end_exactly_at_the_floor(
    n: int, floor: int, extra: int, seed: int, first: tuple[float, float] | None,
    newcomer: tuple[float, float] | None, flags: list[bool],
) -> None:
    distance = n + (1 if first else 0) + extra
    list_price = floor + distance
    first_cut, cuts = replay_cuts(seed, list_price, floor, n, flags[:n], first, newcomer)
    assert len(cuts) == n
    assert all(cut >= 1 for cut in cuts)
    assert first_cut + sum(cuts) == distance
    prices = [list_price - first_cut - done for done in accumulate(cuts)]
    assert all(price > floor for price in prices[:-1]), "the floor came early"
    assert prices[-1] == floor
    if first is None:
        assert first_cut == 0
    else:
        assert 1 <= first_cut <= distance - n
        lo = math.ceil(Fraction(str(first[0])) * distance)
        hi = math.floor(Fraction(str(first[1])) * distance)
        if 1 <= lo <= hi <= distance - n:  # the share range fits: the cut is in it
            assert lo <= first_cut <= hi
    # Replay is identical: the same seed and order give the same cuts.
    assert replay_cuts(seed, list_price, floor, n, flags[:n], first, newcomer) == (
        first_cut, cuts)


@settings(max_examples=300, deadline=None)
@given(seed=st.integers(0, 2**64 - 1), left=st.integers(2, 100),
       extra=st.one_of(st.integers(0, 5), st.integers(0, 10**7)), k=st.integers(1, 100),
       share=st.none() | shares)
def test_a_cut_stays_within_its_bounds(
    seed: int, left: int, extra: int, k: int, share: tuple[float, float] | None
) -> None:
    remaining = left + extra
    cut = draw_cut(seed, k, remaining, left, share)
    most = remaining - (left - 1)
    assert 1 <= cut <= most  # every later helper still gets 1 fen
    if share is None:
        assert cut <= 2 * remaining // left  # at most twice the fair share
    else:
        lo = math.ceil(Fraction(str(share[0])) * remaining)
        hi = math.floor(Fraction(str(share[1])) * remaining)
        if 1 <= lo <= hi <= most:
            assert lo <= cut <= hi
        assert cut >= min(max(lo, 1), most)
    assert draw_cut(seed, k, remaining, left, share) == cut
    assert draw_cut(seed, k, remaining, 1, share) == remaining  # the last takes the rest


def test_cut_refuses_impossible_splits() -> None:
    with pytest.raises(ValueError):
        draw_cut(1, 1, 2, 3)
    with pytest.raises(ValueError):
        draw_cut(1, 1, 5, 0)
    with pytest.raises(ValueError):
        draw_first_cut(1, 3, 3, (0.1, 0.2))


def test_stored_cuts_never_change() -> None:
    """Known answers: an operator replays old events with new code and Python versions
    (string seeds hash with SHA-512, the same everywhere)."""
    seed = 12345678901234567890
    assert replay_cuts(seed, 19_900, 9_900, 10, [False] * 10) == (
        0, [737, 1796, 738, 1088, 243, 1443, 759, 969, 764, 1463])
    assert replay_cuts(seed, 19_900, 9_900, 10, [False, True, False, True] + [False] * 6,
                       (0.1, 0.2), (0.3, 0.5)) == (
        1296, [737, 3922, 369, 1646, 122, 361, 380, 243, 191, 733])


def test_cuts_do_not_depend_on_the_global_random_or_owner_stream() -> None:
    play = Play()
    bid = play.start("a")
    random.seed(1)
    one = decide(play.state, HelpBargain("b", bid), NOW, random.Random(1))
    random.seed(2)
    two = decide(play.state, HelpBargain("b", bid), NOW, random.Random(2))
    assert one == two


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(2, 100), extra=st.integers(0, 500), seed=st.integers(0, 2**32),
       first=st.none() | shares, newcomer=st.none() | shares,
       flags=st.lists(st.booleans(), min_size=100, max_size=100))
def test_played_bargain_reaches_floor_at_the_configured_helper(
    n: int, extra: int, seed: int, first: tuple[float, float] | None,
    newcomer: tuple[float, float] | None, flags: list[bool],
) -> None:
    floor = 100
    list_price = floor + n + (1 if first else 0) + extra
    campaign = make_campaign(
        product=BargainProduct("S", "S", list_price, floor), helpers_to_floor=n,
        first_cut=first, newcomer_cut=newcomer, max_helps_per_day=1)
    play = Play(campaign, seed)
    bid = play.start("a")
    for i in range(n):
        assert play.b(bid).status is BargainStatus.OPEN
        events = play.help(f"h{i}", bid, newcomer=flags[i])
        assert [e.type for e in events] == (
            ["bargain_helped", "floor_reached"] if i == n - 1 else ["bargain_helped"])
        assert play.b(bid).price >= floor
    assert play.b(bid).price == floor
    # The operator's replay from the stored events is the bargain as it happened.
    stored = [json.loads(json.dumps(GAME.applied(campaign, play.state, e).data))
              for e in play.log]
    first_cut, cuts = replay_events(campaign, stored)
    assert first_cut == play.b(bid).first_cut
    assert cuts == [cut for _, cut, _ in play.b(bid).helpers]


# --- events ---------------------------------------------------------------------------

ONE_OF_EACH: list[Event] = [
    BargainStarted(bargain="b1", seq=1, at=NOW, initiator="a", list_price=LIST_PRICE,
                   floor_price=FLOOR_PRICE, helpers_to_floor=3, seed=2**64 - 1,
                   expires_at=NOW + LIMIT, first_cut=5, price=LIST_PRICE - 5),
    BargainHelped(bargain="b1", seq=2, at=NOW + 1, helper="h", cut=7, price=19_888,
                  newcomer=True),
    FloorReached(bargain="b1", seq=3, at=NOW + 2, hold_until=NOW + 2 + PAY, held=True),
    FloorReached(bargain="b2", seq=3, at=NOW + 2, hold_until=None, held=False),
    BargainBought(bargain="b1", seq=4, at=NOW + 3, buyer="a", price=FLOOR_PRICE, sku="S"),
    BargainExpired(bargain="b2", seq=4, at=NOW + 4, released=False),
    PurchaseHeld(bargain="b3", seq=4, at=NOW + 5, payment="p" * 30, amount=FLOOR_PRICE,
                 until=NOW + 60_000, unit=False),
    PurchaseLapsed(bargain="b3", seq=5, at=NOW + 60_000, payment="p" * 30),
    PurchaseReleased(bargain="b3", seq=6, at=NOW + 60_001, payment="p" * 30),
    PaymentReturned(bargain="b3", seq=7, at=NOW + 60_002, payment="p" * 30,
                    amount=FLOOR_PRICE),
]


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: f"{e.type}-{e.bargain}")
def test_event_dict_round_trip(event: Event) -> None:
    data = event_to_dict(event)
    assert (data["type"], data["bargain"], data["seq"]) == (event.type, event.bargain,
                                                            event.seq)
    wire = json.loads(json.dumps(data))
    assert wire == data
    assert event_from_dict(wire) == event
    assert GAME.decode(wire) == event


def test_seed_is_stored_as_text() -> None:
    data = event_to_dict(ONE_OF_EACH[0])
    assert data["seed"] == "18446744073709551615"


def test_every_event_type_is_covered() -> None:
    assert {e.type for e in ONE_OF_EACH} == EVENT_TYPES == {
        "bargain_started", "bargain_helped", "floor_reached", "bargain_bought",
        "bargain_expired", "purchase_held", "purchase_lapsed", "purchase_released",
        "payment_returned"}


def test_event_from_dict_rejects_foreign_data() -> None:
    with pytest.raises(KeyError):
        event_from_dict({"type": "bargain_exploded", "bargain": "b", "seq": 1})
    with pytest.raises(TypeError):
        event_from_dict({"type": "bargain_expired", "bargain": "b", "seq": 1, "at": 0,
                         "released": False, "x": 1})


# --- the seam ---------------------------------------------------------------------------


def test_methods_and_routes() -> None:
    by_name = {m.name: m for m in GAME.methods}
    assert GAME.kind == "bargain"
    assert {n: (m.route.verb, m.route.path, m.route.status, m.mutating, m.read)
            for n, m in by_name.items() if m.route} == {
        "bargain.start": ("POST", "/api/bargains/{campaign}", 201, True, None),
        "bargain.help": ("POST", "/api/bargains/{campaign}/{bargain}/help", 200, True, None),
        "bargain.buy": ("POST", "/api/bargains/{campaign}/{bargain}/buy", 200, True, None),
        "bargain.get": ("GET", "/api/bargains/{campaign}/{bargain}", 200, False, "instance"),
    }
    for method in GAME.methods:
        if not method.public:  # the provider's word on a purchase: the server's only
            assert method.route is None and method.on == "payment"
            continue
        assert method.route is not None
        assert set(re.findall(r"{(\w+)}", method.route.path)) == set(method.params)
        assert NEWCOMER not in method.params  # only the gateway may say so
        campaign = method.params["campaign"].pattern
        assert campaign is not None
        assert campaign.fullmatch("teapot") and not campaign.fullmatch("Tea Pot")
    bargain = by_name["bargain.help"].params["bargain"].pattern
    assert bargain is not None and bargain.fullmatch("b0123456789ab")
    assert not bargain.fullmatch("b/../x")


def test_commands_and_fingerprints() -> None:
    assert GAME.command("bargain.start", "u", {"campaign": "c"}) == StartBargain("u")
    assert GAME.command("bargain.help", "u", {"campaign": "c", "bargain": "b1"}) == \
        HelpBargain("u", "b1", False)
    assert GAME.command("bargain.help", "u", {"campaign": "c", "bargain": "b1",
                                              NEWCOMER: True}) == HelpBargain("u", "b1", True)
    assert GAME.command("bargain.help", "u", {"campaign": "c", "bargain": "b1",
                                              NEWCOMER: "yes"}) == HelpBargain("u", "b1")
    assert GAME.command("bargain.buy", "u", {"campaign": "c", "bargain": "b1"}) == \
        BuyBargain("u", "b1")
    for method, params in (("bargain.get", {"bargain": "b1"}), ("bargain.nope", {"bargain": "b"}),
                           ("bargain.help", {})):
        with pytest.raises(GameError) as info:
            GAME.command(method, "u", params)
        assert info.value.code == "invalid_request"
    # The owner prefixes the method; the game tells which bargain.
    assert [GAME.fingerprint(c) for c in (
        StartBargain("u"), HelpBargain("u", "b1"), HelpBargain("u", "b2"),
        BuyBargain("u", "b1"), ExpireBargain("b1"))] == ["", "b1", "b2", "b1", "b1"]
    assert GAME.fingerprint(HelpBargain("u", "b1", True)) == \
        GAME.fingerprint(HelpBargain("u", "b1", False))
    assert GAME.tick("b1") == ExpireBargain("b1")


def _applied_all(play: Play) -> list[Any]:
    """Every logged event's Applied, each with the state right after it."""
    state = initial_state(play.campaign)
    out = []
    for e in play.log:
        state = evolve(state, e)
        out.append(GAME.applied(play.campaign, state, e))
    return out


def test_applied_frames_deals_and_deadlines() -> None:
    play = Play()
    bid = play.start("a")
    play.to_floor(bid)
    play.buy("a", bid, NOW + 1)
    other = play.start("a")
    play.expire(other, NOW + LIMIT)
    applied = _applied_all(play)
    topic = f"bargain:teapot:{bid}"
    assert [(a.instance, a.seq, a.type) for a in applied] == [
        (bid, 1, "bargain_started"), (bid, 2, "bargain_helped"), (bid, 3, "bargain_helped"),
        (bid, 4, "bargain_helped"), (bid, 5, "floor_reached"), (bid, 6, "bargain_bought"),
        (other, 1, "bargain_started"), (other, 2, "bargain_expired")]
    for a, e in zip(applied, play.log, strict=True):
        assert a.data == event_to_dict(e)
        assert GAME.decode(json.loads(json.dumps(a.data))) == e
        frame = a.frames[0]
        assert frame.topic == f"bargain:teapot:{a.instance}"
        assert parse_topic(frame.topic) is not None
        assert frame.seq == a.seq == frame.data["bargain"]["seq"]
        assert frame.data["campaign"] == "teapot"
        assert frame.data["type"] == a.type
        json.dumps(frame.data)
    # Each help tells the initiator on their own topic.
    helps = [a for a in applied if a.type == "bargain_helped"]
    b = play.b(bid)
    for a, (helper, cut, _) in zip(helps, b.helpers, strict=True):
        assert len(a.frames) == 2
        own = a.frames[1]
        assert (own.topic, own.seq) == ("user:a", 0)
        assert own.data == {"type": "bargain_helped", "campaign": "teapot", "bargain": bid,
                            "helper": helper, "cut": cut, "price": a.data["price"]}
    assert [len(a.frames) for a in applied if a.type != "bargain_helped"] == [1] * 5
    # A watcher that merges each frame's summary into its B and appends each help's
    # helper holds the bargain after the last frame; no frame carries the helper list.
    watched: dict[str, Any] = {"helpers": []}
    for a in applied:
        frame = a.frames[0]
        if frame.topic != topic:
            continue
        assert "helpers" not in frame.data["bargain"]
        watched.update(frame.data["bargain"])
        if frame.data["type"] == "bargain_helped":
            watched["helpers"].append({"user": frame.data["helper"],
                                       "cut": frame.data["cut"], "at": iso(frame.data["at"])})
    assert watched == bargain_view("teapot", b)
    # The purchase is the deal; nothing else hands the pipeline anything.
    assert [a.outbox for a in applied] == [None] * 5 + [
        Outbox("deal", (Line(user="a", sku="POT-1", amount=FLOOR_PRICE, instance=bid,
                             line="buy"),))] + [None] * 2
    assert [a.deadline for a in applied] == [
        (NOW + LIMIT, bid), None, None, None, (NOW + PAY, bid), None,
        (NOW + LIMIT, other), None]


def test_unheld_floor_rearms_the_bargain_deadline() -> None:
    play = Play(make_campaign(stock=1))
    b1, b2 = play.start("a"), play.start("b")
    play.to_floor(b1, prefix="x")
    play.to_floor(b2, prefix="y")
    floors = [a for a in _applied_all(play) if a.type == "floor_reached"]
    assert [a.deadline for a in floors] == [(NOW + PAY, b1), (NOW + LIMIT, b2)]
    assert sorted(GAME.deadlines(play.state)) == [(NOW + PAY, b1), (NOW + LIMIT, b2)]


def _answer(campaign: BargainCampaign, state: BargainState, command: Command,
            events: Sequence[Event]) -> Any:
    """A command's answer, decoded (games answer with JSON text)."""
    return json.loads(GAME.answer(campaign, state, command, events, NOW))


def test_answers() -> None:
    play = Play()
    state0 = play.state
    start = StartBargain("a")
    events = decide(state0, start, NOW, play.rng)
    state = fold(state0, events)
    bid = events[0].bargain
    assert _answer(play.campaign, state, start, events) == {
        "bargain": bargain_view("teapot", state.bargains[bid])}
    play.state, play.log = state, list(events)
    for user in ("h0", "h1"):
        help_ = HelpBargain(user, bid)
        events = decide(play.state, help_, NOW, play.rng)
        play.state = fold(play.state, events)
        answer = _answer(play.campaign, play.state, help_, events)
        assert answer == {"bargain": bargain_view("teapot", play.b(bid)),
                          "cut": play.b(bid).helpers[-1][1]}
    help_ = HelpBargain("h2", bid)
    events = decide(play.state, help_, NOW, play.rng)
    play.state = fold(play.state, events)
    answer = _answer(play.campaign, play.state, help_, events)
    assert answer["bargain"]["status"] == "floor_reached"
    assert answer["bargain"]["price"] == FLOOR_PRICE
    assert answer["cut"] == play.b(bid).helpers[-1][1]
    buy = BuyBargain("a", bid)
    events = decide(play.state, buy, NOW, play.rng)
    play.state = fold(play.state, events)
    assert _answer(play.campaign, play.state, buy, events) == {
        "bargain": bargain_view("teapot", play.b(bid)),
        "order": {"campaign": "teapot", "bargain": bid, "sku": "POT-1",
                  "amount": FLOOR_PRICE, "status": "paid"}}
    expire = ExpireBargain(bid)
    assert _answer(play.campaign, play.state, expire, []) == {
        "bargain": bargain_view("teapot", play.b(bid))}
    assert _answer(play.campaign, play.state, ExpireBargain("nope"), []) == {
        "bargain": None}


def test_bargain_view() -> None:
    play = Play()
    bid = play.start("a", NOW)
    play.help("h0", bid, NOW + 1)
    b = play.b(bid)
    view = bargain_view("teapot", b)
    assert view == {
        "id": bid, "campaign": "teapot", "status": "open", "initiator": "a",
        "list_price": LIST_PRICE, "floor_price": FLOOR_PRICE, "price": b.price,
        "helpers": [{"user": "h0", "cut": LIST_PRICE - b.price, "at": iso(NOW + 1)}],
        "helpers_to_floor": 3, "helpers_left": 2, "created_at": iso(NOW),
        "expires_at": iso(NOW + LIMIT), "hold_until": None, "payment": None, "seq": 2,
    }
    assert view["created_at"] == "2025-12-31T17:00:00.000Z"
    assert "seed" not in view
    json.dumps(view)


# --- read model -------------------------------------------------------------------------


def stored(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows as the storage layer hands them back: by column name, jsonb through JSON."""
    names = [c.name for c in READ_MODEL.columns]
    out = []
    for row in rows:
        record = dict(zip(names, row, strict=True))
        record["helpers"] = json.loads(json.dumps(record["helpers"]))
        out.append(record)
    return out


def sample_play() -> Play:
    play = Play(make_campaign(stock=2, first_cut=(0.1, 0.2), buy_before_floor=True,
                              max_helps_per_day=9))
    b1, b2, b3, b4 = play.start("a"), play.start("b"), play.start("c"), play.start("a")
    play.to_floor(b1, NOW + 1)  # held
    play.help("h0", b2, NOW + 2)
    play.to_floor(b3, NOW + 3, prefix="k")  # held: the stock is now all held
    play.expire(b3, NOW + 3 + PAY)  # released
    play.buy("c", play.start("c", START + DAY), START + DAY)  # bought early, at list price
    play.help("h9", b4, START + DAY + 1)  # the next day in Shanghai
    return play


def test_rows_rebuild_round_trip() -> None:
    play = sample_play()
    state = play.state
    rows = GAME.rows(play.campaign, state, state.bargains)
    with pytest.raises(KeyError):
        GAME.rows(play.campaign, state, ["gone"])
    assert len(rows) == len(state.bargains) == 5
    assert all(len(row) == len(READ_MODEL.columns) for row in rows)
    json.dumps(rows)
    records = stored(rows)
    assert GAME.rebuild(play.campaign, records, state.version) == state
    assert GAME.rebuild(play.campaign, records, state.version + 1) is None
    assert GAME.rebuild(play.campaign, records[1:], state.version) is None
    foreign = [{**records[0], "campaign": "other"}, *records[1:]]
    assert GAME.rebuild(play.campaign, foreign, state.version) is None
    broken = [{k: v for k, v in records[0].items() if k != "seed"}, *records[1:]]
    assert GAME.rebuild(play.campaign, broken, state.version) is None
    assert GAME.rebuild(play.campaign, [], 0) == initial_state(play.campaign)
    for record in records:
        assert GAME.view(record) == bargain_view("teapot", state.bargains[record["id"]])
    # Instances named twice (a command's several events) make one row each.
    bid = next(iter(state.bargains))
    assert len(GAME.rows(play.campaign, state, [bid, bid])) == 1


def test_rows_read_back_with_datetimes() -> None:
    """A row whose times came back as datetimes reads the same (to the millisecond)."""
    play = sample_play()
    records = stored(GAME.rows(play.campaign, play.state, play.state.bargains))
    for record in records:
        for name in ("created_at", "expires_at", "hold_until"):
            if record[name] is not None:
                record[name] = datetime.fromtimestamp(record[name] / 1000, UTC)
    assert GAME.rebuild(play.campaign, records, play.state.version) == play.state


def test_read_model_matches_the_migration() -> None:
    sql = MIGRATION.read_text(encoding="utf-8")
    body = sql[sql.index("CREATE TABLE bargains"):]
    found = dict(re.findall(r"^\s{4}(\w+)\s+(\w+(?:\[\])?)", body, re.M))
    # Columns later migrations add.
    later = MIGRATION.with_name("0012_bargain_purchases.sql").read_text(encoding="utf-8")
    found |= dict(re.findall(r"ALTER TABLE bargains ADD COLUMN (\w+) (\w+)", later))
    for column in READ_MODEL.columns:
        assert found.get(column.name) == column.sql_type, column.name
    assert [c.name for c in READ_MODEL.columns[:2]] == ["campaign", "id"]
    assert {"status", "expires_at"} <= {c.name for c in READ_MODEL.columns}
    assert (READ_MODEL.table, READ_MODEL.id_param, READ_MODEL.view_key) == (
        "bargains", "bargain", "bargain")
    assert "PRIMARY KEY (campaign, id)" in sql
    assert re.search(r"ON bargains \(campaign, expires_at\)\s+WHERE status IN "
                     r"\('open', 'floor_reached'\)", sql)


def test_release_lets_go_of_a_finished_campaign() -> None:
    play = Play()
    bid = play.start("a", END - HOUR)
    play.to_floor(bid, END - MINUTE)  # held past the end
    state = play.state
    assert GAME.release(play.campaign, state, END - 1) is state  # still running
    assert GAME.release(play.campaign, state, END + 1) is state  # a hold is live
    play.expire(bid, END - MINUTE + PAY)
    state = play.state
    # Kept while its help answers may be asked for again (a day, see GAME.note).
    assert GAME.release(play.campaign, state, END - MINUTE + PAY) is state
    assert GAME.release(play.campaign, state, END + ANSWERS_KEPT_MS - 1) is state
    released = GAME.release(play.campaign, state, END + ANSWERS_KEPT_MS)
    assert len(released.bargains) == 0
    assert (len(released.started), len(released.helps), len(released.helps_day)) == (0, 0, 0)
    assert (released.stock_left, released.version) == (state.stock_left, state.version)
    assert GAME.release(play.campaign, released, END + 2 * DAY) is released
    with pytest.raises(GameError):
        decide(released, StartBargain("z"), END + 2 * DAY, play.rng)
    assert GAME.summary(released) == {"stock_left": 10, "held": 0, "bought": 0, "live": 0,
                                      "bargains": 0}


def test_summary() -> None:
    play = sample_play()
    assert GAME.summary(play.state) == {"stock_left": 0, "held": 1, "bought": 1, "live": 3,
                                        "bargains": 5}


# --- config -----------------------------------------------------------------------------


def good() -> dict[str, Any]:
    """A `[[campaigns]]` table as tomllib returns it (fresh on every call)."""
    return {
        "id": "teapot", "kind": "bargain", "title": "Teapot",
        "starts_at": "2026-01-01T00:00:00+08:00", "ends_at": "2026-02-01T00:00:00+08:00",
        "product": {"sku": "POT-1", "title": "Teapot", "list_price": 1010,
                    "floor_price": 1000},
        "stock": 50, "helpers_to_floor": 10, "time_limit_seconds": 86_400,
        "max_bargains_started": 2, "max_helps_per_day": 3, "max_helps_per_campaign": 20,
        "time_zone": "Europe/Berlin", "buy_before_floor": True,
        "newcomer_cut": [0.3, 0.5], "pay_within_seconds": 600,
        "commission": {"level1_bps": 800},
    }


def parse(data: dict[str, Any]) -> BargainCampaign:
    return GAME.parse_campaign(Table("shop.toml", "campaigns[1]", data), SHOP)


def test_parse_good_table() -> None:
    campaign = parse(good())
    assert campaign == BargainCampaign(
        id="teapot", title="Teapot", starts_at=START, ends_at=START + 31 * DAY,
        product=BargainProduct("POT-1", "Teapot", 1010, 1000), stock=50,
        helpers_to_floor=10, time_limit_ms=86_400_000, max_bargains_started=2,
        max_helps_per_day=3, max_helps_per_campaign=20, time_zone="Europe/Berlin",
        buy_before_floor=True, first_cut=None, newcomer_cut=(0.3, 0.5),
        pay_within_ms=600_000, pay_to_buy=True, commission=Rates(800, 500))
    public = campaign.public()
    json.dumps(public)
    assert (public["kind"], public["starts_at"], public["pay_within_seconds"],
            public["newcomer_cut"], public["commission"]) == (
        "bargain", "2025-12-31T16:00:00.000Z", 600, [0.3, 0.5],
        {"level1_bps": 800, "level2_bps": 500})


def test_parse_defaults() -> None:
    data = good()
    for key in ("max_bargains_started", "max_helps_per_day", "max_helps_per_campaign",
                "time_zone", "buy_before_floor", "newcomer_cut", "pay_within_seconds",
                "commission"):
        del data[key]
    data["first_cut"] = [0.1, 0.1]
    data["product"]["list_price"] = 1011  # room for the first cut's fen
    campaign = parse_campaign(Table("shop.toml", "campaigns[1]", data), SHOP)
    assert (campaign.max_bargains_started, campaign.max_helps_per_day,
            campaign.max_helps_per_campaign, campaign.time_zone, campaign.buy_before_floor,
            campaign.newcomer_cut, campaign.first_cut, campaign.pay_within_ms,
            campaign.commission, campaign.kind) == (
        1, 5, 50, "Asia/Shanghai", False, None, (0.1, 0.1), 900_000, SHOP, "bargain")
    assert campaign.public()["first_cut"] == [0.1, 0.1]


DELETE = object()


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        for part in parents:
            data = data[part]
        if value is DELETE:
            del data[last]
        else:
            data[last] = value
    return change


def _first_cut_without_room(data: dict[str, Any]) -> None:
    data["first_cut"] = [0.1, 0.2]  # 10 fen for 10 helpers leaves nothing to cut first


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("id-missing", _set("id", DELETE), "id"),
    ("id-bad", _set("id", "Tea Pot"), "id"),
    ("kind-other", _set("kind", "groupbuy"), "kind"),
    ("title-type", _set("title", 5), "title"),
    ("starts-bad", _set("starts_at", "soon"), "starts_at"),
    ("starts-naive", _set("starts_at", "2026-01-01T00:00:00"), "starts_at"),
    ("ends-before", _set("ends_at", "2026-01-01T00:00:00+08:00"), "ends_at"),
    ("product-missing", _set("product", DELETE), "product"),
    ("product-type", _set("product", "pot"), "product"),
    ("sku-empty", _set("product.sku", ""), "product.sku"),
    ("title-missing", _set("product.title", DELETE), "product.title"),
    ("list-zero", _set("product.list_price", 0), "product.list_price"),
    ("list-text", _set("product.list_price", "1010"), "product.list_price"),
    ("floor-negative", _set("product.floor_price", -1), "product.floor_price"),
    ("floor-at-list", _set("product.floor_price", 1010), "product.floor_price"),
    ("floor-float", _set("product.floor_price", 10.5), "product.floor_price"),
    ("product-stray", _set("product.colour", "red"), "product.colour"),
    ("stock-negative", _set("stock", -1), "stock"),
    ("stock-bool", _set("stock", True), "stock"),
    ("helpers-1", _set("helpers_to_floor", 1), "helpers_to_floor"),
    ("helpers-101", _set("helpers_to_floor", 101), "helpers_to_floor"),
    ("helpers-missing", _set("helpers_to_floor", DELETE), "helpers_to_floor"),
    ("helpers-above-distance", _set("helpers_to_floor", 11), "helpers_to_floor"),
    ("first-cut-no-room", _first_cut_without_room, "helpers_to_floor"),
    ("limit-0", _set("time_limit_seconds", 0), "time_limit_seconds"),
    ("limit-long", _set("time_limit_seconds", 30 * 86_400 + 1), "time_limit_seconds"),
    ("started-0", _set("max_bargains_started", 0), "max_bargains_started"),
    ("day-0", _set("max_helps_per_day", 0), "max_helps_per_day"),
    ("campaign-0", _set("max_helps_per_campaign", 0), "max_helps_per_campaign"),
    ("zone-unknown", _set("time_zone", "Mars/Olympus"), "time_zone"),
    ("zone-empty", _set("time_zone", ""), "time_zone"),
    ("zone-path", _set("time_zone", "../etc/passwd"), "time_zone"),
    ("zone-type", _set("time_zone", 8), "time_zone"),
    ("before-floor-text", _set("buy_before_floor", "yes"), "buy_before_floor"),
    ("first-cut-lo-0", _set("first_cut", [0, 0.5]), "first_cut"),
    ("first-cut-reversed", _set("first_cut", [0.5, 0.4]), "first_cut"),
    ("first-cut-hi-1", _set("first_cut", [0.2, 1]), "first_cut"),
    ("first-cut-one", _set("first_cut", [0.2]), "first_cut"),
    ("first-cut-text", _set("first_cut", ["a", "b"]), "first_cut"),
    ("first-cut-bool", _set("first_cut", [True, 0.5]), "first_cut"),
    ("first-cut-number", _set("first_cut", 0.3), "first_cut"),
    ("first-cut-nan", _set("first_cut", [float("nan"), 0.5]), "first_cut"),
    ("newcomer-hi-1", _set("newcomer_cut", [0.5, 1.0]), "newcomer_cut"),
    ("newcomer-negative", _set("newcomer_cut", [-0.1, 0.5]), "newcomer_cut"),
    ("pay-0", _set("pay_within_seconds", 0), "pay_within_seconds"),
    ("pay-float", _set("pay_within_seconds", 1.5), "pay_within_seconds"),
    ("commission-bad", _set("commission.level1_bps", -1), "commission.level1_bps"),
    ("commission-stray", _set("commission.level3_bps", 1), "commission.level3_bps"),
    ("stray", _set("colour", "red"), "colour"),
]


@pytest.mark.parametrize(("change", "key"), [(c, k) for _, c, k in BAD],
                         ids=[name for name, _, _ in BAD])
def test_parse_names_the_bad_key(change: Callable[[dict[str, Any]], None], key: str
                                 ) -> None:
    data = good()
    change(data)
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.key == f"campaigns[1].{key}"
    assert info.value.source == "shop.toml"
    assert info.value.reason


def test_parse_takes_the_exact_distance() -> None:
    """list − floor = helpers_to_floor: every helper cuts exactly 1 fen, and that is fine."""
    campaign = parse(good())
    play = Play(replace(campaign, starts_at=START, ends_at=END))
    bid = play.start("a", NOW)
    play.to_floor(bid, NOW)
    assert [cut for _, cut, _ in play.b(bid).helpers] == [1] * 10


# --- properties over random play --------------------------------------------------------

USERS = ["u0", "u1", "u2", "u3", "u4", "u5"]
CODES = {
    "campaign_not_active", "limit_reached", "out_of_stock", "not_found", "own_bargain",
    "already_helped", "bargain_closed", "forbidden", "floor_not_reached",
}
# From 20:00 in Shanghai (12:00 UTC) to 10:00 the next day: past midnight in both zones.
P_START = START + 20 * HOUR
P_END = START + 34 * HOUR
P_LIMIT = 3 * HOUR
P_PAY = 30 * MINUTE
STEPS = [0, 1, MINUTE, MINUTE, 10 * MINUTE, 10 * MINUTE, HOUR, 5 * HOUR]

campaigns = st.builds(
    make_campaign,
    starts_at=st.just(P_START),
    ends_at=st.just(P_END),
    time_limit_ms=st.just(P_LIMIT),
    pay_within_ms=st.just(P_PAY),
    product=st.sampled_from([BargainProduct("S", "S", 1000, floor) for floor in (0, 500, 995)]),
    helpers_to_floor=st.integers(2, 4),
    stock=st.sampled_from([1, 2, 1, 3, 6, 2, 0]),  # often scarce, seldom none
    max_bargains_started=st.integers(1, 2),
    max_helps_per_day=st.integers(1, 4),
    max_helps_per_campaign=st.integers(2, 8),
    buy_before_floor=st.booleans(),
    first_cut=st.sampled_from([None, (0.1, 0.3)]),
    newcomer_cut=st.sampled_from([None, (0.3, 0.6)]),
    time_zone=st.sampled_from(["Asia/Shanghai", "UTC"]),
)


def check_invariants(state: BargainState, log: list[Event]) -> None:
    campaign = state.campaign
    held = bought = 0
    started: Counter[str] = Counter()
    helps: Counter[str] = Counter()
    days: Counter[tuple[str, int]] = Counter()
    by_bargain: dict[str, list[Event]] = defaultdict(list)
    for e in log:
        by_bargain[e.bargain].append(e)
    assert set(by_bargain) == set(state.bargains)
    for bid, b in state.bargains.items():
        users = [user for user, _, _ in b.helpers]
        cuts = [cut for _, cut, _ in b.helpers]
        assert b.id == bid
        assert len(set(users)) == len(users), "a helper helped twice"
        assert b.initiator not in users
        assert all(cut >= 1 for cut in cuts)
        assert b.floor_price <= b.price <= b.list_price, "below the floor"
        assert b.first_cut >= 0
        assert 0 <= b.helpers_left
        assert (b.helpers_left == 0) == (b.price == b.floor_price)
        assert b.expires_at == min(b.created_at + campaign.time_limit_ms, campaign.ends_at)
        if b.status is BargainStatus.OPEN:
            assert b.helpers_left > 0 and b.hold_until is None
        if b.status is BargainStatus.FLOOR_REACHED:
            assert b.price == b.floor_price
        held += b.held
        buying = b.buying()
        held += buying is not None and b.purchase_unit  # a purchase's own unit
        bought += b.status is BargainStatus.BOUGHT
        # Money: a bought bargain kept exactly one paid purchase (or none, where the
        # payment is recorded with the deal); every other payment taken went back.
        paid = [h for h in b.purchases if h.status is payments.HoldStatus.PAID]
        assert len(paid) <= 1 and (not paid or b.status is BargainStatus.BOUGHT)
        assert sum(1 for h in b.purchases if h.status.holding) <= 1
        if buying is not None:
            assert b.status in (BargainStatus.OPEN, BargainStatus.FLOOR_REACHED)
        if b.status is not BargainStatus.EXPIRED:
            started[b.initiator] += 1
        for user, _, at in b.helpers:
            helps[user] += 1
            days[(user, local_day(at, campaign.zone))] += 1
        # Every cut is recomputed from the seed and the helpers' order.
        events = by_bargain[bid]
        assert [e.seq for e in events] == list(range(1, b.version + 1))
        assert replay_events(campaign, events) == (b.first_cut, cuts)
    assert state.stock_left >= 0
    assert state.stock_left + held + bought == campaign.stock
    assert (state.held(), state.bought()) == (held, bought)
    assert dict(state.started) == dict(started)
    assert dict(state.helps) == dict(helps)
    assert dict(state.helps_day) == dict(days)
    assert all(v <= campaign.max_bargains_started for v in started.values())
    assert all(v <= campaign.max_helps_per_campaign for v in helps.values())
    assert all(v <= campaign.max_helps_per_day for v in days.values())
    # The fold of the log is the decided state.
    assert fold(initial_state(campaign), log) == state
    assert state.version == len(log)
    # The read model is a complete snapshot: rebuild gives the state, view gives B.
    records = stored(GAME.rows(campaign, state, state.bargains))
    assert GAME.rebuild(campaign, records, state.version) == state
    assert state_from_bargains(campaign, state.bargains.values(), state.version) == state
    for record in records:
        assert GAME.view(record) == bargain_view(campaign.id, state.bargains[record["id"]])
    assert sorted(GAME.deadlines(state)) == sorted(
        [(b.deadline(), b.id) for b in state.bargains.values() if b.deadline() is not None]
        + [(h.until, payments.HOLD_KEY + h.payment) for b in state.bargains.values()
           if b.deadline() is not None
           for h in b.purchases if h.status is payments.HoldStatus.HELD])


class Player:
    """Drives commands through the seam, checking each event as the owner would."""

    def __init__(self, campaign: BargainCampaign, seed: int,
                 note: Callable[[str], object] = lambda _: None) -> None:
        self.campaign = campaign
        self.note = note
        self.rng = random.Random(seed)
        self.state = GAME.initial(campaign)
        self.log: list[Event] = []
        self.started: list[str] = []
        self.notes: list[tuple[str, str]] = []  # (a help's note, the answer it stands for)
        self.now = campaign.starts_at

    def recall_every_note(self) -> None:
        """Every help's answer, rendered again from its note after everything since."""
        for remembered, text in self.notes:
            assert GAME.recall(self.campaign, self.state, remembered) == text

    def pick(self, back: int) -> str:
        """A bargain, counting back from the newest; too far back is an unknown one."""
        return self.started[-1 - back] if back < len(self.started) else "b-unknown"

    def step(self, command: Command) -> None:
        state, now = self.state, self.now
        try:
            events = GAME.decide(state, command, now, self.rng)
        except GameError as error:
            assert error.code in CODES
            assert not isinstance(command, ExpireBargain), "expiry is never refused"
            self.note(f"refused {error.code}")
            return
        as_of = state
        for e in events:
            self.note(f"emitted {e.type}")
            as_of = GAME.evolve(as_of, e)
            applied = GAME.applied(self.campaign, as_of, e)
            assert GAME.decode(json.loads(json.dumps(applied.data))) == e
            assert applied.seq == e.seq == as_of.bargains[e.bargain].version
            assert applied.frames[0].data["bargain"] == bargain_summary(
                self.campaign.id, as_of.bargains[e.bargain])
            if isinstance(e, BargainStarted):
                self.started.append(e.bargain)
        if isinstance(command, ExpireBargain):
            b = state.bargains.get(command.bargain)
            due = b is not None and b.deadline() is not None and now >= (b.deadline() or 0)
            # A purchase waiting for its payment's word holds the bargain's expiry.
            assert bool(events) == (due and b is not None and b.buying() is None)
        elif isinstance(command, ExpireHold | SettlePayment) or (
                isinstance(command, BuyBargain) and not events):
            # The provider's word (or a hold's end) changes nothing when it came before,
            # and a second buy while a purchase waits answers that purchase again.
            if isinstance(command, BuyBargain):
                b = state.bargains[command.bargain]
                assert b.buying() is not None
        else:
            assert events, "an accepted command always emits an event"
            text = GAME.answer(self.campaign, as_of, command, events, now)
            answer = json.loads(text)
            remembered = GAME.note(self.campaign, as_of, command, events)
            assert (remembered is not None) == isinstance(command, HelpBargain)
            if remembered is not None:
                # The note renders the help's answer again, byte for byte, now and later.
                assert GAME.recall(self.campaign, as_of, remembered) == text
                self.notes.append((remembered, text))
            touched = as_of.bargains.get(events[0].bargain)
            # The helper list spliced from the bargain's rendered text is B, exactly.
            assert answer["bargain"] == (None if touched is None
                                         else bargain_view(self.campaign.id, touched))
            if touched is not None:
                assert bargain_text(self.campaign.id, touched) == jsontext.compact(
                    bargain_view(self.campaign.id, touched))
        self.log.extend(events)
        self.state = as_of


class BargainMachine(RuleBasedStateMachine):
    """Start, help, buy and expire under a moving clock, several users."""

    def __init__(self) -> None:
        super().__init__()
        self.player: Player | None = None

    @initialize(campaign=campaigns, seed=st.integers(0, 2**32 - 1),
                user=st.sampled_from(USERS))
    def setup(self, campaign: BargainCampaign, seed: int, user: str) -> None:
        self.player = Player(campaign, seed)
        # One bargain from the outset: hypothesis enables a random subset of the rules in
        # each run (swarm testing), and a run without `start` would have nothing to play.
        self.player.step(StartBargain(user))

    @property
    def p(self) -> Player:
        assert self.player is not None
        return self.player

    @rule(step=st.sampled_from(STEPS))
    def advance(self, step: int) -> None:
        self.p.now += step

    @rule(user=st.sampled_from(USERS))
    def start(self, user: str) -> None:
        self.p.step(StartBargain(user))

    @rule(user=st.sampled_from(USERS), back=st.sampled_from([0, 1, 1, 2, 5]),
          newcomer=st.booleans())
    def help(self, user: str, back: int, newcomer: bool) -> None:
        self.p.step(HelpBargain(user, self.p.pick(back), newcomer))

    @rule(user=st.sampled_from(USERS), newcomer=st.booleans())
    def help_newest(self, user: str, newcomer: bool) -> None:
        """The path most often accepted: the newest bargain, which is likeliest open."""
        self.p.step(HelpBargain(user, self.p.pick(0), newcomer))

    @precondition(lambda self: self.player is not None and bool(self.player.started))
    @rule(back=st.integers(0, 2), initiator=st.sampled_from([True, True, True, False]))
    def buy(self, back: int, initiator: bool) -> None:
        bid = self.p.pick(back)
        b = self.p.state.bargains.get(bid)
        user = b.initiator if b is not None and initiator else "u5"
        self.p.step(BuyBargain(user, bid))

    @rule(back=st.sampled_from([0, 1, 2, 5]))
    def expire(self, back: int) -> None:
        self.p.step(ExpireBargain(self.p.pick(back)))

    @rule(back=st.integers(0, 2), late=st.sampled_from([-1, 0, 1]))
    def expire_at_deadline(self, back: int, late: int) -> None:
        """The owner's timer fires around a bargain's deadline (the clock never goes
        back: a timer late to fire fires now)."""
        bid = self.p.pick(back)
        b = self.p.state.bargains.get(bid)
        deadline = b.deadline() if b is not None else None
        if deadline is not None:
            self.p.now = max(self.p.now, deadline + late)
        self.p.step(ExpireBargain(bid))

    @invariant()
    def consistent(self) -> None:
        if self.player is not None:
            check_invariants(self.p.state, self.p.log)
            self.p.recall_every_note()


TestBargainMachine = BargainMachine.TestCase
TestBargainMachine.settings = settings(
    max_examples=120, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_seeded_random_play_covers_every_rule() -> None:
    """A fixed sweep of long random games: the same checks, and proof they reach every
    refusal and every event."""
    seen: Counter[str] = Counter()
    for seed in range(40):
        r = random.Random(seed)
        campaign = make_campaign(
            starts_at=P_START, ends_at=P_END, time_limit_ms=P_LIMIT,
            pay_within_ms=P_PAY, helpers_to_floor=r.randint(2, 4),
            stock=r.choice([0, 1, 3, 6]), max_bargains_started=r.randint(1, 2),
            max_helps_per_day=r.randint(1, 3), max_helps_per_campaign=r.randint(2, 6),
            buy_before_floor=r.random() < 0.5, first_cut=r.choice([None, (0.1, 0.3)]),
            newcomer_cut=r.choice([None, (0.3, 0.6)]),
        )
        if seed % 2:  # half the games pay for their purchases through holds
            campaign = replace(campaign, pay_to_buy=True)
        player = Player(campaign, seed, note=lambda name: seen.update([name]))
        for _ in range(80):
            kind = r.choice(["start", "help", "help", "help", "buy", "expire", "advance",
                             *(["pay", "close", "lapse"] if campaign.pay_to_buy else [])])
            back = r.randint(0, 3)
            if kind == "advance":
                player.now += r.choice(STEPS + [DAY])
            elif kind == "start":
                player.step(StartBargain(r.choice(USERS)))
            elif kind == "help":
                player.step(HelpBargain(r.choice(USERS), player.pick(back), r.random() < 0.3))
            elif kind == "buy":
                b = player.state.bargains.get(player.pick(back))
                user = b.initiator if b is not None and r.random() < 0.8 else r.choice(USERS)
                player.step(BuyBargain(user, player.pick(back)))
            elif kind in ("pay", "close", "lapse"):
                holds = [h for b in player.state.bargains.values() for h in b.purchases]
                if holds:
                    hold = holds[-1 - back % len(holds)]
                    if kind == "lapse" and back < 2:  # at its end, most times
                        player.now = max(player.now, hold.until)
                    player.step(
                        SettlePayment(hold.payment, "paid", hold.amount + (back == 3))
                        if kind == "pay" else SettlePayment(hold.payment, "closed")
                        if kind == "close" else ExpireHold(hold.payment))
            else:
                player.step(ExpireBargain(player.pick(back)))
        check_invariants(player.state, player.log)
    assert {f"refused {code}" for code in CODES} <= set(seen), sorted(seen)
    assert {f"emitted {t}" for t in EVENT_TYPES} <= set(seen)


# --- paying for the purchase ------------------------------------------------------------


def _paying(**overrides: object) -> Play:
    play = Play(make_campaign(pay_to_buy=True, **overrides))
    return play


def test_a_purchase_is_held_until_paid_then_bought_with_its_payment() -> None:
    play = _paying()
    bargain = play.start("ann")
    play.to_floor(bargain)
    stock = play.state.stock_left
    [held] = play.buy("ann", bargain)
    assert isinstance(held, PurchaseHeld) and not held.unit  # the floor's unit serves
    assert held.until == NOW + PAY and held.amount == FLOOR_PRICE
    assert play.state.stock_left == stock
    with pytest.raises(GameError):
        play.help("late", bargain)
    assert play.buy("ann", bargain) == []  # a second buy answers the same purchase
    [bought] = play.do(SettlePayment(held.payment, "paid", FLOOR_PRICE), NOW + 1)
    assert isinstance(bought, BargainBought) and bought.payment == held.payment
    assert play.state.bargains[bargain].status is BargainStatus.BOUGHT
    assert play.state.stock_left == stock  # the held unit is the sold one
    outbox = GAME.applied(play.campaign, play.state, bought).outbox
    assert outbox is not None and outbox.kind == "deal"  # the order made of what was paid
    assert [(line.line, line.payment, line.amount) for line in outbox.lines] == [
        ("buy", held.payment, FLOOR_PRICE)]
    assert play.do(SettlePayment(held.payment, "paid", FLOOR_PRICE), NOW + 2) == []
    answer = json.loads(GAME.answer(play.campaign, play.state,
                                    SettlePayment(held.payment, "paid", FLOOR_PRICE),
                                    [bought], NOW + 1))
    assert answer["payment"]["status"] == "paid" and answer["order"]["status"] == "paid"


def test_a_purchase_before_the_floor_takes_its_own_unit_and_gives_it_back_unpaid() -> None:
    play = _paying(buy_before_floor=True)
    bargain = play.start("ann")
    stock = play.state.stock_left
    [held] = play.buy("ann", bargain)
    assert isinstance(held, PurchaseHeld) and held.unit
    assert play.state.stock_left == stock - 1
    assert play.do(ExpireHold(held.payment), held.until - 1) == []
    [lapsed] = play.do(ExpireHold(held.payment), held.until)
    assert isinstance(lapsed, PurchaseLapsed)
    [released] = play.do(SettlePayment(held.payment, "closed"), held.until + 1)
    assert isinstance(released, PurchaseReleased)
    assert play.state.stock_left == stock
    assert play.state.bargains[bargain].status is BargainStatus.OPEN
    # Paid after all, too late: the money goes back whole; the bargain is untouched.
    [returned] = play.do(SettlePayment(held.payment, "paid", held.amount), held.until + 2)
    assert isinstance(returned, PaymentReturned) and returned.amount == held.amount
    assert play.state.stock_left == stock
    # It can be bought again, with a new payment.
    [again] = play.buy("ann", bargain, held.until + 3)
    assert isinstance(again, PurchaseHeld) and again.payment != held.payment


def test_a_purchase_outlasting_nothing_expires_the_bargain_once_its_word_comes() -> None:
    play = _paying()
    bargain = play.start("ann")
    play.to_floor(bargain)
    b = play.state.bargains[bargain]
    assert b.hold_until is not None
    [held] = play.buy("ann", bargain, b.hold_until - 10)
    assert isinstance(held, PurchaseHeld)
    assert held.until == b.hold_until  # never beyond the bargain's own deadline
    assert play.expire(bargain, b.hold_until) == []  # the purchase's word decides first
    play.do(ExpireHold(held.payment), b.hold_until)
    events = play.do(SettlePayment(held.payment, "closed"), b.hold_until + 1)
    assert [e.type for e in events] == ["purchase_released", "bargain_expired"]
    assert play.state.stock_left == 10


