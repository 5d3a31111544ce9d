"""The methods every transport offers: parse-free, typed, mapping results to ApiError.

HTTP routes and WebSocket `call` frames both land here, so a method behaves the same
whichever way it arrives. Game commands go to the owning actor; reads go to Postgres.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.exceptions

from actors.client import ShardClient
from actors.pipeline_client import PipelineClient
from games import core, payments
from games.commission import grade_of, may_earn
from games.errors import GameError
from games.registry import GAMES
from server.auth import Identity
from server.customers import Customers
from server.errors import ApiError
from server.metrics import Metrics
from server.outcomes import Encoded, Outcome, compact, decoded, encode, result_of
from server.params import USER_ID, Param, check
from server.paydesk import PayDesk
from storage import distributors, read_models, reads
from storage.config import Config
from storage.ranks import RankCache
from storage.regions import Regions

log = logging.getLogger("fission.gateway")

Handler = Callable[["Gateway", Identity, dict[str, Any], "str | None"], Awaitable[Outcome]]
__all__ = ["Encoded", "Handler", "Method", "Outcome", "compact", "encode", "result_of"]

_SERVICE_FAILURES = frozenset({"internal", "unavailable"})

# What a read raises while Postgres or Redis is down or restarting.
STORAGE_DOWN: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError,
    redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def command_log_level(outcome: str, log_commands: bool) -> int | None:
    """The level of a command's log line, or None for no line.

    Failures of the service are always logged; a line per command costs a few percent of
    a busy gateway, so that access log is opt-in (metrics count every command anyway).
    """
    if outcome in _SERVICE_FAILURES:
        return logging.WARNING
    return logging.INFO if log_commands else None


@dataclass(frozen=True)
class Method:
    """A method every transport offers: its declared params, its handler, and its HTTP
    route (None: over `/ws` only)."""

    name: str
    params: Mapping[str, Param]
    handler: Handler
    mutating: bool
    route: core.Route | None = None


class Gateway:
    """What the transports call; holds the actor client, the read pool and metrics."""

    def __init__(self, config: Config, client: ShardClient, pool: asyncpg.Pool,
                 metrics: Metrics, pipeline: PipelineClient,
                 paydesk: PayDesk | None = None) -> None:
        self.config = config
        self.paydesk = paydesk
        self.client = client
        self.pool = pool
        self.customers = Customers(pool)
        self.regions = Regions(pool)
        # The rank cache ranked reads are answered from (the server connects it).
        self.ranks: RankCache | None = None
        self.metrics = metrics
        self.pipeline = pipeline

    async def call(self, identity: Identity, method: str, params: Any,
                   key: str | None) -> Outcome:
        """Run `method` as `identity`; its result, or ApiError. Logs and counts it."""
        started = time.perf_counter()
        outcome = "ok"
        try:
            spec = METHODS.get(method)
            if spec is None:
                raise ApiError("invalid_request", f"unknown method {method!r}")
            clean = check(params, spec.params)
            # Where the user acts from, for the leaderboards' regional boards (a write only
            # when it changed since this gateway last recorded it).
            await self.regions.note(identity.user, identity.region)
            return await spec.handler(self, identity, clean, key)
        except ApiError as exc:
            outcome = exc.code
            raise
        except STORAGE_DOWN:
            # Postgres (or Redis) not answering is the service unavailable, not a bug:
            # 503, and the client retries (with its key).
            outcome = "unavailable"
            raise ApiError("unavailable", "storage is unavailable; try again") from None
        except Exception:
            outcome = "internal"
            raise
        finally:
            elapsed = time.perf_counter() - started
            name = method if method in METHODS else "unknown"
            self.metrics.command(name, outcome, elapsed)
            level = command_log_level(outcome, self.config.server.log_commands)
            if level is not None:
                log.log(level, "command", extra={"fields": {
                    "method": name, "outcome": outcome, "ms": round(elapsed * 1000, 2),
                    "user": identity.user}})

    def campaign(self, campaign_id: str, kind: str | None = None) -> core.Campaign:
        """The campaign `campaign_id` (of `kind`, when given), or ApiError(not_found)."""
        found = self.config.campaign(campaign_id)
        if found is None or (kind is not None and found.kind != kind):
            what = f"{kind} campaign" if kind else "campaign"
            raise ApiError("not_found", f"no {what} {campaign_id!r}")
        return found

    async def game(self, command: dict[str, Any]) -> Outcome:
        """Send a game command to its owner; the result, or ApiError with its code."""
        return result_of(await self.client.call(command))


def _command(game: core.Game[Any, Any, Any, Any], method: core.Method) -> Handler:
    """The handler sending a game's command (or a read of its state, `read="owner"`,
    which is never remembered by key) to the campaign's owner, with the facts about the
    user its method asks for."""
    remembered = method.mutating

    async def command(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                      ) -> Outcome:
        campaign = gw.campaign(p["campaign"], game.kind)
        # The share link's referrer is the gateway's, never the game's (its reducer
        # takes only the params it declared).
        params = {k: v for k, v in p.items() if k not in ("campaign", REFERRER)}
        referral = await _bind_on_entry(gw, who, p[REFERRER]) if REFERRER in p else None
        for fact in method.facts:
            params[fact] = await _FACTS[fact](gw, who)
        sent = {"method": method.name, "campaign": p["campaign"], "user": who.user,
                "key": key if remembered else None, "params": params}
        desk = gw.paydesk
        amount = None
        if method.pays and desk is not None and desk.immediate and method.prepaid:
            amount = method.prepaid(campaign)
        if amount is not None:
            assert desk is not None
            # The sandbox's payer pays at once: the command carries the payment named for
            # it and the sandbox's verified word on what was paid.
            instance = str(p.get(game.read_model.id_param, ""))
            params["payment"], params["paid"] = await desk.prepay(
                who.user, p["campaign"], (method.name, instance, key or secrets.token_hex(8)),
                amount)
            result = await gw.game(sent)
        else:
            result = await gw.game(sent)
            if method.pays and desk is not None:
                # A payment to create (in the sandbox, maybe paid at once) before answering.
                result = await desk.settle(who.user, p["campaign"], result)
        return result if referral is None else {**decoded(result), **referral}
    return command


# The optional param of a method a share link leads to (games.core.Method.binds): the
# sharer's user id. Named like `referrals.bind`'s param; a /ws frame's own `ref` is its
# idempotency key, so the share link's id is not called that.
REFERRER = "referrer"
REFERRER_PARAM = Param(str, required=False, pattern=USER_ID)


async def _bind_on_entry(gw: Gateway, who: Identity, referrer: str) -> dict[str, Any]:
    """Bind the caller to the share link's `referrer` before their command, as
    `referrals.bind` would; what the command's answer adds: `referral` (the binding in
    force, to `referrer`), or `referral_error` (`code`, `message`: why not, the binding
    unchanged). A refusal, or the pipeline being down, never fails the command itself."""
    try:
        bound = decoded(result_of(await gw.pipeline.bind(who.user, referrer)))
    except ApiError as exc:
        return {"referral_error": {"code": exc.code, "message": exc.message}}
    return {"referral": bound["referral"]}


async def _newcomer(gw: Gateway, who: Identity) -> bool:
    return not await gw.customers.has_ordered(who.user)


async def _home_region(gw: Gateway, who: Identity) -> str | None:
    return who.region


# What the server knows of a user that a game may ask for (games.core.Method.facts):
# "home_region" is the region claim of the caller's token (None without one).
_FACTS: dict[str, Callable[[Gateway, Identity], Awaitable[Any]]] = {
    "newcomer": _newcomer, "home_region": _home_region}


def _read(game: core.Game[Any, Any, Any, Any], read: str | None) -> Handler:
    """The handler answering a game's read from its read model."""
    model = game.read_model

    async def one(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                  ) -> Outcome:
        gw.campaign(p["campaign"], game.kind)
        instance = p[model.id_param]
        row = await read_models.one(gw.pool, model, p["campaign"], instance)
        if row is None:
            raise ApiError("not_found", f"no {model.id_param} {instance!r} in campaign"
                                        f" {p['campaign']!r}")
        return {model.view_key: game.view(row)}

    async def open_ones(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                        ) -> Outcome:
        gw.campaign(p["campaign"], game.kind)
        rows = await read_models.open_ones(gw.pool, model, p["campaign"], p.get("limit", 20))
        return {f"{model.view_key}s": [game.view(row) for row in rows]}

    if read == "instance":
        return one
    if read == "open":
        return open_ones
    raise ValueError(f"{game.kind}: unknown read {read!r}")


def _ranked(game: core.Game[Any, Any, Any, Any], method: core.Method) -> Handler:
    """The handler answering a game's read of a ranking from the rank cache
    (storage.ranks): the game names the ranking and shapes the answer."""
    if not isinstance(game, core.RankedGame) or game.read_model.ranked is None:
        raise ValueError(f"{game.kind}: read {method.name!r} is ranked, the game is not")
    ranked: core.RankedGame = game

    async def read(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                   ) -> Outcome:
        campaign = gw.campaign(p["campaign"], game.kind)
        params = {k: v for k, v in p.items() if k != "campaign"}
        for fact in method.facts:
            params[fact] = await _FACTS[fact](gw, who)
        now = time.time_ns() // 1_000_000
        try:
            query = ranked.rank_read(campaign, method.name, who.user, params, now)
        except GameError as exc:
            raise ApiError(exc.code, exc.message) from None
        if gw.ranks is None:
            raise ApiError("unavailable", "the rank cache is not connected; try again")
        first, entries, me = await gw.ranks.read(campaign.id, query)
        return ranked.rank_answer(campaign, query, first, entries, me, now)
    return read


def game_methods(games: Iterable[core.Game[Any, Any, Any, Any]]) -> list[Method]:
    """The methods of `games` the gateway offers clients (their public ones)."""
    found = []
    for game in games:
        for m in game.methods:
            if not m.public:
                continue  # the server's own commands (a payment's outcome), not a client's
            handler = (_command(game, m) if m.mutating or m.read == "owner"
                       else _ranked(game, m) if m.read == "ranked" else _read(game, m.read))
            params = m.params
            if m.binds:
                if REFERRER in params or not m.mutating:
                    raise ValueError(f"{m.name}: a method that binds is a command, and"
                                     f" {REFERRER!r} is the gateway's param")
                params = {**params, REFERRER: REFERRER_PARAM}
            found.append(Method(m.name, params, handler, m.mutating, m.route))
    return found


async def _campaigns(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                     ) -> Outcome:
    return {"campaigns": [c.public() for c in gw.config.campaigns]}


async def _leaderboards(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                        ) -> Outcome:
    return {"boards": [c.public() for c in gw.config.campaigns if c.kind == "leaderboard"]}


async def _orders(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                  ) -> Outcome:
    return {"orders": await reads.list_orders(gw.pool, who.user, p.get("limit", 50))}


async def _bind(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                ) -> Outcome:
    # Binding is idempotent by nature: the same binding again answers as the first did.
    return result_of(await gw.pipeline.bind(who.user, p["referrer"]))


async def _referral(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                    ) -> Outcome:
    return await reads.referral(gw.pool, who.user)


async def _commissions(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                       ) -> Outcome:
    return await reads.commissions(gw.pool, who.user, p.get("limit", 50))


async def _refund(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                  ) -> Outcome:
    # With a key, a repeat answers the order again and refunds nothing more; without
    # one, refunding the rest of a refunded order answers it again too (a piece named by
    # its amount is a new piece each time, as a withdrawal without a key is).
    return result_of(await gw.pipeline.refund(who.user, p["order"], p.get("amount"), key))


async def _refund_after_sales(gw: Gateway, who: Identity, p: dict[str, Any],
                              key: str | None) -> Outcome:
    _marketer(who)
    return result_of(await gw.pipeline.refund_after_sales(
        who.user, p["order"], p.get("amount"), key, p.get("note")))


def _marketer(who: Identity) -> None:
    if who.role != "marketer":
        raise ApiError("forbidden", "only a marketer may do this")


async def _team(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                ) -> Outcome:
    return await reads.team(gw.pool, who.user, p.get("limit", 50))


async def _user_team(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                     ) -> Outcome:
    _marketer(who)
    return await reads.team(gw.pool, p["user"], p.get("limit", 50))


async def _tax_report(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                      ) -> Outcome:
    _marketer(who)
    commission = gw.config.commission
    return {"year": p["year"], "threshold": commission.tax_threshold_fen,
            "zone": commission.tax_zone, "users": await reads.tax_report(gw.pool, p["year"])}


async def _user_referrals(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                          ) -> Outcome:
    _marketer(who)
    return await reads.referral_history(gw.pool, p["user"], p.get("limit", 50))


async def _user_commissions(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                            ) -> Outcome:
    _marketer(who)
    return {"user": p["user"], **await reads.commissions(gw.pool, p["user"],
                                                         p.get("limit", 50))}


async def _withdraw(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                    ) -> Outcome:
    # Without a key every request is a new withdrawal; with one, a repeat answers the first.
    return result_of(await gw.pipeline.withdraw(who.user, key or f"auto-{uuid.uuid4().hex}",
                                                 p["amount"]))


async def _quote(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                 ) -> Outcome:
    # What a withdrawal of `amount` would cost, shown before it is asked for.
    limits = gw.config.commission.withdrawals
    amount: int = p["amount"]
    fee = limits.fee(amount)
    return {"amount": amount, "fee": fee, "net": amount - fee,
            "reviewed": amount >= limits.review_fen,
            "allowed": amount >= limits.min_fen and fee < amount}


async def _withdrawals(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                       ) -> Outcome:
    return {"withdrawals": await reads.user_withdrawals(gw.pool, who.user, p.get("limit", 50))}


async def _to_review(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                     ) -> Outcome:
    _marketer(who)
    return {"withdrawals": await reads.withdrawals_in(gw.pool, p.get("status", "reviewing"),
                                                      p.get("limit", 50))}


def _review(approve: bool) -> Handler:
    """The handler that approves (pays) or rejects a withdrawal held for review."""
    async def review(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                     ) -> Outcome:
        _marketer(who)
        return result_of(await gw.pipeline.review(who.user, p["withdrawal"], approve,
                                                  p.get("note")))
    return review


async def _apply(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                 ) -> Outcome:
    # Idempotent by nature: applying again while applied answers the application.
    return result_of(await gw.pipeline.distributor(who.user, "apply", who.user))


async def _standing(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                    ) -> Outcome:
    """The caller's distributor status, whether they may earn now, and their grade."""
    commission = gw.config.commission
    found = await distributors.standing(gw.pool, who.user)
    row = found["distributor"]
    status = None if row is None else row["status"]
    grade = grade_of(commission.grades, found["grade"])
    return {**found, "earners": commission.earners,
            "self_purchase": commission.self_purchase,
            "eligible": may_earn(commission.earners, status, found["own_spend"],
                                 commission.earner_min_spend_fen),
            "grade": None if grade is None else {
                "id": grade.id, "title": grade.title, "level1_bps": grade.rates.level1_bps,
                "level2_bps": grade.rates.level2_bps}}


async def _distributors(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                        ) -> Outcome:
    _marketer(who)
    status = p.get("status", "applied")
    return {"status": status, "distributors": await distributors.listing(
        gw.pool, status, p.get("limit", 50))}


def _decide(action: str) -> Handler:
    """The handler that approves or revokes a user as a distributor."""
    async def decide(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                     ) -> Outcome:
        _marketer(who)
        return result_of(await gw.pipeline.distributor(p["user"], action, who.user))
    return decide


async def _sandbox_pay(gw: Gateway, who: Identity, p: dict[str, Any], key: str | None
                      ) -> Outcome:
    if gw.paydesk is None or gw.paydesk.immediate:
        raise ApiError("not_found", "the sandbox pays at once here: there is nothing to pay")
    return await gw.paydesk.sandbox_pay(who.user, p["payment"])


_LIMIT = Param(int, required=False, low=1, high=100)
_ID = Param(int, low=1, high=(1 << 63) - 1)
_PAYMENT = Param(str, pattern=re.compile(f"[0-9a-f]{{{payments.ID_LENGTH}}}"))
_STATUS = re.compile(r"reviewing|paid|rejected")
_DISTRIBUTOR_STATUS = re.compile("|".join(distributors.STATUSES))
_NOTE = Param(str, required=False, pattern=re.compile(r"[^\x00-\x1f\x7f]{1,200}"))
# A refund's fen: from 1 (the pipeline refuses more than the order's rest); left out,
# the rest.
_REFUND = Param(int, required=False, low=1, high=10**12)

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        *game_methods(GAMES.values()),
        Method("campaigns.list", {}, _campaigns, False),
        Method("sandbox.pay", {"payment": _PAYMENT}, _sandbox_pay, True,
               core.Route("POST", "/api/sandbox/payments/{payment}/pay")),
        Method("leaderboards.list", {}, _leaderboards, False,
               core.Route("GET", "/api/leaderboards")),
        Method("orders.list", {"limit": _LIMIT}, _orders, False),
        Method("orders.refund", {"order": _ID, "amount": _REFUND}, _refund, True),
        Method("admin.orders.refund", {"order": _ID, "amount": _REFUND, "note": _NOTE},
               _refund_after_sales, True),
        Method("referrals.bind", {"referrer": Param(str, pattern=USER_ID)}, _bind, True),
        Method("referrals.get", {}, _referral, False),
        Method("commissions.list", {"limit": _LIMIT}, _commissions, False),
        Method("team.get", {"limit": _LIMIT}, _team, False),
        Method("admin.tax_report", {"year": Param(int, low=2000, high=2200)}, _tax_report,
               False),
        Method("admin.team", {"user": Param(str, pattern=USER_ID), "limit": _LIMIT},
               _user_team, False),
        Method("admin.commissions", {"user": Param(str, pattern=USER_ID), "limit": _LIMIT},
               _user_commissions, False),
        Method("admin.referrals", {"user": Param(str, pattern=USER_ID), "limit": _LIMIT},
               _user_referrals, False),
        Method("withdrawals.create", {"amount": Param(int, low=1, high=10**12)}, _withdraw,
               True),
        Method("withdrawals.list", {"limit": _LIMIT}, _withdrawals, False),
        Method("withdrawals.quote", {"amount": Param(int, low=1, high=10**12)}, _quote, False),
        Method("withdrawals.review_list", {"status": Param(str, required=False,
                                                           pattern=_STATUS),
                                           "limit": _LIMIT}, _to_review, False),
        Method("distributors.apply", {}, _apply, True,
               core.Route("POST", "/api/distributors/apply")),
        Method("distributors.me", {}, _standing, False,
               core.Route("GET", "/api/distributors/me")),
        Method("distributors.list", {"status": Param(str, required=False,
                                                     pattern=_DISTRIBUTOR_STATUS),
                                     "limit": _LIMIT}, _distributors, False,
               core.Route("GET", "/api/admin/distributors")),
        Method("distributors.approve", {"user": Param(str, pattern=USER_ID)},
               _decide("approve"), True,
               core.Route("POST", "/api/admin/distributors/{user}/approve")),
        Method("distributors.revoke", {"user": Param(str, pattern=USER_ID)},
               _decide("revoke"), True,
               core.Route("POST", "/api/admin/distributors/{user}/revoke")),
        Method("withdrawals.approve", {"withdrawal": _ID, "note": _NOTE}, _review(True), True),
        Method("withdrawals.reject", {"withdrawal": _ID, "note": _NOTE}, _review(False), True),
    )
}
