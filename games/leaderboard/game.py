"""The leaderboard wired to the game seam (`games.core.Game`): methods, routes, the read
model, frames and answers around `games.leaderboard.rules`.

A campaign is one board. Its read model `leaderboards` holds, per board, one row per
group (`all`, and each region on a regional board) with the open period's top: the
snapshot of the group's topic, `leaderboard:{board}` (everyone) or
`leaderboard:{board}:{region}`; one row per (period, group, user) with the score and when
it was reached (the truth the ranks come from, in Postgres); and one row per closed
(period, group) with its final top (the champions). The entry rows are ranked
(`games.core.Ranked`): the host mirrors them into its rank cache (a Redis sorted set per
board, period and group), which answers the top N with the caller's own standing and the
ranks around the caller (`read="ranked"`); past champions are answered by the owner from
its state (`read="owner"`), rebuilt from the board's events on start.
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
    Method,
    Param,
    Publish,
    Ranked,
    RankRead,
    ReadModel,
    Route,
)
from games.errors import GameError
from games.jsontext import compact
from games.leaderboard import periods, rules
from games.leaderboard.campaign import KIND, BoardCampaign, parse_campaign
from games.leaderboard.rules import (
    EVERYONE,
    BoardState,
    Command,
    Event,
    Facts,
    Flushed,
    Part,
    Score,
    Scored,
    Standing,
    Tick,
    Unscore,
)
from games.settings import Table
from games.topics import IDENT_RE, SLUG_RE, USER_RE, campaign_topic, instance_topic, user_topic

_CAMPAIGN = Param(str, pattern=SLUG_RE)
_ORDER = Param(str, pattern=SLUG_RE)
_PERIOD = Param(str, required=False, pattern=periods.NAME)
_REGION = Param(str, required=False, pattern=IDENT_RE)
_LIMIT = Param(int, required=False, low=1, high=100)
_K = Param(int, required=False, low=1, high=50)
_BASE = "/api/leaderboards/{campaign}"
HOME = "home_region"  # the fact the server adds: the caller's token's region (or None)

METHODS = (
    Method("leaderboard.get", MappingProxyType({
        "campaign": _CAMPAIGN, "period": _PERIOD, "region": _REGION, "limit": _LIMIT}),
        mutating=False, route=Route("GET", _BASE), read="ranked", facts=(HOME,)),
    Method("leaderboard.around", MappingProxyType({
        "campaign": _CAMPAIGN, "period": _PERIOD, "region": _REGION, "k": _K}),
        mutating=False, route=Route("GET", _BASE + "/around-me"), read="ranked",
        facts=(HOME,)),
    Method("leaderboard.champions", MappingProxyType({
        "campaign": _CAMPAIGN, "region": _REGION, "limit": _LIMIT}),
        mutating=False, route=Route("GET", _BASE + "/champions"), read="owner",
        facts=(HOME,)),
    # The pipeline's, for a paid order of the shop (with its facts) and for its refund.
    Method("leaderboard.score", MappingProxyType({"campaign": _CAMPAIGN, "order": _ORDER}),
           mutating=True, public=False, on="order_paid"),
    Method("leaderboard.unscore", MappingProxyType({"campaign": _CAMPAIGN, "order": _ORDER}),
           mutating=True, public=False, on="order_refunded"),
    # A piece of an order refunded (the notice's order is the piece's; its facts name
    # the order and where its refunds stand).
    Method("leaderboard.unscore_part",
           MappingProxyType({"campaign": _CAMPAIGN, "order": _ORDER}),
           mutating=True, public=False, on="order_partly_refunded"),
)

READ_MODEL = ReadModel(
    table="leaderboards",
    columns=(
        Column("campaign", "text"), Column("id", "text"), Column("status", "text"),
        Column("period", "text"), Column("region", "text"), Column("user_id", "text"),
        Column("score", "bigint"), Column("reached", "bigint"), Column("top", "jsonb"),
        Column("expires_at", "timestamptz"), Column("version", "bigint"),
    ),
    id_param="campaign",
    view_key="leaderboard",
    # Tallies per order and per member are not in the rows: the owner replays events.
    snapshot=False,
    campaign_row=EVERYONE,
    ranked=Ranked(status="entry", group=("period", "region"), member="user_id",
                  score="score", order="reached"),
)

_BOARDS = "~boards"  # the instance of a flush: every group's row
_CLOSED = "~closed|"  # the instance of a close: its champions' rows, and every group's


# --- reads of the owner's state ---------------------------------------------------------


@dataclass(frozen=True)
class Champions:
    """Past periods' final tops, newest first."""

    user: str
    home: str | None
    region: str | None
    limit: int


Read = Champions


def _group(board: BoardCampaign, region: str | None, home: str | None) -> str:
    """The group a read names: `region` (all: everyone), else the caller's own region
    on a regional board, else everyone."""
    if region is not None:
        if region != EVERYONE and not board.regional:
            raise GameError("invalid_request", f"board {board.id!r} ranks everyone "
                                               "together: it has no regions")
        return region
    if board.regional and home and home != EVERYONE and IDENT_RE.fullmatch(home):
        return home  # (a region that cannot name a topic ranks in everyone's board only)
    return EVERYONE


def _period(board: BoardCampaign, period: str | None, now: int) -> str:
    if period is None:
        return periods.period_of(board, now)
    if not periods.valid(board, period):
        raise GameError("invalid_request", f"{period!r} is not a period of board "
                                           f"{board.id!r} ({board.period})")
    return period


def _entries(standing: Iterable[Standing], first: int = 1) -> list[dict[str, Any]]:
    return [{"rank": rank, "user": user, "score": score}
            for rank, (user, score) in enumerate(standing, start=first)]


def _head(board: BoardCampaign, period: str, group: str, now: int) -> dict[str, Any]:
    start, end = periods.bounds(board, period)
    return {"board": board.id, "title": board.title, "metric": board.metric,
            "period": period, "region": None if group == EVERYONE else group,
            "starts_at": iso(max(start, board.starts_at)),
            "ends_at": iso(min(end, board.ends_at)), "final": now >= end}


def _topic(board: str, group: str) -> str:
    return campaign_topic(KIND, board) if group == EVERYONE else instance_topic(
        KIND, board, group)


def _facts(raw: Any) -> Facts:
    """A notice's facts (actors.notices), checked: the pipeline's, but a bad one must be
    refused alone rather than fail the owner's batch."""
    bad = GameError("invalid_request", "a paid order's facts are malformed")
    if not isinstance(raw, Mapping):
        raise bad
    amount, at, referrer = raw.get("amount"), raw.get("at"), raw.get("referrer")
    regions, earned = raw.get("regions") or {}, raw.get("earned") or ()
    if not (isinstance(amount, int) and isinstance(at, int) and amount >= 0
            and (referrer is None or (isinstance(referrer, str)
                                      and USER_RE.fullmatch(referrer)))
            and isinstance(regions, Mapping) and isinstance(earned, list | tuple)):
        raise bad
    lines = []
    for line in earned:
        if not (isinstance(line, list | tuple) and len(line) == 3
                and isinstance(line[0], str) and isinstance(line[1], int)
                and isinstance(line[2], int) and line[2] >= 0):
            raise bad
        lines.append((line[0], line[1], line[2]))
    # A region that cannot name a topic (`leaderboard:{board}:{region}`) ranks nowhere
    # but in everyone's board.
    return Facts(amount, at, referrer, tuple(lines), {
        u: r for u, r in regions.items() if isinstance(r, str) and IDENT_RE.fullmatch(r)})


def _part(raw: Any) -> tuple[str, Part]:
    """A partial refund's notice facts (actors.notices.write_parts), checked: the order
    they are about, and where its refunds stand."""
    bad = GameError("invalid_request", "a partial refund's facts are malformed")
    if not isinstance(raw, Mapping):
        raise bad
    facts = _facts(raw)  # the order's own facts, checked as a paid order's are
    order, refunded, reversed_ = raw.get("order"), raw.get("refunded"), raw.get("reversed")
    if not (isinstance(order, str) and SLUG_RE.fullmatch(order)
            and isinstance(refunded, int) and 0 <= refunded <= facts.amount
            and isinstance(reversed_, Mapping)
            and all(isinstance(u, str) and isinstance(f, int) and f >= 0
                    for u, f in reversed_.items())):
        raise bad
    return order, Part(facts.amount, refunded, facts.earned, dict(reversed_))


class LeaderboardGame:
    """The leaderboard game (see `games.core.Game` for what each method owes the host)."""

    kind: str = KIND
    read_model: ReadModel = READ_MODEL
    methods: tuple[Method, ...] = METHODS

    def parse_campaign(self, table: Table, rates: Rates) -> BoardCampaign:
        """A `[[campaigns]]` table of kind "leaderboard"."""
        return parse_campaign(table, rates)

    def initial(self, campaign: BoardCampaign) -> BoardState:
        return rules.initial_state(campaign)

    def command(self, method: str, user: str, params: Mapping[str, Any]) -> Command | Read:
        home = params.get(HOME)
        home = home if isinstance(home, str) else None
        if method == "leaderboard.champions":
            return Champions(user, home, params.get("region"), params.get("limit", 10))
        order = params.get("order")
        if method == "leaderboard.score" and isinstance(order, str):
            return Score(order, user, _facts(params.get("facts")))
        if method == "leaderboard.unscore" and isinstance(order, str):
            return Unscore(order)
        if method == "leaderboard.unscore_part" and isinstance(order, str):
            whole, part = _part(params.get("facts"))
            return Unscore(whole, part)
        raise GameError("invalid_request", f"the leaderboard has no command {method!r}")

    def fingerprint(self, command: Command | Read) -> str:
        return getattr(command, "order", "")

    def decide(self, state: BoardState, command: Command | Read, now: int,
               rng: random.Random) -> list[Event]:
        if isinstance(command, Champions):
            _group(state.campaign, command.region, command.home)
            return []
        return rules.decide(state, command, now)

    def evolve(self, state: BoardState, event: Event) -> BoardState:
        return rules.evolve(state, event)

    def version(self, state: BoardState) -> int:
        return state.version

    def applied(self, campaign: BoardCampaign, state: BoardState, event: Event) -> Applied:
        cid = campaign.id
        data = rules.event_to_dict(event)
        if isinstance(event, Scored):
            deadline = None
            if (state.flush_at is not None and state.window == state.version
                    and state.flush_at > event.at):
                # This event opened a flush window that is not due yet (one due at once
                # was flushed by the same command: rules._shown).
                deadline = (state.flush_at, "flush")
            return Applied(instance=event.order, seq=0, type=event.type, data=data,
                           deadline=deadline)
        frames: list[Publish] = []
        if isinstance(event, Flushed):
            for group, standing in event.boards:
                frames.append(Publish(_topic(cid, group), state.seqs[group], {
                    **self._frame(campaign, event.period, group, standing), "type": "board"}))
            for group, user, rank, score in event.ranks:
                frames.append(Publish(user_topic(user), 0, {
                    "type": "rank_changed", "board": cid, "period": event.period,
                    "region": None if group == EVERYONE else group, "rank": rank,
                    "score": score}))
            return Applied(instance=_BOARDS, seq=0, type=event.type, data=data,
                           frames=frames)
        # PeriodClosed
        for group, standing in event.champions:
            seq = state.seqs[group] - 1  # the champions, then the new period's board
            frames.append(Publish(_topic(cid, group), seq, {
                **self._frame(campaign, event.period, group, standing),
                "type": "champions", "next": event.next}))
            if standing:
                frames.append(Publish(user_topic(standing[0][0]), 0, {
                    "type": "champion", "board": cid, "period": event.period,
                    "region": None if group == EVERYONE else group,
                    "score": standing[0][1]}))
        for group, standing in event.boards:
            frames.append(Publish(_topic(cid, group), state.seqs[group], {
                **self._frame(campaign, event.next, group, standing), "type": "board"}))
        deadline = None
        if periods.closes(campaign, event.next):
            deadline = (periods.bounds(campaign, event.next)[1], f"close:{event.next}")
        return Applied(instance=_CLOSED + event.period, seq=0, type=event.type, data=data,
                       frames=frames, deadline=deadline)

    @staticmethod
    def _frame(board: BoardCampaign, period: str, group: str,
               standing: Iterable[Standing]) -> dict[str, Any]:
        return {"board": board.id, "period": period,
                "region": None if group == EVERYONE else group,
                "entries": _entries(standing)}

    def decode(self, data: Mapping[str, Any]) -> Event:
        return rules.event_from_dict(data)

    def answer(self, campaign: BoardCampaign, state: BoardState, command: Command | Read,
               events: Sequence[Event], now: int) -> str:
        """champions: `{"board", "region", "champions": [{"period", "entries",
        "champion", ...}]}`, newest first; the pipeline's commands: `{"count": scores
        changed}`."""
        if isinstance(command, Champions):
            group = _group(campaign, command.region, command.home)
            found = [(period, standing) for period, g, standing in reversed(state.champions)
                     if g == group][:command.limit]
            return compact({
                "board": campaign.id, "region": None if group == EVERYONE else group,
                "champions": [{**_head(campaign, period, group, now),
                               "entries": _entries(standing),
                               "champion": (None if not standing else
                                            {"user": standing[0][0],
                                             "score": standing[0][1]})}
                              for period, standing in found]})
        changed = sum(len(e.changes) for e in events if isinstance(e, Scored))
        return compact({"count": changed} if isinstance(command, Score | Unscore) else {})

    def rank_read(self, campaign: BoardCampaign, method: str, user: str,
                  params: Mapping[str, Any], now: int) -> RankRead:
        """get: the top `limit` (default the board's ranks) of the period and group asked
        for; around: `k` ranks either side of the caller (default 5)."""
        home = params.get(HOME)
        period = _period(campaign, params.get("period"), now)
        group = _group(campaign, params.get("region"), home if isinstance(home, str) else None)
        if method == "leaderboard.around":
            return RankRead((period, group), user, around=int(params.get("k", 5)))
        return RankRead((period, group), user, count=int(params.get("limit") or campaign.ranks))

    def rank_answer(self, campaign: BoardCampaign, read: RankRead, first: int,
                    entries: Sequence[tuple[str, int]], me: tuple[int, int] | None, now: int
                    ) -> dict[str, Any]:
        """`{"board", "title", "metric", "period", "region", "starts_at", "ends_at",
        "final", "entries": [{"rank", "user", "score"}], "me": {"rank", "score"} | null}`:
        the ranks from the rank cache (exact integers from 1)."""
        period, group = read.group
        return {**_head(campaign, period, group, now), "entries": _entries(entries, first + 1),
                "me": None if me is None else {"rank": me[0] + 1, "score": me[1]}}

    def note(self, campaign: BoardCampaign, state: BoardState, command: Command | Read,
             events: Sequence[Event]) -> None:
        return None  # answers are small: remembered whole

    def recall(self, campaign: BoardCampaign, state: BoardState, note: str) -> str:
        raise ValueError("the leaderboard remembers whole answers, never notes")

    def deadlines(self, state: BoardState) -> Iterable[tuple[int, str]]:
        return rules.deadlines(state)

    def tick(self, key: str) -> Command:
        return Tick(key)

    def _board_rows(self, campaign: BoardCampaign, state: BoardState
                    ) -> list[tuple[Any, ...]]:
        period = state.open_period
        end = min(periods.bounds(campaign, period)[1], campaign.ends_at)
        return [(campaign.id, group, "open", period, group, None, None, None,
                 [list(s) for s in state.shown.get(group, ())], end, seq)
                for group, seq in state.seqs.items()]

    def rows(self, campaign: BoardCampaign, state: BoardState, instances: Iterable[str]
             ) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        cid = campaign.id
        for instance in instances:
            if instance == _BOARDS:
                found += self._board_rows(campaign, state)
            elif instance.startswith(_CLOSED):
                period = instance[len(_CLOSED):]
                end = periods.bounds(campaign, period)[1]
                found += [(cid, f"c|{period}|{group}", "champion", period, group, None, None,
                           None, [list(s) for s in standing], end, 0)
                          for p, group, standing in state.champions if p == period]
                found += self._board_rows(campaign, state)
            else:
                scored = state.orders[instance][0]  # KeyError: no such order here
                end = periods.bounds(campaign, scored.period)[1]
                for group, user, _ in scored.changes:
                    board = state.entries.get((scored.period, group))
                    score, reached = (board.get(user) if board else None) or (0, 0)
                    found.append((cid, f"e|{scored.period}|{group}|{user}", "entry",
                                  scored.period, group, user, score, reached, None,
                                  min(end, campaign.ends_at), reached))
        return found

    def rebuild(self, campaign: BoardCampaign, rows: Sequence[Mapping[str, Any]],
                version: int) -> None:
        return None  # never a snapshot (READ_MODEL.snapshot is False): events replayed

    def view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """A group's board as its topic's snapshot shows it."""
        region = row["region"]
        return {"board": row["campaign"], "period": row["period"],
                "region": None if region == EVERYONE else region,
                "entries": _entries((u, s) for u, s in row["top"] or ()),
                "ends_at": None if row["expires_at"] is None else iso(row["expires_at"]),
                "seq": row["version"]}

    def summary(self, state: BoardState) -> dict[str, int]:
        return {"orders": len(state.orders), "champions": len(state.champions),
                "entries": sum(len(board) for board in state.entries.values())}

    def release(self, campaign: BoardCampaign, state: BoardState, now: int) -> BoardState:
        return rules.release(state, now)


GAME: Game[BoardCampaign, BoardState, Any, Event] = LeaderboardGame()
