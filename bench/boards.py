"""The leaderboard scenario's measurements: what homepage sockets saw of a board while
deals moved it, the lag from each deal's commit to the board frame that first showed it,
and the checks, read from Postgres once the deals' scores were all taken.

How the lag is measured. Each completed deal is one `deal` outbox row: its `created_at`
is the start of the statement that committed the deal (Postgres' clock, the machine's:
the generators stamp frames with the same clock). Its orders (one per member, each of a
buyer bound to one of the board's sellers) are scored for the buyer's referrer: a deal
adds a known amount to each seller it pays, a *unit* (deal, seller, amount). A seller's
units in commit order give running totals; a board frame showing score S for a seller
shows the first n of them, n the number of running totals ≤ S (scores only grow: no
refunds in the run). The units a frame shows first on a socket are those between the
socket's previous frame (or its snapshot) and this one; each one's lag on that socket is
the frame's arrival minus the unit's commit. Every (unit, socket) pair is one sample,
so p99 is over what 5,000 homepages each saw of 10,000 deals. This is exact when the
owner takes a seller's units in commit order (the pipeline confirms deals and writes
their notices in outbox order, delivered in id order); where two commit so close that
they are taken the other way round, it is the counter's lag (the k-th commit until the
board shows k), off by that reordering alone.

The samples are never expanded: sockets that saw the same two frames in a row share the
units first shown, so a group is (sorted arrivals, commits) and its samples are every
difference between the two; the percentiles are found by counting (`pair_quantile`).
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate, pairwise
from typing import Any

import asyncpg

from games.leaderboard.rules import FLUSH_MS

Scores = dict[str, int]  # a board's shown scores by user
Group = tuple[Sequence[float], Sequence[float]]  # (sorted arrivals, commits), epoch ms

# The invariants of a boards run (each must be 0): the board's scores in Postgres, as its
# rank cache answers them (HTTP read), and as the last frame of each socket show them,
# against the sums recomputed from Postgres' orders; two frames of the board closer than
# the coalescing window on its owner's clock; units never shown by the final board;
# notices the owner never took; acknowledged opens and joins missing from the events;
# deals without their orders.
BROKEN = ("scores_mismatch", "read_mismatch", "sockets_stale", "frames_too_close",
          "units_unshown", "notices_unsent", "lost_acks", "deals_without_orders")


def scores_of(entries: Iterable[Mapping[str, Any]]) -> Scores:
    """A frame's (or snapshot's) `entries` as {user: score}."""
    return {str(e["user"]): int(e["score"]) for e in entries}


@dataclass
class BoardWatch:
    """What one generator's sockets saw of a board topic, kept small: each distinct
    frame's scores once (by seq), and for each (previous seq, seq) a socket saw in a row,
    the arrivals (epoch ms) of that frame on those sockets.

    `gaps` counts frames that came after a hole in the seqs (a frame the socket never
    got as an event); `inconsistent` frames whose scores differ from another socket's
    frame of the same seq (there must be none); `closest_ms` is the shortest time
    between two frames on one socket; `bursts` counts frames that arrived within 1 s of
    the one two before them on their socket (three in one second).
    """

    sockets: int
    frames: dict[int, Scores] = field(default_factory=dict)
    groups: dict[tuple[int, int], array[float]] = field(default_factory=dict)
    first: dict[int, float] = field(default_factory=dict)  # seq -> its earliest arrival
    gaps: int = 0
    inconsistent: int = 0
    closest_ms: float = math.inf
    bursts: int = 0
    expected: Scores | None = None
    subscribed: int = 0  # sockets that had their snapshot
    matched: int = 0  # sockets whose last frame shows `expected`
    _last: list[int] = field(default_factory=list)
    _scores: list[Scores | None] = field(default_factory=list)
    _times: list[tuple[float, float]] = field(default_factory=list)  # the last two arrivals
    _done: list[bool] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._last = [-1] * self.sockets
        self._scores = [None] * self.sockets
        self._times = [(-math.inf, -math.inf)] * self.sockets
        self._done = [False] * self.sockets

    def _known(self, seq: int, scores: Scores) -> None:
        seen = self.frames.setdefault(seq, scores)
        if seen != scores:
            self.inconsistent += 1

    def snapshot(self, socket: int, seq: int, scores: Scores) -> None:
        """Socket `socket` subscribed: its snapshot, at `seq`."""
        self._known(seq, scores)
        if self._last[socket] < 0:
            self.subscribed += 1
        self._last[socket] = seq
        self._scores[socket] = scores

    def frame(self, socket: int, seq: int, scores: Scores, arrival: float) -> bool:
        """A board frame on `socket` at `arrival` (epoch ms); whether it made every
        subscribed socket show `expected` (the caller's cue to stop waiting)."""
        if seq <= self._last[socket]:
            return False  # a frame the socket's snapshot already covers
        self._known(seq, scores)
        if seq != self._last[socket] + 1:
            self.gaps += 1
        self.groups.setdefault((self._last[socket], seq), array("d")).append(arrival)
        self.first[seq] = min(arrival, self.first.get(seq, math.inf))
        before, last = self._times[socket]
        self.closest_ms = min(self.closest_ms, arrival - last)
        if arrival - before < 1000.0:
            self.bursts += 1
        self._times[socket] = (last, arrival)
        self._last[socket] = seq
        self._scores[socket] = scores
        return self._check(socket)

    def _check(self, socket: int) -> bool:
        if self.expected is not None and not self._done[socket] \
                and self._scores[socket] == self.expected:
            self._done[socket] = True
            self.matched += 1
        return self.matched == self.subscribed

    def expect(self, expected: Scores) -> bool:
        """The final scores every subscribed socket should come to show; whether all do
        already."""
        self.expected, self.matched = dict(expected), 0
        self._done = [False] * self.sockets
        for socket in range(self.sockets):
            self._check(socket)
        return self.matched == self.subscribed


@dataclass(frozen=True)
class Ledger:
    """Each seller's units in commit order: running totals and commit times (epoch ms)."""

    totals: dict[str, list[int]]
    commits: dict[str, list[float]]

    @classmethod
    def of(cls, units: Iterable[tuple[str, float, int]]) -> Ledger:
        """From units (seller, commit epoch ms, amount), in any order."""
        by_seller: dict[str, list[tuple[float, int]]] = {}
        for seller, at, amount in units:
            by_seller.setdefault(seller, []).append((at, amount))
        totals: dict[str, list[int]] = {}
        commits: dict[str, list[float]] = {}
        for seller, items in by_seller.items():
            items.sort()
            totals[seller] = list(accumulate(amount for _, amount in items))
            commits[seller] = [at for at, _ in items]
        return cls(totals, commits)

    def shown(self, scores: Mapping[str, int]) -> dict[str, int]:
        """How many of each seller's units `scores` shows (a seller not shown: none)."""
        return {seller: bisect_right(totals, scores.get(seller, 0))
                for seller, totals in self.totals.items()}

    def first_shown(self, before: Mapping[str, int], after: Mapping[str, int]
                    ) -> list[float]:
        """Commit times of the units `after` shows that `before` did not."""
        was, now = self.shown(before), self.shown(after)
        return [at for seller, commits in self.commits.items()
                for at in commits[was[seller]:now[seller]]]

    def units(self) -> int:
        return sum(len(c) for c in self.commits.values())


def lag_groups(ledger: Ledger, frames: Mapping[int, Mapping[str, int]],
               arrivals: Mapping[tuple[int, int], Sequence[float]]) -> list[Group]:
    """(sorted arrivals, commits of the units first shown) for each (previous seq, seq)
    sockets saw in a row; frames with nothing new leave no group, nor do sockets that
    never had their snapshot."""
    found: list[Group] = []
    for (before, after), times in arrivals.items():
        if before not in frames:
            continue  # a socket without its snapshot: what it showed before is unknown
        commits = ledger.first_shown(frames[before], frames[after])
        if commits and times:
            found.append((sorted(times), commits))
    return found


def pairs(groups: Sequence[Group]) -> int:
    """How many samples `groups` hold (every arrival with every commit of its group)."""
    return sum(len(a) * len(c) for a, c in groups)


def count_at_most(groups: Sequence[Group], lag: float) -> int:
    """Samples (arrival − commit) of `groups` at most `lag`."""
    return sum(bisect_right(arrivals, lag + commit)
               for arrivals, commits in groups for commit in commits)


def pair_quantile(groups: Sequence[Group], q: float, resolution: float = 0.01) -> float:
    """The q-quantile (nearest rank, as `bench.report.percentile`) of every arrival minus
    every commit of its group, within `resolution` ms; NaN without samples."""
    n = pairs(groups)
    if not n:
        return math.nan
    rank = min(n - 1, int(q * n)) + 1  # the smallest lag with this many at or below it
    low = min(a[0] - max(c) for a, c in groups) - resolution
    high = max(a[-1] - min(c) for a, c in groups)
    while high - low > resolution:
        middle = (low + high) / 2
        if count_at_most(groups, middle) >= rank:
            high = middle
        else:
            low = middle
    return high


def lag_summary(groups: Sequence[Group]) -> dict[str, float]:
    """Samples, p50, p99 and max of the lags (ms) `groups` hold."""
    return {"samples": pairs(groups), "p50_ms": pair_quantile(groups, 0.50),
            "p99_ms": pair_quantile(groups, 0.99),
            "max_ms": max((a[-1] - min(c) for a, c in groups), default=math.nan)}


def rate(times: Iterable[float], since: float, until: float) -> tuple[float, int]:
    """(per second over [since, until), most within any 1 s) of `times` (epoch ms)."""
    inside = sorted(t for t in times if since <= t < until)
    busiest = max((bisect_left(inside, t + 1000.0) - i for i, t in enumerate(inside)),
                  default=0)
    seconds = (until - since) / 1000.0
    return (len(inside) / seconds if seconds > 0 else math.nan), busiest


def closest(times: Iterable[float]) -> float:
    """The shortest time between two of `times` (ms); inf for fewer than two."""
    ordered = sorted(times)
    return min((b - a for a, b in pairwise(ordered)), default=math.inf)


def too_close(times: Iterable[float], window: float = FLUSH_MS) -> int:
    """Consecutive `times` (ms) less than `window` apart."""
    ordered = sorted(times)
    return sum(1 for a, b in pairwise(ordered) if b - a < window)


def mismatch(expected: Mapping[str, int], found: Mapping[str, int]) -> int:
    """Sellers whose score in `found` is not the one `expected` (either side missing)."""
    return sum(1 for user in expected.keys() | found.keys()
               if expected.get(user, 0) != found.get(user, 0))


def merge(watches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The generators' `board_collect` answers as one: frames, arrivals by (previous
    seq, seq), first arrivals and the counts."""
    frames: dict[int, Scores] = {}
    arrivals: dict[tuple[int, int], array[float]] = {}
    first: dict[int, float] = {}
    total: dict[str, Any] = {"gaps": 0, "inconsistent": 0, "bursts": 0, "sockets": 0,
                             "subscribed": 0, "matched": 0, "closest_ms": math.inf,
                             "frames_received": 0}
    for w in watches:
        for seq, scores in w["frames"].items():
            if frames.setdefault(seq, scores) != scores:
                total["inconsistent"] += 1
        for key, chunk in w["groups"]:
            times = arrivals.setdefault(key, array("d"))
            times.frombytes(chunk)
        for seq, at in w["first"].items():
            first[seq] = min(at, first.get(seq, math.inf))
        for key in ("gaps", "inconsistent", "bursts", "sockets", "subscribed", "matched",
                    "frames_received"):
            total[key] += w[key]
        total["closest_ms"] = min(total["closest_ms"], w["closest_ms"])
    return {"frames": frames, "arrivals": arrivals, "first": first, **total}


# --- Postgres ---------------------------------------------------------------------------

# Each deal's units: the deal's commit (its outbox row's created_at) and what it added to
# each seller, its orders' amounts summed by the buyer's referrer.
_UNITS = """
SELECT r.referrer, (extract(epoch FROM ob.created_at) * 1000)::float8 AS at,
       sum(o.amount)::bigint AS amount
FROM outbox ob
CROSS JOIN LATERAL (SELECT DISTINCT l->>'instance' AS instance
                    FROM jsonb_array_elements(ob.data->'lines') AS l) li
JOIN orders o ON o.campaign = ob.data->>'campaign' AND o.instance = li.instance
JOIN referrals r ON r.user_id = o.user_id AND r.referrer <> o.user_id
WHERE ob.type = 'deal' AND ob.data->>'campaign' = ANY($1::text[])
  AND o.status = 'paid' AND o.confirmed_at IS NOT NULL
GROUP BY ob.id, ob.created_at, r.referrer
"""
# The board's sales metric recomputed from the orders: each paid order credits its
# buyer's direct referrer with its amount.
_EXPECTED = """
SELECT r.referrer, sum(o.amount)::bigint AS score
FROM orders o JOIN referrals r ON r.user_id = o.user_id AND r.referrer <> o.user_id
WHERE o.campaign = ANY($1::text[]) AND o.status = 'paid' AND o.confirmed_at IS NOT NULL
GROUP BY 1
"""
_NOTICES = """
SELECT count(*) AS notices, count(sent_at) AS taken,
       extract(epoch FROM min(sent_at)) * 1000 AS first_ms,
       extract(epoch FROM max(sent_at)) * 1000 AS last_ms,
       (SELECT coalesce(max(n), 0) FROM (
           SELECT count(*) AS n FROM game_notices WHERE campaign = $1 AND sent_at IS NOT NULL
           GROUP BY date_trunc('second', sent_at)) AS s) AS peak_per_s,
       percentile_disc(0.5) WITHIN GROUP (ORDER BY sent_at - created_at) AS wait_p50,
       percentile_disc(0.99) WITHIN GROUP (ORDER BY sent_at - created_at) AS wait_p99,
       max(sent_at - created_at) AS wait_max
FROM game_notices WHERE campaign = $1 AND method = 'leaderboard.score'
"""


async def units(conn: asyncpg.Connection, campaigns: Sequence[str]) -> Ledger:
    """Every deal's units in `campaigns` (see the module's docstring)."""
    rows = await conn.fetch(_UNITS, list(campaigns))
    return Ledger.of((r["referrer"], float(r["at"]), int(r["amount"])) for r in rows)


async def expected(conn: asyncpg.Connection, campaigns: Sequence[str]) -> Scores:
    """The sellers' sales from `campaigns`' paid, confirmed orders."""
    return {r["referrer"]: int(r["score"])
            for r in await conn.fetch(_EXPECTED, list(campaigns))}


async def board_scores(conn: asyncpg.Connection, board: str, period: str = "all",
                       group: str = "all") -> Scores:
    """The board's scores in Postgres (its entry rows of `period` and `group`)."""
    rows = await conn.fetch(
        "SELECT user_id, score FROM leaderboards WHERE campaign = $1 AND status = 'entry'"
        " AND period = $2 AND region = $3", board, period, group)
    return {r["user_id"]: int(r["score"]) for r in rows}


async def flush_times(conn: asyncpg.Connection, board: str, group: str = "all"
                      ) -> list[float]:
    """When the board's owner published a frame of `group` (each `flushed` event that
    changed it): the event's `at`, epoch ms on the owner's clock."""
    rows = await conn.fetch(
        "SELECT (data->>'at')::float8 AS at FROM events WHERE stream = $1"
        " AND type = 'flushed' AND EXISTS (SELECT 1 FROM jsonb_array_elements(data->'boards')"
        " AS b WHERE b->>0 = $2)", f"leaderboard:{board}", group)
    return [float(r["at"]) for r in rows]


async def notices(conn: asyncpg.Connection, board: str) -> dict[str, Any]:
    """The order notices the board's owner took: how many, per second from the first to
    the last taken, the most taken in one second, and how long each waited between its
    order's commit and the owner's answer (p50 / p99 / max ms)."""
    row = await conn.fetchrow(_NOTICES, board)
    taken = int(row["taken"])
    span = (float(row["last_ms"]) - float(row["first_ms"])) / 1000 if taken > 1 else 0.0

    def ms(value: Any) -> float:
        return math.nan if value is None else value.total_seconds() * 1000

    return {"notices": int(row["notices"]), "taken": taken,
            "taken_per_s": taken / span if span > 0 else math.nan,
            "peak_per_s": int(row["peak_per_s"]), "wait_p50_ms": ms(row["wait_p50"]),
            "wait_p99_ms": ms(row["wait_p99"]), "wait_max_ms": ms(row["wait_max"])}


async def wait_open(conn: asyncpg.Connection, board: str, timeout: float) -> float:
    """Poll until the board's topic has its snapshot row (its owner's first flush, made
    as it starts), so that every socket's subscribe finds it (or `timeout` s passed);
    seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await conn.fetchval("SELECT 1 FROM leaderboards WHERE campaign = $1 AND id = 'all'",
                               board):
            break
        await asyncio.sleep(0.25)  # the owner starts in another process
    return time.monotonic() - started


async def wait_taken(conn: asyncpg.Connection, board: str, timeout: float) -> float:
    """Poll until the outbox is processed and the board's owner took every notice (or
    `timeout` s passed); seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        left = await conn.fetchval(
            "SELECT (SELECT count(*) FROM outbox WHERE processed_at IS NULL)"
            " + (SELECT count(*) FROM game_notices WHERE campaign = $1 AND sent_at IS NULL)",
            board)
        if not left:
            break
        await asyncio.sleep(0.25)  # the pipeline and the owner work in other processes
    return time.monotonic() - started


def failures(result: dict[str, Any] | None) -> list[str]:
    """What fails a run in the boards scenario: a broken invariant (see BROKEN), no deal
    or no frame at all. Never the lag or the frame rate the sockets saw: speed is
    reported, not asserted."""
    if result is None:
        return []
    found = [f"boards {key} = {result.get(key)}" for key in BROKEN if result.get(key, 1)]
    if not result.get("deals"):
        found.append("boards: no deal was made")
    if not result.get("frames"):
        found.append("boards: no board frame reached a socket")
    return found
