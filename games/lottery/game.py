"""The lottery wired to the game seam (`games.core.Game`): methods, routes, the read
model, frames, deals and answers around `games.lottery.rules`.

A campaign is one instance, `lottery`: its row in `lotteries` is what the campaign-wide
topic `lottery:{campaign}` shows on subscribe (prizes with their stock, the commitment,
the seed once revealed); that topic carries the commitment, every win (the winner's name
masked) and the reveal, numbered by `feed_seq`. A user's own draws and earned draws go to
`user:{id}`. What is the caller's (draws left today, their draws) and the audit are read
from the owner's state (`read="owner"`), which holds every draw.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from games.campaign import iso
from games.commission import Rates
from games.core import (
    Applied,
    Column,
    Game,
    Line,
    Method,
    Outbox,
    Param,
    Publish,
    ReadModel,
    Route,
)
from games.errors import GameError
from games.jsontext import compact
from games.lottery import rules
from games.lottery.campaign import KIND, LotteryCampaign, parse_campaign
from games.lottery.fairness import THANKS
from games.lottery.rules import (
    Command,
    Draw,
    Drawn,
    DrawsGranted,
    DrawsRevoked,
    Event,
    Grant,
    LotterySeeded,
    LotteryState,
    Revoke,
    SeedRevealed,
    decide,
    draw_view,
    draws_left,
    event_from_dict,
    event_to_dict,
    evolve,
    feed_view,
    initial_state,
    lottery_view,
)
from games.settings import Table
from games.topics import SLUG_RE, campaign_topic, user_topic

INSTANCE = "lottery"  # the one instance of a lottery campaign: its row and its topic's

_CAMPAIGN = Param(str, pattern=SLUG_RE)
_ORDER = Param(str, pattern=SLUG_RE)
_ONE = MappingProxyType({"campaign": _CAMPAIGN})
_BASE = "/api/lotteries/{campaign}"

METHODS = (
    Method("lottery.get", _ONE, mutating=False, route=Route("GET", _BASE), read="owner"),
    Method("lottery.draw", _ONE, mutating=True, route=Route("POST", _BASE + "/draws", 201),
           binds=True),
    Method("lottery.draws", _ONE, mutating=False, route=Route("GET", _BASE + "/draws"),
           read="owner"),
    Method("lottery.audit", _ONE, mutating=False, route=Route("GET", _BASE + "/audit"),
           read="owner"),
    # The pipeline's, for a paid order of the shop and for its refund (never a client's).
    Method("lottery.grant", MappingProxyType({"campaign": _CAMPAIGN, "order": _ORDER}),
           mutating=True, public=False, on="order_paid"),
    Method("lottery.revoke", MappingProxyType({"campaign": _CAMPAIGN, "order": _ORDER}),
           mutating=True, public=False, on="order_refunded"),
)

READ_MODEL = ReadModel(
    table="lotteries",
    columns=(
        Column("campaign", "text"), Column("id", "text"), Column("status", "text"),
        Column("title", "text"), Column("prizes", "jsonb"), Column("commitment", "text"),
        Column("seed", "text"), Column("draws", "bigint"), Column("starts_at", "timestamptz"),
        Column("expires_at", "timestamptz"), Column("version", "bigint"),
    ),
    id_param="campaign",
    view_key="lottery",
    # Per-user tallies (draws used today, earned draws, every draw) are not in the row:
    # an owner rebuilds a lottery by replaying its events.
    snapshot=False,
    campaign_row=INSTANCE,
)


# --- reads of the owner's state ---------------------------------------------------------


@dataclass(frozen=True)
class Look:
    """`user` reads the lottery (with their draws left)."""

    user: str


@dataclass(frozen=True)
class Mine:
    """`user` reads their own draws."""

    user: str


@dataclass(frozen=True)
class Audit:
    """Anyone reads every draw and the seed (only once revealed)."""


Read = Look | Mine | Audit


def feed_seq(state: LotteryState) -> int:
    """The seq of `lottery:{campaign}`: its frames are the commitment, each win (a draw
    of anything but thanks) and the reveal."""
    return (state.commitment is not None) + state.won + state.revealed


def _prizes(state: LotteryState) -> list[dict[str, Any]]:
    return [{"id": p.id, "title": p.title, "kind": p.kind, "weight": p.weight,
             "stock": p.stock, "max_wins_per_user": p.max_wins,
             "stock_left": None if p.kind == THANKS else state.stock_left[p.id]}
            for p in state.campaign.prizes]


class LotteryGame:
    """The lottery game (see `games.core.Game` for what each method owes the host)."""

    kind: str = KIND
    read_model: ReadModel = READ_MODEL
    methods: tuple[Method, ...] = METHODS

    def parse_campaign(self, table: Table, rates: Rates) -> LotteryCampaign:
        """A `[[campaigns]]` table of kind "lottery"."""
        return parse_campaign(table, rates)

    def initial(self, campaign: LotteryCampaign) -> LotteryState:
        return initial_state(campaign)

    def command(self, method: str, user: str, params: Mapping[str, Any]
                ) -> Command | Read:
        if method == "lottery.draw":
            return Draw(user)
        if method == "lottery.get":
            return Look(user)
        if method == "lottery.draws":
            return Mine(user)
        if method == "lottery.audit":
            return Audit()
        order = params.get("order")
        if method in ("lottery.grant", "lottery.revoke") and isinstance(order, str):
            return Grant(user, order) if method == "lottery.grant" else Revoke(user, order)
        raise GameError("invalid_request", f"the lottery has no command {method!r}")

    def fingerprint(self, command: Command | Read) -> str:
        return getattr(command, "order", "")

    def decide(self, state: LotteryState, command: Command | Read, now: int,
               rng: random.Random) -> list[Event]:
        if isinstance(command, Audit):
            if not state.revealed:
                raise GameError("not_revealed", "the audit opens when the campaign ends and "
                                                "its seed is revealed")
            return []
        if isinstance(command, Look | Mine):
            return []
        return decide(state, command, now, rng)

    def evolve(self, state: LotteryState, event: Event) -> LotteryState:
        return evolve(state, event)

    def version(self, state: LotteryState) -> int:
        return state.version

    def applied(self, campaign: LotteryCampaign, state: LotteryState, event: Event
                ) -> Applied:
        cid = campaign.id
        data = event_to_dict(event)
        feed = campaign_topic(KIND, cid)
        frames: list[Publish] = []
        outbox = None
        if isinstance(event, Drawn):
            frames.append(Publish(user_topic(event.user), 0, {
                "type": "drawn", "campaign": cid, "draw": draw_view(cid, event),
                "draws_left": draws_left(campaign, state, event.user, event.at)}))
            if event.kind != THANKS:
                frames.append(Publish(feed, feed_seq(state), {
                    "type": "won", "campaign": cid, "draw": feed_view(cid, event),
                    "stock_left": state.stock_left[event.prize]}))
            if event.sku is not None:
                # A product won is a deal of one line at 0 fen: the pipeline makes its
                # fulfilment order (and no commission: there is nothing paid to share).
                outbox = Outbox("deal", (Line(user=event.user, sku=event.sku, amount=0,
                                              instance=event.draw, line=event.user),))
        elif isinstance(event, DrawsGranted | DrawsRevoked):
            frames.append(Publish(user_topic(event.user), 0, {
                "type": event.type, "campaign": cid, "order": event.order,
                "count": event.count,
                "draws_left": draws_left(campaign, state, event.user, event.at)}))
        elif isinstance(event, LotterySeeded):
            # The commitment only: the seed stays secret until the reveal.
            frames.append(Publish(feed, feed_seq(state), {
                "type": "committed", "campaign": cid, "commitment": event.commitment}))
        elif isinstance(event, SeedRevealed):
            frames.append(Publish(feed, feed_seq(state), {
                "type": "revealed", "campaign": cid, "seed": event.seed,
                "commitment": state.commitment}))
        return Applied(instance=INSTANCE, seq=feed_seq(state), type=event.type, data=data,
                       frames=frames, outbox=outbox)

    def decode(self, data: Mapping[str, Any]) -> Event:
        return event_from_dict(data)

    def answer(self, campaign: LotteryCampaign, state: LotteryState,
               command: Command | Read, events: Sequence[Event], now: int) -> str:
        """draw: `{"draw": D, "draws_left": n}`; get: `{"lottery": L}`; the caller's
        draws: `{"draws": [D, ...]}`; audit: `{"lottery": L, "prizes": [the table with
        initial stock and caps], "draws": [{"seq", "user", "n", "prize"}, ...]}` in commit
        order; the pipeline's grant or revoke: `{"count": n}`."""
        cid = campaign.id
        if isinstance(command, Look):
            return compact({"lottery": lottery_view(campaign, state, command.user, now)})
        if isinstance(command, Mine):
            return compact({"draws": [draw_view(cid, state.log[number])
                                      for number in state.mine.get(command.user, ())]})
        if isinstance(command, Audit):
            return compact({
                "lottery": lottery_view(campaign, state, None, now),
                "prizes": _prizes(state),
                "draws": [{"seq": number, "user": d.user, "n": d.n, "prize": d.prize,
                           "at": iso(d.at)}
                          for number, d in sorted(state.log.items())]})
        for event in events:
            if isinstance(event, Drawn):
                return compact({"draw": draw_view(cid, event),
                                "draws_left": draws_left(campaign, state, event.user, now)})
            if isinstance(event, DrawsGranted | DrawsRevoked):
                return compact({"count": event.count})
        return compact({"count": 0} if isinstance(command, Grant | Revoke) else {})

    def note(self, campaign: LotteryCampaign, state: LotteryState, command: Command | Read,
             events: Sequence[Event]) -> None:
        return None  # a draw's answer is small: remembered whole

    def recall(self, campaign: LotteryCampaign, state: LotteryState, note: str) -> str:
        raise ValueError("the lottery remembers whole answers, never notes")

    def deadlines(self, state: LotteryState) -> Iterable[tuple[int, str]]:
        return rules.deadlines(state)

    def tick(self, key: str) -> Command:
        return rules.tick(key)

    def rows(self, campaign: LotteryCampaign, state: LotteryState, instances: Iterable[str]
             ) -> list[tuple[Any, ...]]:
        found = []
        for instance in instances:
            if instance != INSTANCE:
                raise KeyError(instance)
            found.append((
                campaign.id, INSTANCE, "ended" if state.revealed else "open", campaign.title,
                [{k: v for k, v in p.items() if k != "max_wins_per_user"}
                 for p in _prizes(state)],
                state.commitment,
                state.seed.hex() if state.revealed and state.seed is not None else None,
                state.draws, campaign.starts_at, campaign.ends_at, feed_seq(state)))
        return found

    def rebuild(self, campaign: LotteryCampaign, rows: Sequence[Mapping[str, Any]],
                version: int) -> None:
        return None  # never a snapshot (READ_MODEL.snapshot is False): events replayed

    def view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """`L` from the row (as a subscriber's snapshot shows it: no caller, so no
        `draws_left`)."""
        return {
            "id": row["campaign"], "campaign": row["campaign"], "title": row["title"],
            "status": row["status"],
            "prizes": [{k: v for k, v in p.items() if k != "stock"} for p in row["prizes"]],
            "commitment": row["commitment"], "seed": row["seed"], "draws_left": None,
            "draws": row["draws"], "starts_at": iso(row["starts_at"]),
            "ends_at": iso(row["expires_at"]), "seq": row["version"],
        }

    def summary(self, state: LotteryState) -> dict[str, int]:
        return {"draws": state.draws, "stock_left": sum(state.stock_left.values()),
                "seeded": int(state.seed is not None), "revealed": int(state.revealed)}

    def release(self, campaign: LotteryCampaign, state: LotteryState, now: int
                ) -> LotteryState:
        # Its draws stay: the audit is read from them, after the end.
        return state


GAME: Game[LotteryCampaign, LotteryState, Any, Event] = LotteryGame()
