"""Lottery (抽奖) rules as a reducer: commands, events, state, `decide` and `evolve`.

One campaign is one instance: the stock and the seed span every user, so one state holds
them all and one owner writes it.

A campaign's life: a secret 32-byte seed is drawn once (a timer's `SeedLottery` at the
start, or the first `Draw` if that comes first) and only its commitment is shown. Each
`Draw` is decided by `fairness.outcome` from the seed, the stock and the user's wins so
far and (user, n), using the user's free draw of the day first and an earned one after.
The pipeline's `Grant` adds draws for a paid order (once per order) and its `Revoke`
takes back those of a refunded order that are still unused. At the end a timer's
`RevealSeed` publishes the seed, and anyone can replay every draw (`verify_log`).

The `LotterySeeded` event holds the secret seed: it is stored, never published before
the reveal (the live frames and views show the commitment only).

Free draws come back at the campaign's `reset_at`, local time in its time zone: a draw's
day is the local date of (local wall time minus `reset_minutes`), see `draw_day`.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast
from zoneinfo import ZoneInfo

from games.campaign import iso
from games.errors import GameError
from games.lottery.campaign import LotteryCampaign, LotteryPrize
from games.lottery.fairness import (
    SEED_BYTES,
    THANKS,
    Verdict,
    commitment,
    initial_stock,
    outcome,
    verify,
)
from games.pmap import PMap

SEED_KEY = "seed"
REVEAL_KEY = "reveal"

# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedLottery:
    """The seed timer fired: draw the secret seed and commit to it (once)."""


@dataclass(frozen=True)
class Draw:
    """`user` draws once."""

    user: str


@dataclass(frozen=True)
class Grant:
    """The pipeline: `user` paid order `order`, which earns the campaign's
    `draws_per_order` draws (once per order key, ever)."""

    user: str
    order: str


@dataclass(frozen=True)
class Revoke:
    """The pipeline: order `order` of `user` was refunded; its draws still unused are
    taken back (once)."""

    user: str
    order: str


@dataclass(frozen=True)
class RevealSeed:
    """The end timer fired: reveal the seed (once, at or after the end)."""


Command = SeedLottery | Draw | Grant | Revoke | RevealSeed


# --- events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LotterySeeded:
    """The secret `seed` (hex, 32 bytes) was drawn; `commitment` is its SHA-256 (hex),
    what is shown until the reveal."""

    seed: str
    commitment: str
    at: int
    type: str = "lottery_seeded"


@dataclass(frozen=True)
class Drawn:
    """Draw `draw` ("d1", "d2", ... across the campaign): `user`'s `n`-th draw won
    `prize` (its `title`, `kind` and, for a product, `sku`). `earned`: it used an earned
    draw rather than a free one."""

    draw: str
    user: str
    n: int
    prize: str
    title: str
    kind: str
    sku: str | None
    earned: bool
    at: int
    type: str = "drawn"


@dataclass(frozen=True)
class DrawsGranted:
    """`user`'s paid order `order` earned `count` draws."""

    user: str
    order: str
    count: int
    at: int
    type: str = "draws_granted"


@dataclass(frozen=True)
class DrawsRevoked:
    """`user`'s order `order` was refunded: `count` unused earned draws were taken back
    (0 when they were all used: recorded so a refund is taken into account once)."""

    user: str
    order: str
    count: int
    at: int
    type: str = "draws_revoked"


@dataclass(frozen=True)
class SeedRevealed:
    """The campaign ended and its `seed` (hex) is public: every draw can be replayed."""

    seed: str
    at: int
    type: str = "seed_revealed"


Event = LotterySeeded | Drawn | DrawsGranted | DrawsRevoked | SeedRevealed

_EVENT_TYPES: dict[str, type[Any]] = {
    cls.type: cls for cls in (LotterySeeded, Drawn, DrawsGranted, DrawsRevoked, SeedRevealed)
}
EVENT_TYPES = frozenset(_EVENT_TYPES)


def event_to_dict(event: Event) -> dict[str, Any]:
    """Plain JSON-ready data for storage and the wire (the seed is already hex)."""
    # Fields are flat values: a shallow read is enough (dataclasses.asdict deep-copies).
    return {name: getattr(event, name) for name in event.__dataclass_fields__}


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """The inverse of `event_to_dict`; raises KeyError/TypeError on foreign data."""
    cls = _EVENT_TYPES[data["type"]]
    event: Event = cls(**data)
    return event


# --- state ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LotteryState:
    """All of one campaign.

    `seed` is None until drawn (`commitment` with it); `revealed` once it is public.
    `stock_left`: prize id -> units left, for every prize but "thanks". `wins`: (user,
    prize id) -> times won, prizes other than "thanks" only (the only ones the fairness
    caps read). `draws_of`: user -> draws made (the last n). `free_used`: (user, day) ->
    free draws used that day (see `draw_day`). `earned`: user -> earned draws not yet
    used. `orders`: order key -> user, every order granted (so never twice); `revoked`:
    order key -> draws taken back. `draws`: draws in the campaign. `log`: every draw by
    its number in the campaign (1, 2, ...: commit order), and `mine`: each user's draw
    numbers, which the owner answers a user's draws and the audit from (a draw is a few
    hundred bytes; a campaign of 100,000 draws holds some tens of MB). `won`: draws of
    anything but thanks (the live feed's frames count them). `version`: events folded.
    Zero tallies are left out, so equal histories give equal states.
    """

    campaign: LotteryCampaign
    stock_left: PMap[str, int]
    seed: bytes | None = None
    commitment: str | None = None
    revealed: bool = False
    wins: PMap[tuple[str, str], int] = field(default_factory=PMap)
    draws_of: PMap[str, int] = field(default_factory=PMap)
    free_used: PMap[tuple[str, int], int] = field(default_factory=PMap)
    earned: PMap[str, int] = field(default_factory=PMap)
    orders: PMap[str, str] = field(default_factory=PMap)
    revoked: PMap[str, int] = field(default_factory=PMap)
    draws: int = 0
    log: PMap[int, Drawn] = field(default_factory=PMap)
    mine: PMap[str, tuple[int, ...]] = field(default_factory=PMap)
    won: int = 0
    version: int = 0

    def wins_of(self, user: str) -> dict[str, int]:
        """`user`'s wins, prize id -> count (prizes never won are absent)."""
        found = {}
        for prize in self.campaign.prizes:
            count = self.wins.get((user, prize.id), 0)
            if count:
                found[prize.id] = count
        return found


def initial_state(campaign: LotteryCampaign) -> LotteryState:
    """A campaign before anything happened."""
    return LotteryState(campaign=campaign, stock_left=PMap(initial_stock(campaign.prizes)))


def draw_day(at: int, campaign: LotteryCampaign) -> int:
    """The free-draw day of epoch ms `at`: the proleptic ordinal of the local date, in the
    campaign's zone, of the local wall time less `reset_minutes`. With reset_at "06:00",
    05:59 local still counts as the day before and 06:00 starts a new day."""
    # A reset is on a minute, so the day is the minute's: cached by minute, since a
    # draw asks for it several times (deciding, folding, the answers' draws left).
    return _minute_day(at // 60_000, campaign.zone, campaign.reset_minutes)


@lru_cache(maxsize=4096)
def _minute_day(minute: int, zone: str, reset_minutes: int) -> int:
    # Aware datetime minus timedelta is wall-clock arithmetic, which is what "local time"
    # means (on a day a DST jump skips the reset time, the day starts when the clock
    # passes it).
    local = datetime.fromtimestamp(minute * 60, ZoneInfo(zone))
    return (local - timedelta(minutes=reset_minutes)).date().toordinal()


def new_seed(rng: random.Random) -> bytes:
    """A fresh secret seed: 32 bytes from `rng` (the host passes a cryptographic one)."""
    return rng.getrandbits(8 * SEED_BYTES).to_bytes(SEED_BYTES, "big")


def _seeded(seed: bytes, now: int) -> LotterySeeded:
    return LotterySeeded(seed=seed.hex(), commitment=commitment(seed), at=now)


def decide(state: LotteryState, command: Command, now: int, rng: random.Random
           ) -> list[Event]:
    """The events `command` causes, or GameError when the rules refuse it (only a
    `Draw` is ever refused; the timers' and the pipeline's commands are no-ops when
    there is nothing to do)."""
    if isinstance(command, Draw):
        return _decide_draw(state, command, now, rng)
    if isinstance(command, Grant):
        return _decide_grant(state, command, now)
    if isinstance(command, Revoke):
        return _decide_revoke(state, command, now)
    if isinstance(command, SeedLottery):
        return [] if state.seed is not None else [_seeded(new_seed(rng), now)]
    # RevealSeed
    if state.seed is None or state.revealed or now < state.campaign.ends_at:
        return []
    return [SeedRevealed(seed=state.seed.hex(), at=now)]


def _decide_draw(state: LotteryState, command: Draw, now: int, rng: random.Random
                 ) -> list[Event]:
    campaign = state.campaign
    # Revealed is checked too: after the reveal every outcome is predictable, so a
    # campaign whose end was moved later in config must still take no draw.
    if not campaign.is_active(now) or state.revealed:
        raise GameError("campaign_not_active", f"campaign {campaign.id} is not running now")
    user = command.user
    if state.free_used.get((user, draw_day(now, campaign)), 0) < campaign.free_draws_per_day:
        earned = False
    elif state.earned.get(user, 0) > 0:
        earned = True
    else:
        raise GameError("no_draws_left", "you have no draws left today")
    events: list[Event] = []
    seed = state.seed
    if seed is None:  # the seed timer has not run yet: commit now, before any draw
        seed = new_seed(rng)
        events.append(_seeded(seed, now))
    n = state.draws_of.get(user, 0) + 1
    # `outcome` returns a row of the table it is given: the campaign's own prizes.
    prize = cast(LotteryPrize, outcome(seed, campaign.id, campaign.prizes, state.stock_left,
                                       state.wins_of(user), user, n))
    events.append(Drawn(
        draw=f"d{state.draws + 1}", user=user, n=n, prize=prize.id, title=prize.title,
        kind=prize.kind, sku=prize.sku, earned=earned, at=now,
    ))
    return events


def _decide_grant(state: LotteryState, command: Grant, now: int) -> list[Event]:
    count = state.campaign.draws_per_order
    # After the end a draw could never be used; an order seen before is never paid twice.
    if now >= state.campaign.ends_at or command.order in state.orders or count == 0:
        return []
    return [DrawsGranted(user=command.user, order=command.order, count=count, at=now)]


def _decide_revoke(state: LotteryState, command: Revoke, now: int) -> list[Event]:
    # The order's user is the one it was granted to: a refund takes back what that
    # user was given, whoever the command names.
    user = state.orders.get(command.order)
    if user is None or command.order in state.revoked:
        return []
    # A draw already used is not taken back: its outcome stands.
    count = min(state.campaign.draws_per_order, state.earned.get(user, 0))
    return [DrawsRevoked(user=user, order=command.order, count=count, at=now)]


def _bump(tally: PMap[Any, int], key: Any, delta: int) -> PMap[Any, int]:
    value = tally.get(key, 0) + delta
    return tally.remove(key) if value == 0 else tally.set(key, value)


def evolve(state: LotteryState, event: Event) -> LotteryState:
    """`state` after `event`. Total: it trusts events, which `decide` made valid."""
    version = state.version + 1
    if isinstance(event, Drawn):
        user = event.user
        stock_left, wins = state.stock_left, state.wins
        if event.kind != THANKS:
            stock_left = stock_left.set(event.prize, stock_left[event.prize] - 1)
            wins = _bump(wins, (user, event.prize), 1)
        earned, free_used = state.earned, state.free_used
        if event.earned:
            earned = _bump(earned, user, -1)
        else:
            free_used = _bump(free_used, (user, draw_day(event.at, state.campaign)), 1)
        number = state.draws + 1
        # A direct constructor call (dataclasses.replace inspects the fields each time):
        # once per draw on the owner's hot path.
        return LotteryState(
            state.campaign, stock_left, state.seed, state.commitment, state.revealed, wins,
            state.draws_of.set(user, event.n), free_used, earned, state.orders,
            state.revoked, number, state.log.set(number, event),
            state.mine.set(user, state.mine.get(user, ()) + (number,)),
            state.won + (event.kind != THANKS), version)
    if isinstance(event, DrawsGranted):
        return replace(state, orders=state.orders.set(event.order, event.user),
                       earned=_bump(state.earned, event.user, event.count), version=version)
    if isinstance(event, DrawsRevoked):
        return replace(state, revoked=state.revoked.set(event.order, event.count),
                       earned=_bump(state.earned, event.user, -event.count), version=version)
    if isinstance(event, LotterySeeded):
        return replace(state, seed=bytes.fromhex(event.seed), commitment=event.commitment,
                       version=version)
    return replace(state, revealed=True, version=version)  # SeedRevealed


def apply(state: LotteryState, command: Command, now: int, rng: random.Random
          ) -> tuple[LotteryState, list[Event]]:
    """Decide, then evolve: the new state and the events that led to it."""
    events = decide(state, command, now, rng)
    return fold(state, events), events


def fold(state: LotteryState, events: Iterable[Event]) -> LotteryState:
    """`state` after all of `events`, in order."""
    for event in events:
        state = evolve(state, event)
    return state


def _decoded(events: Iterable[Event | Mapping[str, Any]]) -> list[Event]:
    return [event_from_dict(e) if isinstance(e, Mapping) else e for e in events]


def replay(campaign: LotteryCampaign, events: Iterable[Event | Mapping[str, Any]]
           ) -> LotteryState:
    """The state a campaign's event log (decoded or in its stored form) leads to."""
    return fold(initial_state(campaign), _decoded(events))


def verify_log(campaign: LotteryCampaign, events: Iterable[Event | Mapping[str, Any]],
               seed: bytes | None = None) -> Verdict:
    """An audit of a campaign's event log: the `Drawn` events, in order, replayed by
    `fairness.verify` from the seed (the revealed one unless `seed` is given) against
    the logged commitment. Fails when the log has no commitment, or no seed to check."""
    decoded = _decoded(events)
    committed = next((e.commitment for e in decoded if isinstance(e, LotterySeeded)), None)
    if seed is None:
        seed = next((bytes.fromhex(e.seed) for e in decoded if isinstance(e, SeedRevealed)),
                    None)
    if committed is None or seed is None:
        missing = "commitment" if committed is None else "revealed seed"
        return Verdict(False, 0, None, None, None, f"the log has no {missing}")
    draws = [(e.user, e.n, e.prize) for e in decoded if isinstance(e, Drawn)]
    return verify(seed, committed, campaign.id, campaign.prizes, draws)


# --- timers ---------------------------------------------------------------------------


def deadlines(state: LotteryState) -> list[tuple[int, str]]:
    """Every deadline `state` holds, (epoch ms, key): the seed's at once (0) until it is
    drawn, so the commitment is public from the start, and the reveal at the end."""
    found = []
    if state.seed is None:
        found.append((0, SEED_KEY))
    if not state.revealed:
        found.append((state.campaign.ends_at, REVEAL_KEY))
    return found


def tick(key: str) -> Command:
    """The command a due deadline sends; ValueError for a key this game never arms."""
    if key == SEED_KEY:
        return SeedLottery()
    if key == REVEAL_KEY:
        return RevealSeed()
    raise ValueError(f"no lottery deadline {key!r}")


# --- views ----------------------------------------------------------------------------


def draws_left(campaign: LotteryCampaign, state: LotteryState, user: str, now: int) -> int:
    """The draws `user` can make at `now`: free ones left today plus earned ones (0
    while the campaign does not take draws)."""
    if not campaign.is_active(now) or state.revealed:
        return 0
    used = state.free_used.get((user, draw_day(now, campaign)), 0)
    return max(campaign.free_draws_per_day - used, 0) + state.earned.get(user, 0)


def lottery_view(campaign: LotteryCampaign, state: LotteryState, user: str | None, now: int
                 ) -> dict[str, Any]:
    """The contract's lottery object `L`; `draws_left` is `user`'s at `now` (None
    without a user). The seed shows only once revealed."""
    return {
        "id": campaign.id,
        "campaign": campaign.id,
        "title": campaign.title,
        "prizes": [
            {"id": prize.id, "title": prize.title, "kind": prize.kind, "weight": prize.weight,
             "stock_left": None if prize.kind == THANKS else state.stock_left[prize.id]}
            for prize in campaign.prizes
        ],
        "commitment": state.commitment,
        "seed": state.seed.hex() if state.revealed and state.seed is not None else None,
        "draws_left": None if user is None else draws_left(campaign, state, user, now),
        "draws": state.draws,
        "starts_at": iso(campaign.starts_at),
        "ends_at": iso(campaign.ends_at),
    }


def draw_view(campaign_id: str, drawn: Drawn) -> dict[str, Any]:
    """The contract's draw object `D`."""
    return {
        "id": drawn.draw,
        "campaign": campaign_id,
        "user": drawn.user,
        "n": drawn.n,
        "prize": {"id": drawn.prize, "title": drawn.title, "kind": drawn.kind},
        "at": iso(drawn.at),
    }


def mask(user: str) -> str:
    """A winner's name as the live feed shows it: the first character, then "*"."""
    return f"{user[:1]}*"


def feed_view(campaign_id: str, drawn: Drawn) -> dict[str, Any]:
    """`D` for the campaign's live feed: the winner's name masked."""
    view = draw_view(campaign_id, drawn)
    view["user"] = mask(drawn.user)
    return view


def drawn_events(events: Iterable[Event]) -> list[Drawn]:
    """The `Drawn` events of `events`, in order."""
    return [e for e in events if isinstance(e, Drawn)]
