"""Unit tests for the lottery (抽奖) campaign config and rules in games/lottery/.

Everything here is pure: campaigns are built in memory, time is an explicit epoch-ms
number and randomness is a seeded random.Random (the host passes a cryptographic one).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from games.commission import Rates
from games.errors import GameError
from games.lottery import fairness
from games.lottery.campaign import (
    LotteryCampaign,
    LotteryPrize,
    parse_campaign,
    thanks_prize,
)
from games.lottery.rules import (
    EVENT_TYPES,
    Command,
    Draw,
    Drawn,
    DrawsGranted,
    DrawsRevoked,
    Event,
    Grant,
    LotterySeeded,
    LotteryState,
    RevealSeed,
    Revoke,
    SeedLottery,
    SeedRevealed,
    apply,
    deadlines,
    decide,
    draw_day,
    draw_view,
    drawn_events,
    draws_left,
    event_from_dict,
    event_to_dict,
    feed_view,
    fold,
    initial_state,
    lottery_view,
    mask,
    replay,
    tick,
    verify_log,
)
from games.settings import ConfigError, Table

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
START = 1_767_196_800_000  # 2026-01-01T00:00:00+08:00 (2025-12-31T16:00Z)
END = START + 10 * DAY
NOW = START + HOUR
SHOP = Rates(1000, 500)


def prizes(teapot_stock: int = 3) -> tuple[LotteryPrize, ...]:
    return (
        LotteryPrize("teapot", "Clay teapot", 10, teapot_stock, "product", 1, sku="POT-1"),
        LotteryPrize("coupon", "10 yuan off", 20, 5, "coupon", coupon="C10"),
        LotteryPrize("points", "50 points", 30, 100, "points", points=50),
        thanks_prize(40),
    )


def make_campaign(**overrides: Any) -> LotteryCampaign:
    fields: dict[str, Any] = {
        "id": "spring", "title": "Spring draw", "starts_at": START, "ends_at": END,
        "prizes": prizes(), "free_draws_per_day": 1, "reset_minutes": 0,
        "zone": "Asia/Shanghai", "draws_per_order": 2,
    }
    fields.update(overrides)
    return LotteryCampaign(**fields)


class Play:
    """A campaign's state driven through `apply`, keeping every event emitted."""

    def __init__(self, campaign: LotteryCampaign | None = None, seed: int = 0) -> None:
        self.campaign = campaign or make_campaign()
        self.state = initial_state(self.campaign)
        self.rng = random.Random(seed)
        self.log: list[Event] = []

    def do(self, command: Command, now: int = NOW) -> list[Event]:
        self.state, events = apply(self.state, command, now, self.rng)
        self.log.extend(events)
        return events

    def draw(self, user: str, now: int = NOW) -> Drawn:
        events = self.do(Draw(user), now)
        drawn = events[-1]
        assert isinstance(drawn, Drawn)
        return drawn

    def refused(self, command: Command, now: int = NOW) -> str:
        before = self.state
        with pytest.raises(GameError) as info:
            decide(self.state, command, now, self.rng)
        assert info.value.message
        assert self.state is before
        return info.value.code


def types(events: list[Event]) -> list[str]:
    return [e.type for e in events]


# --- config -----------------------------------------------------------------------------


def good() -> dict[str, Any]:
    """A `[[campaigns]]` table as tomllib returns it (fresh on every call)."""
    return {
        "id": "spring", "kind": "lottery", "title": "Spring draw",
        "starts_at": "2026-01-01T00:00:00+08:00", "ends_at": "2026-01-11T00:00:00+08:00",
        "free_draws_per_day": 1, "reset_at": "06:30", "time_zone": "Europe/Berlin",
        "draws_per_order": 2,
        "prizes": [
            {"id": "teapot", "title": "Clay teapot", "kind": "product", "sku": "POT-1",
             "weight": 10, "stock": 3, "max_wins_per_user": 1},
            {"id": "coupon", "title": "10 yuan off", "kind": "coupon", "coupon": "C10",
             "weight": 20, "stock": 5},
            {"id": "points", "title": "50 points", "kind": "points", "points": 50,
             "weight": 30, "stock": 100},
            {"id": "thanks", "title": "谢谢参与", "kind": "thanks", "weight": 40},
        ],
    }


def parse(data: dict[str, Any]) -> LotteryCampaign:
    return parse_campaign(Table("shop.toml", "campaigns[0]", data), SHOP)


def test_parse_good_table() -> None:
    campaign = parse(good())
    assert campaign == make_campaign(reset_minutes=6 * 60 + 30, zone="Europe/Berlin")
    assert campaign.prizes == prizes()
    assert campaign.commission is None
    assert (campaign.kind, campaign.reset_at, campaign.tz) == (
        "lottery", "06:30", ZoneInfo("Europe/Berlin"))
    assert campaign.prize("coupon").coupon == "C10"
    with pytest.raises(KeyError):
        campaign.prize("nothing")
    public = json.loads(json.dumps(campaign.public()))
    assert (public["id"], public["kind"], public["title"], public["starts_at"],
            public["ends_at"], public["commission"], public["free_draws_per_day"],
            public["reset_at"], public["time_zone"], public["draws_per_order"]) == (
        "spring", "lottery", "Spring draw", "2025-12-31T16:00:00.000Z",
        "2026-01-10T16:00:00.000Z", None, 1, "06:30", "Europe/Berlin", 2)
    assert [p["id"] for p in public["prizes"]] == ["teapot", "coupon", "points", "thanks"]
    assert public["prizes"][0] == {
        "id": "teapot", "title": "Clay teapot", "kind": "product", "weight": 10, "stock": 3,
        "max_wins_per_user": 1, "sku": "POT-1", "coupon": None, "points": None}


def test_parse_defaults_and_the_added_thanks() -> None:
    data = good()
    for key in ("reset_at", "time_zone", "draws_per_order"):
        del data[key]
    del data["prizes"][3]
    campaign = parse(data)
    assert (campaign.reset_minutes, campaign.zone, campaign.draws_per_order) == (
        0, "Asia/Shanghai", 1)
    # No thanks prize configured: one of weight 0 closes the table.
    assert campaign.prizes[-1] == LotteryPrize("thanks", "谢谢参与", 0, None, "thanks")
    assert campaign.prizes[:-1] == prizes()[:-1]
    fairness.check_table(campaign.prizes)


def test_parse_thanks_first_keeps_config_order() -> None:
    data = good()
    data["prizes"].insert(0, data["prizes"].pop())
    assert [p.id for p in parse(data).prizes] == ["thanks", "teapot", "coupon", "points"]


def test_parse_earned_draws_only() -> None:
    data = good()
    data["free_draws_per_day"] = 0
    assert parse(data).free_draws_per_day == 0


DELETE = object()


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key: Any = int(last) if last.isdigit() else last
        if value is DELETE:
            del node[key]
        else:
            node[key] = value
    return change


def _no_draws(data: dict[str, Any]) -> None:
    data["free_draws_per_day"] = 0
    data["draws_per_order"] = 0


def _zero_weights(data: dict[str, Any]) -> None:
    for prize in data["prizes"]:
        prize["weight"] = 0


def _duplicate(data: dict[str, Any]) -> None:
    data["prizes"][1]["id"] = "teapot"


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("id-missing", _set("id", DELETE), "id"),
    ("kind-other", _set("kind", "bargain"), "kind"),
    ("title-type", _set("title", 5), "title"),
    ("starts-naive", _set("starts_at", "2026-01-01T00:00:00"), "starts_at"),
    ("ends-before", _set("ends_at", "2025-01-01T00:00:00+08:00"), "ends_at"),
    ("free-missing", _set("free_draws_per_day", DELETE), "free_draws_per_day"),
    ("free-negative", _set("free_draws_per_day", -1), "free_draws_per_day"),
    ("free-huge", _set("free_draws_per_day", 1001), "free_draws_per_day"),
    ("free-bool", _set("free_draws_per_day", True), "free_draws_per_day"),
    ("no-draws-at-all", _no_draws, "free_draws_per_day"),
    ("reset-hour", _set("reset_at", "24:00"), "reset_at"),
    ("reset-minute", _set("reset_at", "06:60"), "reset_at"),
    ("reset-short", _set("reset_at", "6:00"), "reset_at"),
    ("reset-seconds", _set("reset_at", "06:00:00"), "reset_at"),
    ("reset-number", _set("reset_at", 600), "reset_at"),
    ("zone-unknown", _set("time_zone", "Mars/Olympus"), "time_zone"),
    ("zone-empty", _set("time_zone", ""), "time_zone"),
    ("zone-path", _set("time_zone", "../etc/passwd"), "time_zone"),
    ("per-order-negative", _set("draws_per_order", -1), "draws_per_order"),
    ("per-order-float", _set("draws_per_order", 1.5), "draws_per_order"),
    ("commission", _set("commission", {"level1_bps": 100}), "commission"),
    ("stray", _set("colour", "red"), "colour"),
    ("prizes-missing", _set("prizes", DELETE), "prizes"),
    ("prizes-empty", _set("prizes", []), "prizes"),
    ("prizes-table", _set("prizes", {"id": "x"}), "prizes"),
    ("prizes-zero-weight", _zero_weights, "prizes"),
    ("prize-not-table", _set("prizes.1", "coupon"), "prizes[1]"),
    ("prize-id-missing", _set("prizes.0.id", DELETE), "prizes[0].id"),
    ("prize-id-bad", _set("prizes.0.id", "Tea Pot"), "prizes[0].id"),
    ("prize-id-twice", _duplicate, "prizes[1].id"),
    ("prize-id-thanks", _set("prizes.0.id", "thanks"), "prizes[0].id"),
    ("thanks-renamed", _set("prizes.3.id", "nothing"), "prizes[3].id"),
    ("prize-title-missing", _set("prizes.1.title", DELETE), "prizes[1].title"),
    ("prize-kind-unknown", _set("prizes.1.kind", "cash"), "prizes[1].kind"),
    ("prize-weight-missing", _set("prizes.1.weight", DELETE), "prizes[1].weight"),
    ("prize-weight-negative", _set("prizes.1.weight", -1), "prizes[1].weight"),
    ("prize-weight-float", _set("prizes.1.weight", 2.5), "prizes[1].weight"),
    ("prize-stock-missing", _set("prizes.1.stock", DELETE), "prizes[1].stock"),
    ("prize-stock-negative", _set("prizes.1.stock", -1), "prizes[1].stock"),
    ("thanks-stock", _set("prizes.3.stock", 5), "prizes[3].stock"),
    ("thanks-cap", _set("prizes.3.max_wins_per_user", 1), "prizes[3].max_wins_per_user"),
    ("cap-zero", _set("prizes.0.max_wins_per_user", 0), "prizes[0].max_wins_per_user"),
    ("sku-missing", _set("prizes.0.sku", DELETE), "prizes[0].sku"),
    ("sku-empty", _set("prizes.0.sku", ""), "prizes[0].sku"),
    ("sku-on-coupon", _set("prizes.1.sku", "POT-1"), "prizes[1].sku"),
    ("coupon-missing", _set("prizes.1.coupon", DELETE), "prizes[1].coupon"),
    ("coupon-on-product", _set("prizes.0.coupon", "C10"), "prizes[0].coupon"),
    ("points-missing", _set("prizes.2.points", DELETE), "prizes[2].points"),
    ("points-zero", _set("prizes.2.points", 0), "prizes[2].points"),
    ("points-on-thanks", _set("prizes.3.points", 5), "prizes[3].points"),
    ("prize-stray", _set("prizes.2.colour", "red"), "prizes[2].colour"),
]


@pytest.mark.parametrize(("change", "key"), [(c, k) for _, c, k in BAD],
                         ids=[name for name, _, _ in BAD])
def test_parse_names_the_bad_key(change: Callable[[dict[str, Any]], None], key: str
                                 ) -> None:
    data = good()
    change(data)
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert info.value.key == f"campaigns[0].{key}"
    assert info.value.source == "shop.toml"
    assert info.value.reason


# --- activity and draws ---------------------------------------------------------------


@pytest.mark.parametrize("now", [START - 1, END, END + DAY], ids=["before", "at-end", "after"])
def test_draw_outside_the_campaign_is_refused(now: int) -> None:
    assert Play().refused(Draw("alice"), now) == "campaign_not_active"


def test_draw_at_start_and_last_ms() -> None:
    play = Play()
    assert play.draw("alice", START).at == START
    assert play.draw("bob", END - 1).at == END - 1


def test_seed_is_emitted_once_before_the_first_draw() -> None:
    play = Play()
    first = play.do(Draw("alice"))
    assert types(first) == ["lottery_seeded", "drawn"]
    seeded = first[0]
    assert isinstance(seeded, LotterySeeded)
    seed = bytes.fromhex(seeded.seed)
    assert len(seed) == 32
    assert seeded.commitment == fairness.commitment(seed)
    assert (play.state.seed, play.state.commitment) == (seed, seeded.commitment)
    assert types(play.do(Draw("bob"))) == ["drawn"]
    assert play.do(SeedLottery()) == []
    assert play.state.seed == seed


def test_seed_timer_commits_before_any_draw() -> None:
    play = Play(seed=3)
    assert deadlines(play.state) == [(0, "seed"), (END, "reveal")]
    assert tick("seed") == SeedLottery() and tick("reveal") == RevealSeed()
    with pytest.raises(ValueError):
        tick("other")
    # The seed timer fires at once, even before the start: the commitment is public
    # from the beginning.
    events = play.do(tick("seed"), START - DAY)
    assert types(events) == ["lottery_seeded"]
    assert deadlines(play.state) == [(END, "reveal")]
    assert types(play.do(Draw("alice"))) == ["drawn"]
    # The seed is the host rng's 256 bits, big-endian.
    assert play.state.seed == random.Random(3).getrandbits(256).to_bytes(32, "big")


def test_outcome_is_fairness_outcome() -> None:
    play = Play(make_campaign(free_draws_per_day=30))
    ledger = fairness.Ledger(play.campaign.prizes)
    for i in range(30):
        user = ["alice", "bob", "carol"][i % 3]
        drawn = play.draw(user)
        assert play.state.seed is not None
        assert drawn.prize == ledger.draw(play.state.seed, "spring", user, drawn.n).id
        assert drawn.draw == f"d{i + 1}" and drawn.n == i // 3 + 1
        prize = play.campaign.prize(drawn.prize)
        assert (drawn.title, drawn.kind, drawn.sku) == (prize.title, prize.kind, prize.sku)
    assert dict(play.state.stock_left) == ledger.stock_snapshot()
    for user in ("alice", "bob", "carol"):
        won = {k: v for k, v in ledger.wins_of(user).items() if k != "thanks"}
        assert play.state.wins_of(user) == won
    assert play.state.draws == 30
    assert play.state.draws_of == {"alice": 10, "bob": 10, "carol": 10}


def test_stock_runs_out_and_caps_hold() -> None:
    table = (LotteryPrize("teapot", "Teapot", 1000, 2, "product", sku="POT-1"),
             LotteryPrize("cup", "Cup", 1000, 5, "product", 1, sku="CUP-1"),
             thanks_prize(1))
    play = Play(make_campaign(prizes=table, free_draws_per_day=20))
    won = Counter(play.draw(user).prize for user in ["a", "b", "c", "d"] * 5)
    assert won["teapot"] == 2
    assert won["cup"] == 4  # one per user
    assert play.state.stock_left == {"teapot": 0, "cup": 1}
    assert won["thanks"] == 20 - 6


def test_no_draws_left_and_free_before_earned() -> None:
    play = Play()
    assert play.draw("alice").earned is False
    assert play.refused(Draw("alice")) == "no_draws_left"
    assert types(play.do(Grant("alice", "o1"))) == ["draws_granted"]
    assert play.state.earned == {"alice": 2}
    assert draws_left(play.campaign, play.state, "alice", NOW) == 2
    assert [play.draw("alice").earned for _ in range(2)] == [True, True]
    assert play.state.earned == {}
    assert play.refused(Draw("alice")) == "no_draws_left"
    # Another user is untouched; the next day the free draw is back, used before earned.
    assert play.draw("bob").earned is False
    play.do(Grant("alice", "o2"))
    assert play.draw("alice", NOW + DAY).earned is False
    assert play.draw("alice", NOW + DAY).earned is True
    assert play.state.draws_of["alice"] == 5


def test_no_free_draws_campaign() -> None:
    play = Play(make_campaign(free_draws_per_day=0, draws_per_order=1))
    assert draws_left(play.campaign, play.state, "alice", NOW) == 0
    assert play.refused(Draw("alice")) == "no_draws_left"
    play.do(Grant("alice", "o1"))
    assert play.draw("alice").earned is True


def shanghai(day: int, hh: int, mm: int, ss: int = 0) -> int:
    """Epoch ms of 2026-01-`day` hh:mm:ss in Shanghai."""
    moment = datetime(2026, 1, day, hh, mm, ss, tzinfo=ZoneInfo("Asia/Shanghai"))
    return int(moment.timestamp() * 1000)


def test_daily_reset_at_a_local_time() -> None:
    play = Play(make_campaign(reset_minutes=6 * 60))
    c = play.campaign
    assert play.draw("alice", shanghai(2, 5, 59)).earned is False
    assert play.refused(Draw("alice"), shanghai(2, 5, 59, 59)) == "no_draws_left"
    assert draws_left(c, play.state, "alice", shanghai(2, 5, 59, 59)) == 0
    # 06:00 local: the free draw is back (it is 22:00 UTC the day before).
    assert draws_left(c, play.state, "alice", shanghai(2, 6, 0)) == 1
    assert play.draw("alice", shanghai(2, 6, 0)).earned is False
    # UTC midnight (08:00 local) brings nothing back.
    utc_midnight = int(datetime(2026, 1, 2).replace(tzinfo=ZoneInfo("UTC")).timestamp()) * 1000
    assert utc_midnight == shanghai(2, 8, 0)
    assert play.refused(Draw("alice"), utc_midnight) == "no_draws_left"
    assert play.refused(Draw("alice"), shanghai(3, 5, 59, 59)) == "no_draws_left"
    assert play.draw("alice", shanghai(3, 6, 0)).earned is False
    assert draw_day(shanghai(3, 5, 59, 59), c) == draw_day(shanghai(2, 6, 0), c)
    assert draw_day(shanghai(3, 6, 0), c) == draw_day(shanghai(2, 6, 0), c) + 1


def test_midnight_reset_is_local_midnight() -> None:
    play = Play()  # reset_at "00:00", Asia/Shanghai
    assert play.draw("alice", shanghai(2, 23, 59)).earned is False
    assert play.draw("alice", shanghai(3, 0, 0)).earned is False  # 16:00 UTC
    assert play.refused(Draw("alice"), shanghai(3, 8, 0)) == "no_draws_left"  # UTC midnight
    assert play.refused(Draw("alice"), shanghai(3, 23, 59, 59)) == "no_draws_left"


def test_reset_in_a_dst_zone() -> None:
    """Berlin springs forward at 02:00 on 2026-03-29: a 02:30 reset happens at 03:00."""
    campaign = make_campaign(zone="Europe/Berlin", reset_minutes=150,
                             ends_at=START + 120 * DAY)
    berlin = ZoneInfo("Europe/Berlin")

    def at(d: int, hh: int, mm: int) -> int:
        return int(datetime(2026, 3, d, hh, mm, tzinfo=berlin).timestamp() * 1000)

    assert draw_day(at(28, 2, 29), campaign) == draw_day(at(27, 2, 30), campaign)
    assert draw_day(at(28, 2, 30), campaign) == draw_day(at(27, 2, 30), campaign) + 1
    before_jump = at(29, 1, 59)
    after_jump = at(29, 3, 0)
    assert after_jump - before_jump == MINUTE
    assert draw_day(after_jump, campaign) == draw_day(before_jump, campaign) + 1


# --- grants and revokes ---------------------------------------------------------------


def test_grant_once_per_order() -> None:
    play = Play()
    events = play.do(Grant("alice", "o1"))
    assert events == [DrawsGranted(user="alice", order="o1", count=2, at=NOW)]
    assert play.do(Grant("alice", "o1")) == []
    assert play.do(Grant("bob", "o1")) == []  # an order key is granted once, to anyone
    # Even after its draws are used and it is revoked, an order is never granted again.
    play.do(Revoke("alice", "o1"))
    assert play.do(Grant("alice", "o1")) == []
    assert play.state.orders == {"o1": "alice"}


def test_grant_before_start_counts_after_end_is_ignored() -> None:
    play = Play()
    assert types(play.do(Grant("alice", "early"), START - DAY)) == ["draws_granted"]
    assert types(play.do(Grant("alice", "last"), END - 1)) == ["draws_granted"]
    assert play.do(Grant("alice", "late"), END) == []
    assert play.do(Grant("alice", "later"), END + DAY) == []
    assert play.state.earned == {"alice": 4}
    assert "late" not in play.state.orders


def test_grant_with_no_draws_per_order_records_nothing() -> None:
    play = Play(make_campaign(draws_per_order=0))
    assert play.do(Grant("alice", "o1")) == []
    assert play.do(Revoke("alice", "o1")) == []


def test_revoke_takes_back_unused_earned_draws_once() -> None:
    play = Play()
    play.draw("alice")  # the free draw
    play.do(Grant("alice", "o1"))
    play.draw("alice")  # one of o1's two
    events = play.do(Revoke("alice", "o1"))
    assert events == [DrawsRevoked(user="alice", order="o1", count=1, at=NOW)]
    assert play.state.earned == {}
    assert play.state.revoked == {"o1": 1}
    assert play.do(Revoke("alice", "o1")) == []
    assert play.refused(Draw("alice")) == "no_draws_left"


def test_revoke_after_all_used_is_recorded_with_zero() -> None:
    play = Play()
    play.draw("alice")
    play.do(Grant("alice", "o1"))
    play.draw("alice")
    play.draw("alice")
    assert play.do(Revoke("alice", "o1")) == [
        DrawsRevoked(user="alice", order="o1", count=0, at=NOW)]
    assert play.do(Revoke("alice", "o1")) == []
    assert play.state.draws_of["alice"] == 3  # used draws stand


def test_revoke_takes_at_most_the_orders_draws() -> None:
    play = Play()
    play.do(Grant("alice", "o1"))
    play.do(Grant("alice", "o2"))
    assert play.state.earned == {"alice": 4}
    assert play.do(Revoke("alice", "o1"))[0] == DrawsRevoked("alice", "o1", 2, NOW)
    assert play.state.earned == {"alice": 2}


def test_revoke_unknown_order_or_other_user() -> None:
    play = Play()
    assert play.do(Revoke("alice", "nope")) == []
    play.do(Grant("alice", "o1"))
    # The order's draws are taken from the user they were granted to.
    assert play.do(Revoke("mallory", "o1")) == [DrawsRevoked("alice", "o1", 2, NOW)]
    assert play.state.earned == {}


def test_revoke_after_the_end_is_recorded() -> None:
    play = Play()
    play.do(Grant("alice", "o1"))
    assert play.do(Revoke("alice", "o1"), END + DAY) == [
        DrawsRevoked("alice", "o1", 2, END + DAY)]


# --- reveal ---------------------------------------------------------------------------


def test_reveal_only_at_or_after_the_end_once() -> None:
    play = Play()
    assert play.do(RevealSeed(), END + DAY) == []  # nothing to reveal: never seeded
    play.draw("alice")
    assert play.do(RevealSeed(), END - 1) == []
    events = play.do(RevealSeed(), END)
    assert play.state.seed is not None
    assert events == [SeedRevealed(seed=play.state.seed.hex(), at=END)]
    assert play.state.revealed
    assert deadlines(play.state) == []
    assert play.do(RevealSeed(), END + DAY) == []


def test_no_draw_after_the_reveal_even_if_the_end_moves() -> None:
    play = Play()
    play.draw("alice")
    play.do(RevealSeed(), END)
    later = replace(play.state, campaign=replace(play.campaign, ends_at=END + 10 * DAY))
    with pytest.raises(GameError) as info:
        decide(later, Draw("bob"), END + DAY, play.rng)
    assert info.value.code == "campaign_not_active"
    assert draws_left(later.campaign, later, "bob", END + DAY) == 0


# --- views ----------------------------------------------------------------------------


def test_lottery_view() -> None:
    play = Play()
    view = lottery_view(play.campaign, play.state, None, NOW)
    assert view == {
        "id": "spring", "campaign": "spring", "title": "Spring draw",
        "prizes": [
            {"id": "teapot", "title": "Clay teapot", "kind": "product", "weight": 10,
             "stock_left": 3},
            {"id": "coupon", "title": "10 yuan off", "kind": "coupon", "weight": 20,
             "stock_left": 5},
            {"id": "points", "title": "50 points", "kind": "points", "weight": 30,
             "stock_left": 100},
            {"id": "thanks", "title": "谢谢参与", "kind": "thanks", "weight": 40,
             "stock_left": None},
        ],
        "commitment": None, "seed": None, "draws_left": None, "draws": 0,
        "starts_at": "2025-12-31T16:00:00.000Z", "ends_at": "2026-01-10T16:00:00.000Z",
    }
    drawn = play.draw("alice")
    play.do(Grant("alice", "o1"))
    view = lottery_view(play.campaign, play.state, "alice", NOW)
    assert view["commitment"] == play.state.commitment and view["seed"] is None
    assert view["draws_left"] == 2 and view["draws"] == 1
    assert lottery_view(play.campaign, play.state, "bob", NOW)["draws_left"] == 1
    assert lottery_view(play.campaign, play.state, "bob", START - 1)["draws_left"] == 0
    if drawn.kind != "thanks":
        row = next(p for p in view["prizes"] if p["id"] == drawn.prize)
        assert row["stock_left"] == play.campaign.prize(drawn.prize).stock - 1  # type: ignore[operator]
    play.do(RevealSeed(), END)
    assert play.state.seed is not None
    revealed = lottery_view(play.campaign, play.state, "alice", END)
    assert revealed["seed"] == play.state.seed.hex()
    assert revealed["draws_left"] == 0
    json.dumps(revealed)


def test_draw_view_and_feed() -> None:
    drawn = Drawn(draw="d7", user="alice", n=3, prize="teapot", title="Clay teapot",
                  kind="product", sku="POT-1", earned=True, at=START)
    assert draw_view("spring", drawn) == {
        "id": "d7", "campaign": "spring", "user": "alice", "n": 3,
        "prize": {"id": "teapot", "title": "Clay teapot", "kind": "product"},
        "at": "2025-12-31T16:00:00.000Z"}
    assert feed_view("spring", drawn)["user"] == "a*"
    assert feed_view("spring", drawn)["prize"] == draw_view("spring", drawn)["prize"]


@pytest.mark.parametrize(("user", "masked"), [
    ("alice", "a*"), ("a", "a*"), ("王小明", "王*"), ("", "*"), ("u:1", "u*")])
def test_mask(user: str, masked: str) -> None:
    assert mask(user) == masked


# --- codec, replay and audit ----------------------------------------------------------

SAMPLES: list[Event] = [
    LotterySeeded(seed="00" * 32, commitment=fairness.commitment(bytes(32)), at=START),
    Drawn(draw="d1", user="alice", n=1, prize="teapot", title="Clay teapot",
          kind="product", sku="POT-1", earned=False, at=NOW),
    Drawn(draw="d2", user="王", n=1, prize="thanks", title="谢谢参与", kind="thanks",
          sku=None, earned=True, at=NOW + 1),
    DrawsGranted(user="alice", order="o1", count=2, at=NOW),
    DrawsRevoked(user="alice", order="o1", count=0, at=NOW),
    SeedRevealed(seed="ff" * 32, at=END),
]


@pytest.mark.parametrize("event", SAMPLES, ids=[e.type for e in SAMPLES])
def test_codec_round_trip_through_json(event: Event) -> None:
    data = event_to_dict(event)
    assert data["type"] == event.type
    assert event_from_dict(json.loads(json.dumps(data))) == event


def test_codec_covers_every_type_and_refuses_foreign_data() -> None:
    assert {e.type for e in SAMPLES} == EVENT_TYPES == {
        "lottery_seeded", "drawn", "draws_granted", "draws_revoked", "seed_revealed"}
    with pytest.raises(KeyError):
        event_from_dict({"type": "bargain_started"})
    with pytest.raises(TypeError):
        event_from_dict({"type": "seed_revealed", "seed": "00", "at": 1, "extra": 2})


def sample_play() -> Play:
    play = Play(make_campaign(free_draws_per_day=3), seed=11)
    for user in ("alice", "bob", "alice", "carol", "alice", "bob"):
        play.draw(user)
    play.do(Grant("bob", "o1"))
    play.draw("bob")
    play.do(Revoke("bob", "o1"))
    play.draw("alice", NOW + DAY)
    play.do(RevealSeed(), END)
    return play


def test_replay_gives_the_state() -> None:
    play = sample_play()
    stored = [json.loads(json.dumps(event_to_dict(e))) for e in play.log]
    assert replay(play.campaign, stored) == play.state
    assert replay(play.campaign, play.log) == play.state
    assert play.state.version == len(play.log)


def test_verify_log_accepts_a_fair_log() -> None:
    play = sample_play()
    verdict = verify_log(play.campaign, [event_to_dict(e) for e in play.log])
    assert verdict.ok, verdict.reason
    assert verdict.checked == len(drawn_events(play.log)) == 8


def test_verify_log_rejects_tampering() -> None:
    play = sample_play()
    log = list(play.log)
    index = next(i for i, e in enumerate(log) if isinstance(e, Drawn))
    first = log[index]
    assert isinstance(first, Drawn)
    other = "teapot" if first.prize != "teapot" else "thanks"
    log[index] = replace(first, prize=other)
    verdict = verify_log(play.campaign, log)
    assert not verdict.ok and verdict.first_mismatch == 0
    # Another seed than the committed one is refused.
    assert not verify_log(play.campaign, play.log, seed=bytes(32)).ok


def test_verify_log_needs_a_seed_and_a_commitment() -> None:
    play = Play()
    play.draw("alice")
    assert not verify_log(play.campaign, play.log).ok  # not revealed yet
    assert play.state.seed is not None
    assert verify_log(play.campaign, play.log, seed=play.state.seed).ok
    assert "commitment" in verify_log(play.campaign, []).reason


# --- properties over random play ------------------------------------------------------

USERS = ["u0", "u1", "u2", "王3"]
P_START = START + 20 * HOUR  # 20:00 Shanghai, 12:00 UTC
P_END = P_START + 3 * DAY
STEPS = [0, 1, MINUTE, 10 * MINUTE, HOUR, HOUR, 3 * HOUR, 7 * HOUR]


@st.composite
def campaigns(draw: st.DrawFn) -> LotteryCampaign:
    table = [
        LotteryPrize("teapot", "Teapot", draw(st.integers(0, 30)), draw(st.integers(0, 3)),
                     "product", draw(st.sampled_from([None, 1, 2])), sku="POT-1"),
        LotteryPrize("coupon", "Coupon", draw(st.integers(0, 30)), draw(st.integers(0, 4)),
                     "coupon", draw(st.sampled_from([None, 1])), coupon="C"),
        LotteryPrize("points", "Points", draw(st.integers(0, 30)), draw(st.integers(0, 2)),
                     "points", None, points=5),
    ]
    thanks_at = draw(st.integers(0, 3))
    table.insert(thanks_at, thanks_prize(draw(st.integers(0, 30))))
    if sum(p.weight for p in table) == 0:
        table[0] = replace(table[0], weight=1)
    free = draw(st.integers(0, 2))
    return make_campaign(
        starts_at=P_START, ends_at=P_END, prizes=tuple(table), free_draws_per_day=free,
        draws_per_order=draw(st.integers(0 if free else 1, 2)),
        reset_minutes=draw(st.sampled_from([0, 6 * 60, 23 * 60 + 59, 90])),
        zone=draw(st.sampled_from(["Asia/Shanghai", "UTC", "America/New_York"])),
    )


def model_day(at: int, campaign: LotteryCampaign) -> tuple[int, int, int]:
    """The free-draw day, written another way: the local date, one back before the
    reset time."""
    local = datetime.fromtimestamp(at // 1000, ZoneInfo(campaign.zone))
    minutes = local.hour * 60 + local.minute
    date = local.date() if minutes >= campaign.reset_minutes else \
        local.date() - timedelta(days=1)
    return date.year, date.month, date.day


@dataclass
class Model:
    """What the rules should hold, kept independently of them."""

    granted: Counter[str]
    taken_back: Counter[str]
    earned_used: Counter[str]
    free_used: Counter[tuple[str, tuple[int, int, int]]]
    order_user: dict[str, str]
    revoked: set[str]


class LotteryMachine(RuleBasedStateMachine):
    """Draw, grant, revoke, the timers and a moving clock, several users."""

    def __init__(self) -> None:
        super().__init__()
        self.campaign = make_campaign()
        self.state: LotteryState = initial_state(self.campaign)
        self.rng = random.Random(0)
        self.now = 0
        self.log: list[Event] = []
        self.model = Model(Counter(), Counter(), Counter(), Counter(), {}, set())
        self.orders = 0
        self.seen: Counter[str] = Counter()  # what happened, for the coverage sweep

    @initialize(campaign=campaigns(), seed=st.integers(0, 2**32 - 1),
                early=st.sampled_from([0, HOUR]))
    def setup(self, campaign: LotteryCampaign, seed: int, early: int) -> None:
        self.campaign = campaign
        self.state = initial_state(campaign)
        self.rng = random.Random(seed)
        self.now = campaign.starts_at - early

    def run(self, command: Command) -> list[Event]:
        events = decide(self.state, command, self.now, self.rng)
        for event in events:
            assert event_from_dict(json.loads(json.dumps(event_to_dict(event)))) == event
            self.state = evolve_checked(self.state, event)
        self.log.extend(events)
        return events

    def earned_left(self, user: str) -> int:
        m = self.model
        return m.granted[user] - m.taken_back[user] - m.earned_used[user]

    @rule(step=st.sampled_from(STEPS))
    def advance(self, step: int) -> None:
        self.now += step

    @rule(user=st.sampled_from(USERS))
    def draw(self, user: str) -> None:
        c, m = self.campaign, self.model
        day = model_day(self.now, c)
        active = c.starts_at <= self.now < c.ends_at and not self.state.revealed
        free = m.free_used[(user, day)] < c.free_draws_per_day
        expected = draws_left(c, self.state, user, self.now)
        assert expected == (0 if not active else
                            c.free_draws_per_day - m.free_used[(user, day)]
                            + self.earned_left(user))
        try:
            events = self.run(Draw(user))
        except GameError as error:
            if not active:
                assert error.code == "campaign_not_active"
            else:
                assert error.code == "no_draws_left"
                assert not free and self.earned_left(user) == 0
            self.seen[error.code] += 1
            return
        assert active and (free or self.earned_left(user) > 0)
        drawn = events[-1]
        assert isinstance(drawn, Drawn)
        assert drawn.earned == (not free)
        self.seen["earned draw" if drawn.earned else "free draw"] += 1
        self.seen[f"won {drawn.kind}"] += 1
        if any(v == 0 for v in self.state.stock_left.values()):
            self.seen["a prize ran out"] += 1
        if drawn.earned:
            m.earned_used[user] += 1
        else:
            m.free_used[(user, day)] += 1

    @rule(user=st.sampled_from(USERS), again=st.booleans())
    def grant(self, user: str, again: bool) -> None:
        m = self.model
        if again and m.order_user:
            order = sorted(m.order_user)[self.orders % len(m.order_user)]
        else:
            self.orders += 1
            order = f"o{self.orders}"
        events = self.run(Grant(user, order))
        fresh = order not in m.order_user and self.now < self.campaign.ends_at \
            and self.campaign.draws_per_order > 0
        assert bool(events) == fresh
        if fresh:
            self.seen["granted"] += 1
            m.order_user[order] = user
            m.granted[user] += self.campaign.draws_per_order

    @rule(pick=st.integers(0, 5), user=st.sampled_from(USERS))
    def revoke(self, pick: int, user: str) -> None:
        m = self.model
        known = sorted(m.order_user)
        order = known[pick] if pick < len(known) else f"unknown{pick}"
        events = self.run(Revoke(user, order))
        owner = m.order_user.get(order)
        if owner is None or order in m.revoked:
            assert events == []
            return
        want = min(self.campaign.draws_per_order, self.earned_left(owner))
        assert events == [DrawsRevoked(owner, order, want, self.now)]
        self.seen["revoked some" if want else "revoked none"] += 1
        m.revoked.add(order)
        m.taken_back[owner] += want

    @rule()
    def seed_timer(self) -> None:
        had = self.state.seed
        events = self.run(SeedLottery())
        assert bool(events) == (had is None)

    @rule()
    def reveal_timer(self) -> None:
        before = self.state
        events = self.run(RevealSeed())
        due = before.seed is not None and not before.revealed \
            and self.now >= self.campaign.ends_at
        assert bool(events) == due

    @rule()
    def to_the_end(self) -> None:
        self.now = max(self.now, self.campaign.ends_at)

    @invariant()
    def consistent(self) -> None:
        c, s, m = self.campaign, self.state, self.model
        drawn = drawn_events(self.log)
        initial = fairness.initial_stock(c.prizes)
        won = Counter(e.prize for e in drawn if e.kind != "thanks")
        for pid, stock in initial.items():
            assert s.stock_left[pid] >= 0
            wins = sum(v for (_, p), v in s.wins.items() if p == pid)
            assert s.stock_left[pid] + wins == stock
            assert wins == won[pid]
        for prize in c.prizes:
            if prize.max_wins is not None:
                assert all(v <= prize.max_wins for (_, p), v in s.wins.items()
                           if p == prize.id)
        # Draws never exceed the free ones of each day plus the earned ones.
        assert all(v <= c.free_draws_per_day for v in m.free_used.values())
        per_user = Counter(e.user for e in drawn)
        for user in USERS:
            assert self.earned_left(user) >= 0
            assert s.earned.get(user, 0) == self.earned_left(user)
            assert per_user[user] == s.draws_of.get(user, 0)
            assert per_user[user] == m.earned_used[user] + sum(
                v for (u, _), v in m.free_used.items() if u == user)
            assert m.earned_used[user] <= m.granted[user] - m.taken_back[user]
            assert [e.n for e in drawn if e.user == user] == list(
                range(1, per_user[user] + 1))
        assert [e.draw for e in drawn] == [f"d{i}" for i in range(1, len(drawn) + 1)]
        assert s.draws == len(drawn) and s.version == len(self.log)
        assert sum(isinstance(e, LotterySeeded) for e in self.log) == (s.seed is not None)
        assert fold(initial_state(c), self.log) == s
        if drawn:
            assert s.seed is not None and s.commitment is not None
            verdict = fairness.verify(s.seed, s.commitment, c.id, c.prizes,
                                      [(e.user, e.n, e.prize) for e in drawn])
            assert verdict.ok and verdict.checked == len(drawn), verdict.reason
        if s.revealed:
            assert verify_log(c, self.log).ok


def evolve_checked(state: LotteryState, event: Event) -> LotteryState:
    """`evolve`, through the codec (what a restarted owner folds)."""
    return fold(state, [event_from_dict(json.loads(json.dumps(event_to_dict(event))))])


TestLotteryMachine = LotteryMachine.TestCase
TestLotteryMachine.settings = settings(
    max_examples=100, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_seeded_random_play_covers_every_rule() -> None:
    """A fixed sweep of long random games through the machine's own rules and checks,
    and proof they reach every outcome the properties are about."""
    seen: Counter[str] = Counter()
    for seed in range(30):
        r = random.Random(seed)
        machine = LotteryMachine()
        campaign = make_campaign(
            starts_at=P_START, ends_at=P_END, free_draws_per_day=r.randint(0, 2),
            draws_per_order=r.randint(1, 2), reset_minutes=r.choice([0, 360]),
            prizes=(LotteryPrize("teapot", "Teapot", 20, r.randint(0, 2), "product", 1,
                                 sku="POT-1"),
                    LotteryPrize("coupon", "Coupon", 30, 3, "coupon", coupon="C"),
                    LotteryPrize("points", "Points", 10, 1, "points", points=5),
                    thanks_prize(40)))
        machine.setup(campaign, seed, r.choice([0, HOUR]))
        for _ in range(120):
            kind = r.choice(["draw"] * 5 + ["grant", "grant", "revoke", "advance",
                                             "advance", "seed", "reveal"])
            if kind == "draw":
                machine.draw(r.choice(USERS))
            elif kind == "grant":
                machine.grant(r.choice(USERS), r.random() < 0.3)
            elif kind == "revoke":
                machine.revoke(r.randint(0, 5), r.choice(USERS))
            elif kind == "advance":
                machine.advance(r.choice(STEPS))
            elif kind == "seed":
                machine.seed_timer()
            else:
                machine.reveal_timer()
            machine.consistent()
        machine.to_the_end()
        machine.reveal_timer()
        machine.consistent()
        assert machine.state.revealed == (machine.state.seed is not None)
        seen.update(machine.seen)
    wanted = {"campaign_not_active", "no_draws_left", "free draw", "earned draw",
              "won product", "won coupon", "won points", "won thanks", "a prize ran out",
              "granted", "revoked some", "revoked none"}
    assert wanted <= set(seen), sorted(seen)
