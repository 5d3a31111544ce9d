"""The leaderboard's rules: scores from the pipeline's paid orders, taken back on refund,
ranked with ties to whoever reached the score first, periods closed on time.

A board's commands are the pipeline's notices (`Score` for a paid order with its facts,
`Unscore` for its refund, whole or, with a `Part`, a piece of it) and its deadlines
(`Tick`): "flush", which publishes what changed since the last flush (so a board's
topic carries at most two frames a second however many scores change), "close:{period}",
which archives a period's final ranks, and "open", which publishes everyone's (empty)
board at the start so its topic has a snapshot.

Each entry is (score, reached): `reached` is the board's version when the entry got its
score, so among equal scores the one reached first ranks higher (then the user id, which
only breaks ties of two entries changed by one event). Ranks are exact integers from 1.
An order counts once in the period its own timestamp falls in, whatever the period is
when it arrives: a late order lands in its own (possibly closed) period, whose archived
champions stay as archived.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from games.errors import GameError
from games.leaderboard.campaign import BoardCampaign
from games.leaderboard.periods import ALL, bounds, closes, following, period_of
from games.pmap import PMap

EVERYONE = "all"  # the group of a board that ranks everyone together
FLUSH_MS = 500  # frames of a board's topic are coalesced over this long
# Tied users whose ranks a flush works out one by one (O(n) each) before it sorts the
# whole group instead (O(n log n)).
COUNT_AT_MOST = 16

Standing = tuple[str, int]  # (user, score), in rank order
Entry = tuple[int, int]  # (score, reached)


# --- commands ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Facts:
    """What the pipeline tells about a paid order: its amount (fen), when it was made
    (epoch ms), its buyer's direct referrer, the commission each beneficiary earned on it
    (user, level, fen), and the regions of the users involved as last recorded."""

    amount: int
    at: int
    referrer: str | None
    earned: tuple[tuple[str, int, int], ...]
    regions: Mapping[str, str]


@dataclass(frozen=True)
class Score:
    """A paid order of `buyer`."""

    order: str
    buyer: str
    facts: Facts


@dataclass(frozen=True)
class Part:
    """Where the refunds of an order not yet refunded whole stand, cumulatively: the
    order's `amount` (fen), what is `refunded` of it so far, the commission each
    beneficiary earned on it (`earned`: user, level, fen) and how much of that refunds
    have `reversed` so far (user -> fen). Cumulative, so a notice applied twice, or
    after a later one, takes back nothing more."""

    amount: int
    refunded: int
    earned: tuple[tuple[str, int, int], ...]
    reversed: Mapping[str, int]


@dataclass(frozen=True)
class Unscore:
    """The refund of `order`: whole, or (`part`) the pieces refunded so far."""

    order: str
    part: Part | None = None


@dataclass(frozen=True)
class Tick:
    """A deadline came: "flush" or "close:{period}"."""

    key: str


Command = Score | Unscore | Tick


# --- events -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """An order's scores (`refund`: taken back): `changes` are (group, user, delta) in
    `period`, `members` (group, seller, buyer, delta) the orders of each direct member
    who bought (the `members` metric's tally); `at` is the board's clock."""

    order: str
    period: str
    changes: tuple[tuple[str, str, int], ...]
    members: tuple[tuple[str, str, str, int], ...]
    at: int
    refund: bool = False
    # A refund's piece: `changes` take back part of what the order added (see `_unscore`).
    part: bool = False
    type: str = field(default="scored", init=False)


@dataclass(frozen=True)
class Flushed:
    """What a board's topics show now: each changed group's top (in the open period),
    and the users told of their rank (group, user, rank or None when off the board,
    score): those whose score changed since the last flush, and those whose place in
    the top changed."""

    period: str
    boards: tuple[tuple[str, tuple[Standing, ...]], ...]
    ranks: tuple[tuple[str, str, int | None, int], ...]
    at: int
    type: str = field(default="flushed", init=False)


@dataclass(frozen=True)
class PeriodClosed:
    """`period` ended: each group's final top (its champions), and the top of `next`."""

    period: str
    next: str
    champions: tuple[tuple[str, tuple[Standing, ...]], ...]
    boards: tuple[tuple[str, tuple[Standing, ...]], ...]
    at: int
    type: str = field(default="period_closed", init=False)


Event = Scored | Flushed | PeriodClosed


def event_to_dict(event: Event) -> dict[str, Any]:
    """Plain JSON-ready data for the event stream."""
    return {name: getattr(event, name) for name in event.__dataclass_fields__}


def _tops(raw: Iterable[Any]) -> tuple[tuple[str, tuple[Standing, ...]], ...]:
    return tuple((str(g), tuple((str(u), int(s)) for u, s in top)) for g, top in raw)


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """The inverse of `event_to_dict` (JSON made the tuples lists)."""
    kind = data["type"]
    if kind == "scored":
        return Scored(data["order"], data["period"],
                      tuple((g, u, int(d)) for g, u, d in data["changes"]),
                      tuple((g, s, b, int(d)) for g, s, b, d in data["members"]),
                      int(data["at"]), bool(data["refund"]), bool(data.get("part", False)))
    if kind == "flushed":
        return Flushed(data["period"], _tops(data["boards"]),
                       tuple((g, u, r, int(s)) for g, u, r, s in data["ranks"]),
                       int(data["at"]))
    if kind == "period_closed":
        return PeriodClosed(data["period"], data["next"], _tops(data["champions"]),
                            _tops(data["boards"]), int(data["at"]))
    raise KeyError(kind)


# --- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoardState:
    """All of one board.

    `entries`: (period, group) -> user -> (score, reached); zero scores are left out.
    `orders`: every order scored -> (its Scored, whether refunded since), so each counts
    once and a refund takes back exactly what it added (orders older than the board's
    `keep_days` are let go: a notice that old changes nothing, see `decide`). `bought`:
    (period, group, seller, buyer) -> the buyer's live orders (the `members` metric).
    `open_period`: the period whose end is the next close (`all` never closes). `shown`:
    group -> the top its topic shows; `seqs`: group -> its topic's seq; `moved`: (group,
    user) whose score changed in the open period since the last flush; `dirty`: the groups
    changed in the open period since
    the last flush, due at `flush_at`; `flushed_at`: when its topics last had a frame
    (a flush or a period's close), and `window`: the version whose event opened the
    pending flush (its deadline armed once). `champions`: (period, group, final top), in
    closing order.
    """

    campaign: BoardCampaign
    open_period: str
    entries: PMap[tuple[str, str], PMap[str, Entry]] = field(default_factory=PMap)
    orders: PMap[str, tuple[Scored, bool]] = field(default_factory=PMap)
    bought: PMap[tuple[str, str, str, str], int] = field(default_factory=PMap)
    shown: PMap[str, tuple[Standing, ...]] = field(default_factory=PMap)
    seqs: PMap[str, int] = field(default_factory=PMap)
    moved: frozenset[tuple[str, str]] = frozenset()
    dirty: frozenset[str] = frozenset()
    flush_at: int | None = None
    flushed_at: int | None = None
    window: int = 0
    champions: tuple[tuple[str, str, tuple[Standing, ...]], ...] = ()
    version: int = 0


def initial_state(campaign: BoardCampaign) -> BoardState:
    """A board before any order: its first period is the one it starts in."""
    return BoardState(campaign, period_of(campaign, campaign.starts_at))


def _rank_key(row: tuple[str, int, int]) -> tuple[int, int, str]:
    return -row[1], row[2], row[0]


def ranking(state: BoardState, period: str, group: str, first: int | None = None
            ) -> list[tuple[str, int, int]]:
    """The ranked users of (period, group) in rank order, (user, score, reached): all,
    or the `first` few (a partial selection, O(n log first): what the owner publishes
    needs the top, and reads come from the rank cache)."""
    found = state.entries.get((period, group))
    if not found:
        return []
    rows = [(user, score, reached) for user, (score, reached) in found.items()]
    if first is not None and first < len(rows):
        return heapq.nsmallest(first, rows, key=_rank_key)
    rows.sort(key=_rank_key)
    return rows


def top(state: BoardState, period: str, group: str, n: int) -> tuple[Standing, ...]:
    """The first `n` of (period, group)."""
    return tuple((user, score) for user, score, _ in ranking(state, period, group, n))


def groups_of(board: BoardCampaign, user: str, regions: Mapping[str, str]) -> list[str]:
    """The groups a seller's score counts in: everyone's, and their region's on a
    regional board (when one was recorded)."""
    region = regions.get(user)
    if board.regional and region and region != EVERYONE:
        return [EVERYONE, region]
    return [EVERYONE]


def _credits(board: BoardCampaign, buyer: str, facts: Facts) -> list[tuple[str, int]]:
    """(seller, points) an order earns on `board`'s metric (before grouping)."""
    if board.metric == "commission":
        return [(user, amount) for user, _, amount in facts.earned
                if amount > 0 and user != buyer]
    if facts.referrer is None or facts.referrer == buyer:
        return []
    if board.metric == "sales":
        return [(facts.referrer, facts.amount)] if facts.amount > 0 else []
    if board.metric == "orders":
        return [(facts.referrer, 1)]
    return []  # members: counted from the tally, see _score


def _score(state: BoardState, command: Score, now: int) -> list[Event]:
    board, facts = state.campaign, command.facts
    period = period_of(board, facts.at)
    changes: list[tuple[str, str, int]] = []
    members: list[tuple[str, str, str, int]] = []
    for seller, points in _credits(board, command.buyer, facts):
        changes += [(g, seller, points) for g in groups_of(board, seller, facts.regions)]
    if board.metric == "members" and facts.referrer not in (None, command.buyer):
        seller = str(facts.referrer)
        for g in groups_of(board, seller, facts.regions):
            members.append((g, seller, command.buyer, 1))
            if state.bought.get((period, g, seller, command.buyer), 0) == 0:
                changes.append((g, seller, 1))  # a member's first order of the period
    if not changes and not members:
        return []  # nothing on this board: a repeat decides the same nothing
    return [Scored(command.order, period, tuple(changes), tuple(members), now)]


def _unscore_part(state: BoardState, scored: Scored, part: Part, now: int) -> list[Event]:
    """What a partial refund takes back: on a `sales` board the refunded fen, on a
    `commission` board the reversed commission, exactly (an order's count, and a member
    who bought, go only with the whole refund). `scored` holds what the order adds now;
    the target is what it would add on what is left of it, and only ever lower."""
    metric = state.campaign.metric
    if metric == "sales":
        target = {user: part.amount - part.refunded for _, user, _ in scored.changes}
    elif metric == "commission":
        earned = {user: fen for user, _, fen in part.earned}
        target = {user: fen - part.reversed.get(user, 0) for user, fen in earned.items()}
    else:
        return []
    changes = tuple((g, u, target[u] - d) for g, u, d in scored.changes
                    if u in target and target[u] < d)
    if not changes:
        return []  # taken back as far already (a repeat, or an older piece after a newer)
    return [Scored(scored.order, scored.period, changes, (), now, refund=True, part=True)]


def _unscore(state: BoardState, command: Unscore, now: int) -> list[Event]:
    found = state.orders.get(command.order)
    if found is None or found[1]:
        return []  # never scored here, or taken back already
    scored = found[0]
    if command.part is not None:
        return _unscore_part(state, scored, command.part, now)
    changes = [(g, u, -d) for g, u, d in scored.changes if d]
    members = [(g, seller, buyer, -d) for g, seller, buyer, d in scored.members]
    if state.campaign.metric == "members":
        # The member stops counting when their last live order of the period goes.
        changes = []
        for g, seller, buyer, _ in scored.members:
            if state.bought.get((scored.period, g, seller, buyer), 0) == 1:
                changes.append((g, seller, -1))
    return [Scored(command.order, scored.period, tuple(changes), tuple(members), now,
                   refund=True)]


def opened(board: BoardCampaign) -> tuple[str, ...]:
    """The groups whose boards exist from the start: everyone's and the configured
    regions' (the topic of each has a snapshot before any score)."""
    return (EVERYONE, *board.regions)


def _flush(state: BoardState, now: int, opening: bool = False) -> list[Event]:
    """Publish what changed (`opening`: also the boards of `opened`, so their topics
    have a snapshot from the start)."""
    shown_first = opened(state.campaign)
    if opening:
        if all(g in state.seqs for g in shown_first):
            return []
    elif state.flush_at is None or now < state.flush_at:
        return []
    board, period = state.campaign, state.open_period
    boards: list[tuple[str, tuple[Standing, ...]]] = []
    ranks: list[tuple[str, str, int | None, int]] = []
    for group in sorted(state.dirty | (set(shown_first) if opening else set())):
        partial = ranking(state, period, group, board.ranks)
        shown = tuple((u, s) for u, s, _ in partial)
        before = state.shown.get(group, ())
        if shown != before or group not in state.seqs:
            boards.append((group, shown))
        ranks += _told(state, period, group, partial, before)
    return [Flushed(period, tuple(boards), tuple(ranks), now)]


def _told(state: BoardState, period: str, group: str, partial: list[tuple[str, int, int]],
          before: tuple[Standing, ...]) -> list[tuple[str, str, int | None, int]]:
    """Who hears of their rank in a flush of `group`: each user whose score changed since
    the last one (whatever their rank now), and each whose place in the top changed (in
    it, or out of it)."""
    movers = {u for g, u in state.moved if g == group}
    was = {user: rank for rank, (user, _) in enumerate(before, start=1)}
    now = {user: rank for rank, (user, _, _) in enumerate(partial, start=1)}
    entries = state.entries.get((period, group)) or PMap()
    told = movers | {u for u in was if was[u] != now.get(u)} | {
        u for u in now if was.get(u) != now[u]}
    # Ranks beyond the top: counted one by one for a few, else from the whole order.
    beyond = [u for u in told if u not in now and u in entries]
    if len(beyond) > COUNT_AT_MOST:
        now = {user: rank for rank, (user, _, _) in enumerate(
            ranking(state, period, group), start=1)}
    else:
        for user in beyond:
            mine = _rank_key((user, *entries[user]))
            now[user] = 1 + sum(1 for other, (score, reached) in entries.items()
                                if _rank_key((other, score, reached)) < mine)
    found: list[tuple[str, str, int | None, int]] = []
    for user in sorted(told):
        entry = entries.get(user)
        found.append((group, user, now.get(user) if entry else None,
                      entry[0] if entry else 0))
    return found


def _close(state: BoardState, period: str, now: int) -> list[Event]:
    board = state.campaign
    if period != state.open_period or period == ALL or not closes(board, period) \
            or now < bounds(board, period)[1]:
        return []  # not the open period, or not over yet
    nxt = following(board, period)
    # Periods that passed with nothing in them while no owner ran are skipped, not each
    # archived empty (a board started long ago would close every week since).
    while now >= bounds(board, nxt)[1] and closes(board, following(board, nxt)) and not any(
            p == nxt for p, _ in state.entries):
        nxt = following(board, nxt)
    groups = sorted({g for (p, g) in state.entries if p in (period, nxt)} | set(state.seqs))
    champions = tuple((g, standing) for g in groups
                      if (standing := top(state, period, g, board.ranks)))
    boards = tuple((g, top(state, nxt, g, board.ranks)) for g in groups)
    return [PeriodClosed(period, nxt, champions, boards, now)]


def decide(state: BoardState, command: Command, now: int) -> list[Event]:
    """The events `command` causes at `now` (a repeat of a scored order: none)."""
    if isinstance(command, Score):
        if command.order in state.orders or command.facts.at < now - state.campaign.keep_ms:
            return []  # scored already, or too old to move the board (see `release`)
        return _shown(state, _score(state, command, now), now)
    if isinstance(command, Unscore):
        return _shown(state, _unscore(state, command, now), now)
    if command.key in ("flush", "open"):
        return _flush(state, now, opening=command.key == "open")
    if command.key.startswith("close:"):
        return _close(state, command.key[len("close:"):], now)
    raise GameError("invalid_request", f"no deadline {command.key!r} on a leaderboard")


def _shown(state: BoardState, events: list[Event], now: int) -> list[Event]:
    """`events`, and a flush with them when they open a window that is due at once (the
    board's topics had no frame for FLUSH_MS): a change after a quiet spell is shown
    with its own commit, not a window later; changes within a window wait for its end."""
    due = (state.flush_at if state.flush_at is not None else now if state.flushed_at is None
           else state.flushed_at + FLUSH_MS)
    if not events or due > now:
        return events  # within a window (most scores under load): no need to look
    after = state
    for event in events:
        after = evolve(after, event)
    if after.flush_at is not None and after.flush_at <= now:
        return [*events, *_flush(after, now)]
    return events


def _bump(tally: PMap[Any, int], key: Any, delta: int) -> PMap[Any, int]:
    value = tally.get(key, 0) + delta
    return tally.remove(key) if value == 0 else tally.set(key, value)


def evolve(state: BoardState, event: Event) -> BoardState:
    """`state` after `event` (events are trusted: decide made them valid)."""
    version = state.version + 1
    if isinstance(event, Scored):
        entries = state.entries
        dirty, moved = set(state.dirty), set(state.moved)
        for group, user, delta in event.changes:
            if not delta:
                continue
            key = (event.period, group)
            board = entries.get(key) or PMap()
            score = board.get(user, (0, 0))[0] + delta
            board = board.set(user, (score, version)) if score > 0 else board.remove(user)
            entries = entries.set(key, board) if board else entries.remove(key)
            if event.period == state.open_period:
                dirty.add(group)
                moved.add((group, user))
        bought = state.bought
        for group, seller, buyer, delta in event.members:
            bought = _bump(bought, (event.period, group, seller, buyer), delta)
        orders = state.orders
        if event.part:
            # What the order adds is what it added less the piece: the whole refund, or
            # the next piece, takes back from there.
            kept = orders[event.order][0]
            taken = {(g, u): d for g, u, d in event.changes}
            orders = orders.set(event.order, (replace(kept, changes=tuple(
                (g, u, d + taken.get((g, u), 0)) for g, u, d in kept.changes)), False))
        elif event.refund:
            orders = orders.set(event.order, (orders[event.order][0], True))
        else:
            orders = orders.set(event.order, (event, False))
        flush_at = state.flush_at
        window = state.window
        if dirty and flush_at is None:
            # Frames at most one per FLUSH_MS: due at once after a quiet spell, else when
            # the last frame is FLUSH_MS old.
            flush_at = event.at if state.flushed_at is None else max(
                event.at, state.flushed_at + FLUSH_MS)
            window = version
        return replace(state, entries=entries, orders=orders, bought=bought,
                       dirty=frozenset(dirty), moved=frozenset(moved), flush_at=flush_at,
                       window=window, version=version)
    if isinstance(event, Flushed):
        shown, seqs = state.shown, state.seqs
        for group, standing in event.boards:
            shown = shown.set(group, standing)
            seqs = seqs.set(group, seqs.get(group, 0) + 1)
        return replace(state, shown=shown, seqs=seqs, moved=frozenset(), dirty=frozenset(),
                       flush_at=None, flushed_at=event.at, version=version)
    # PeriodClosed: a frame of its champions on each group's topic that had any, then
    # one of the new period's top on each.
    shown, seqs = state.shown, state.seqs
    for group, _ in event.champions:
        seqs = seqs.set(group, seqs.get(group, 0) + 1)
    for group, standing in event.boards:
        shown = shown.set(group, standing)
        seqs = seqs.set(group, seqs.get(group, 0) + 1)
    champions = state.champions + tuple((event.period, g, standing)
                                        for g, standing in event.champions)
    return replace(state, open_period=event.next, shown=shown, seqs=seqs, moved=frozenset(),
                   dirty=frozenset(), flush_at=None, flushed_at=event.at, champions=champions,
                   version=version)


def release(state: BoardState, now: int) -> BoardState:
    """`state` without what no order can change any more: orders scored more than
    `keep_days` ago (their refunds are past the return window) and the tallies of
    periods that ended before that (an order that old is not scored); `state` itself
    when there is nothing to let go. The rows in Postgres (and the rank cache) keep
    them for reads."""
    horizon = now - state.campaign.keep_ms
    board = state.campaign
    old_orders = [o for o, (scored, _) in state.orders.items() if scored.at < horizon]

    def ended(period: str) -> bool:
        return period != ALL and bounds(board, period)[1] < horizon

    old_entries = [key for key in state.entries if ended(key[0])]
    old_bought = [key for key in state.bought if ended(key[0])]
    if not (old_orders or old_entries or old_bought):
        return state
    orders, entries, bought = state.orders, state.entries, state.bought
    for order in old_orders:
        orders = orders.remove(order)
    for key in old_entries:
        entries = entries.remove(key)
    for tally in old_bought:
        bought = bought.remove(tally)
    return replace(state, orders=orders, entries=entries, bought=bought)


def deadlines(state: BoardState) -> list[tuple[int, str]]:
    """The deadlines `state` holds: its pending flush, and the open period's close."""
    found = []
    if not all(g in state.seqs for g in opened(state.campaign)):
        found.append((state.campaign.starts_at, "open"))
    if state.flush_at is not None:
        found.append((state.flush_at, "flush"))
    board, period = state.campaign, state.open_period
    if period != ALL and closes(board, period):
        found.append((bounds(board, period)[1], f"close:{period}"))
    return found
