"""The game seam: what every game provides, and the game-neutral values around it.

One generic owner (`actors.owner`) hosts any game, the way Nakama's match handler hosts
any match: it keeps idempotency answers, commits what arrives together in one statement,
arms deadlines, publishes after commit and rebuilds on restart, and knows no game. A game
is one value implementing `Game`, registered in `games.registry`. It brings its campaign
type, its commands and events (frozen data, with a codec), `decide`/`evolve`, the
deadlines its state holds, its read-model rows, its live frames, the deals its events
make (as `Line`s the pipeline turns into orders without knowing the game) and its methods
and routes (data the gateway reads).

A game that holds something until it is paid (a seat, a purchase) arms a deadline for the
hold under a key of its own (`tick(key)` is the command a due deadline sends), and takes
the payment's outcome as a command like any other: a method it declares `public=False`,
which the server sends once it has verified the payment provider's notification.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from games.commission import Rates
from games.settings import Table


class Campaign(Protocol):
    """What every campaign has, whatever its game."""

    @property
    def id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def title(self) -> str: ...

    @property
    def starts_at(self) -> int: ...

    @property
    def ends_at(self) -> int: ...

    @property
    def commission(self) -> Rates | None: ...

    def public(self) -> dict[str, object]:
        """The campaign as `GET /api/campaigns` lists it."""
        ...


@dataclass(frozen=True)
class Param:
    """One declared parameter: a string matching `pattern` whole, or an int in
    [low, high]."""

    kind: type
    required: bool = True
    pattern: re.Pattern[str] | None = None
    low: int = 0
    high: int = 1 << 31


@dataclass(frozen=True)
class Route:
    """The HTTP route of a method: path parameters in braces, named like its params."""

    verb: str  # GET or POST
    path: str
    status: int = 200


@dataclass(frozen=True)
class Method:
    """A method a game offers over HTTP and `/ws`.

    A mutating method is a command for the campaign's owner (with the `facts` it asks
    for among its params); a read is answered from the game's read model: `"instance"`
    (the instance named by the `id_param`) or `"open"` (the open instances, soonest
    deadline first); or by the owner from its state, `"owner"`: the game's `command`
    and `decide` take it like a command that changes nothing (no events, nothing
    remembered), and its `answer` is the result, given once what was applied before it
    is durable (what a user sees of their own tallies, such as a lottery's draws left).
    """

    name: str
    params: Mapping[str, Param]
    mutating: bool
    route: Route | None = None
    read: str | None = None
    # Facts about the acting user the server adds to the params after checking them (a
    # client cannot send them: they are not declared params). Known: "newcomer" (True
    # when the user has never had an order).
    facts: tuple[str, ...] = ()
    # False for a command only the server sends (a payment's outcome, from a verified
    # notification): the owner takes it, the gateway never offers it to clients.
    public: bool = True
    # For such a command: the shop's event the pipeline sends it on, to every campaign of
    # this game running when it happened — "order_paid" (a paid order of any game, with
    # `order` in the params and the buyer as the user) or "order_refunded". Sent at least
    # once, with a key per order: the game takes each order once. Or "payment": the
    # provider's word on one of this campaign's payments (`payment`, `outcome` "paid" or
    # "closed", `amount`), from a verified notification or a reconciliation query.
    on: str | None = None
    # For a client's command: its answer carries a payment to create at the provider
    # (`"payment": P` with a pending `status`), which the server does before it answers.
    pays: bool = False
    # For such a command, when the amount its hold takes is the campaign's alone (a
    # group-buy's group price; a bargain's depends on its state): that amount (None for a
    # campaign that takes no payment). A provider
    # whose payer pays at once (the sandbox's default) then names the payment and pays
    # it before the command, which carries the payment and the amount the provider's
    # verified notification says was paid (params `payment` and `paid`, never a
    # client's): its game takes and pays the seat at once, or refuses and nothing was
    # taken.
    prepaid: Callable[[Any], int | None] | None = None
    # For a client's command that a share link leads to (opening or joining a group,
    # starting or helping a bargain, a draw): it takes an optional `referrer`, the
    # sharer's user id, which the gateway binds the user to before the command (as the
    # binding mode allows). The game never sees it: it is not among `params`.
    binds: bool = False


@dataclass(frozen=True)
class Column:
    name: str
    sql_type: str  # a Postgres type: text, text[], int, bigint, timestamptz, jsonb, bool


# Compared and hashed by identity (eq=False): each game declares its one model, and the
# owner's commit groups rows and caches its statement by model on every commit.
@dataclass(frozen=True, eq=False)
class ReadModel:
    """A game's read-model table, one row per instance, keyed by (campaign, id), written
    in the same transaction as the events that changed it. Its first two columns are
    `campaign` and `id`; `status`, `expires_at` (a read "open" lists the instances whose
    status is `open`, soonest first) and `version` (the instance's topic seq) must exist,
    and `updated_at`, which each write sets, must not be declared."""

    table: str
    columns: tuple[Column, ...]
    id_param: str  # the method parameter naming an instance ("group", "bargain")
    view_key: str  # the key of an instance in answers ("group", "bargain")
    # Whether its rows are a complete snapshot the host rebuilds from (`Game.rebuild`);
    # False: the host replays the campaign's events and never loads the rows.
    snapshot: bool = True
    # The id of the row that is the snapshot of the campaign-wide topic
    # (`{kind}:{campaign}`), whose `version` is that topic's seq; None: the game has no
    # campaign-wide topic.
    campaign_row: str | None = None
    # Whether some of its rows are entries of rankings the host mirrors into a rank cache
    # (a sorted set per ranking, see `Ranked`); None: none are.
    ranked: Ranked | None = None


@dataclass(frozen=True)
class Ranked:
    """Which read-model rows are ranking entries, and how they rank: the rows whose
    `status` is `status`, one ranking per value of the `group` columns, `member` ranked
    by `score` (higher first), then `order` (lower first: the ranking's tie-break), then
    `member`. The host mirrors them into its rank cache after each commit (a score of 0
    leaves the ranking) and rebuilds the cache from the rows when it is missing or stale;
    reads declared `read="ranked"` are answered from it (see `RankedGame`)."""

    status: str
    group: tuple[str, ...]
    member: str
    score: str
    order: str


@dataclass(frozen=True)
class RankRead:
    """A read of one ranking (`group`: the values of `Ranked.group`): `count` entries
    from 0-based position `start`; with `around` set, instead the `around` entries either
    side of `member`'s own; `member`'s own standing either way."""

    group: tuple[str, ...]
    member: str
    start: int = 0
    count: int = 10
    around: int | None = None


@dataclass(frozen=True)
class Publish:
    """A live frame: `data` for `topic`, at `seq` (0: numbered by the topic itself)."""

    topic: str
    seq: int
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Line:
    """One line of a deal or of a refund, game-neutral: what the pipeline makes an order
    of (or refunds). `instance` and `line` identify it within its campaign: the pipeline
    makes at most one order per (campaign, instance, line)."""

    user: str
    sku: str
    amount: int  # fen
    instance: str
    line: str
    # The provider's payment for the line (games.payments), where the game took one:
    # what a refund gives back and what a check asks the provider about.
    payment: str = ""


@dataclass(frozen=True)
class Outbox:
    """What an event hands the pipeline, by `kind`:

    - "paid": money taken for `lines` (a seat paid for): orders made, waiting for the deal;
    - "deal": the deal is done: the lines' orders (made now where no payment came first)
      are confirmed and earn their commissions;
    - "refund": the lines' money goes back (a failed group's paid members): their orders,
      if any, are refunded;
    - "return": money taken for a hold that was gone goes back at once (no order);
    - "check": the lines' holds lapsed unpaid: the provider is asked, and its word comes
      back to the game as its `on="payment"` method.
    """

    kind: str
    lines: tuple[Line, ...]


@dataclass(frozen=True)
class Applied:
    """What the host needs of each event a command produced."""

    instance: str  # the instance it changed
    seq: int  # the instance's version after it (its topic's seq)
    type: str
    data: dict[str, Any]  # the codec's form, stored in the event stream
    frames: Sequence[Publish] = ()
    outbox: Outbox | None = None
    deadline: tuple[int, str] | None = None  # (epoch ms, key) it arms
    also: tuple[tuple[int, str], ...] = ()  # further deadlines it arms


# How long a host remembers each command's answer (its idempotency key): a game whose
# notes (`Game.note`) refer to its instances keeps them at least this long after its
# campaign's end.
ANSWERS_KEPT_DAYS = 1
ANSWERS_KEPT_MS = ANSWERS_KEPT_DAYS * 86_400_000

C = TypeVar("C", bound=Campaign)
S = TypeVar("S")
K = TypeVar("K")  # the game's command type
E = TypeVar("E")  # the game's event type


class Game(Protocol[C, S, K, E]):
    """One kind of game (see the module docstring). Times are epoch milliseconds."""

    kind: str
    read_model: ReadModel
    methods: tuple[Method, ...]

    def parse_campaign(self, table: Table, rates: Rates) -> C:
        """A campaign table of this kind (`rates`: the shop's commission rates)."""
        ...

    def initial(self, campaign: C) -> S:
        """A campaign before anything happened."""
        ...

    def command(self, method: str, user: str, params: Mapping[str, Any]) -> K:
        """A client's command (params already checked against the method's declaration);
        GameError when it names nothing this game does."""
        ...

    def fingerprint(self, command: K) -> str:
        """What an idempotency key was first used for: the same key for another request
        is refused, not answered with the first request's answer."""
        ...

    def decide(self, state: S, command: K, now: int, rng: random.Random) -> list[E]:
        """The events `command` causes, or GameError."""
        ...

    def evolve(self, state: S, event: E) -> S:
        """`state` after `event`."""
        ...

    def version(self, state: S) -> int:
        """Events folded into `state` so far (its stream's version)."""
        ...

    def applied(self, campaign: C, state: S, event: E) -> Applied:
        """How to store, publish and hand on `event`; `state` is the state after it."""
        ...

    def decode(self, data: Mapping[str, Any]) -> E:
        """An event from its stored form (`Applied.data`)."""
        ...

    def answer(self, campaign: C, state: S, command: K, events: Sequence[E], now: int
               ) -> str:
        """The result a command earned at `now` (`state` after its events), as JSON text
        of an object (`games.jsontext.compact`). Text, because answers travel and are remembered
        as text; a game may splice parts it keeps encoded (a long list that only grows)
        rather than encode them again for every answer."""
        ...

    def note(self, campaign: C, state: S, command: K, events: Sequence[E]) -> str | None:
        """A short note to remember instead of this command's answer, from which `recall`
        renders the answer again exactly; None to remember the answer itself. For answers
        that grow with an instance (a bargain's help carries every helper so far), so a
        day of them is not O(n²) bytes in Postgres and in the host's memory."""
        ...

    def recall(self, campaign: C, state: S, note: str) -> str:
        """The answer (JSON text) that `note` was made for, exactly as first given."""
        ...

    def deadlines(self, state: S) -> Iterable[tuple[int, str]]:
        """Every deadline `state` holds (re-armed on rebuild): (epoch ms, key)."""
        ...

    def tick(self, key: str) -> K:
        """The command a due deadline sends (a no-op unless it is still due)."""
        ...

    def rows(self, campaign: C, state: S, instances: Iterable[str]) -> list[tuple[Any, ...]]:
        """Read-model rows of `instances`, in `read_model.columns` order; KeyError for an
        instance the state does not hold."""
        ...

    def rebuild(self, campaign: C, rows: Sequence[Mapping[str, Any]], version: int
                ) -> S | None:
        """The state whose instances are `rows`, if they are a complete snapshot of a
        stream at `version` (else None: the host replays the events)."""
        ...

    def view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """An instance as the API shows it, from its read-model row."""
        ...

    def summary(self, state: S) -> dict[str, int]:
        """A few counts of `state` an operator reads (`ready()`), such as stock left."""
        ...

    def release(self, campaign: C, state: S, now: int) -> S:
        """`state` with what nothing can change any more let go (memory bounded by
        running campaigns); `state` itself when nothing is."""
        ...


@runtime_checkable
class RankedGame(Protocol):
    """What a game whose read model is `ranked` adds: how its `read="ranked"` methods
    name a ranking, and the answer from the entries the rank cache holds."""

    def rank_read(self, campaign: Any, method: str, user: str, params: Mapping[str, Any],
                  now: int) -> RankRead:
        """The ranking and positions a read asks for (GameError for what it cannot)."""
        ...

    def rank_answer(self, campaign: Any, read: RankRead, first: int,
                    entries: Sequence[tuple[str, int]], me: tuple[int, int] | None, now: int
                    ) -> dict[str, Any]:
        """The result from the cache: `entries` (member, score) from 0-based position
        `first` (`read.start`, or where the window around `me` starts), and `me` the
        member's (0-based rank, score), or None when unranked."""
        ...
