"""The bargain wired to the game seam (`games.core.Game`): methods, routes, read model,
frames, deals and answers around the rules of `games.bargain.rules`."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from games import payments
from games.bargain.campaign import KIND, BargainCampaign, parse_campaign
from games.bargain.rules import (
    Bargain,
    BargainBought,
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
    SettlePayment,
    StartBargain,
    bargain_from_row,
    bargain_row,
    bargain_summary,
    bargain_text,
    bargain_view,
    decide,
    event_from_dict,
    event_to_dict,
    evolve,
    initial_state,
    state_from_bargains,
)
from games.commission import Rates
from games.core import (
    ANSWERS_KEPT_MS,
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
from games.pmap import PMap
from games.settings import Table
from games.topics import IDENT_RE, SLUG_RE, instance_topic, user_topic

# Not a declared parameter, so a client sending it is refused at the edge: the gateway
# adds it (True) after its checks when the helper has never ordered. See `command`.
NEWCOMER = "newcomer"

_CAMPAIGN = Param(str, pattern=SLUG_RE)
_BARGAIN = Param(str, pattern=IDENT_RE)
_ONE = MappingProxyType({"campaign": _CAMPAIGN, "bargain": _BARGAIN})

METHODS = (
    Method("bargain.start", MappingProxyType({"campaign": _CAMPAIGN}), mutating=True,
           route=Route("POST", "/api/bargains/{campaign}", 201), binds=True),
    Method("bargain.help", _ONE, mutating=True,
           route=Route("POST", "/api/bargains/{campaign}/{bargain}/help"),
           facts=(NEWCOMER,), binds=True),
    Method("bargain.buy", _ONE, mutating=True,
           route=Route("POST", "/api/bargains/{campaign}/{bargain}/buy"),
           pays=True),
    Method("bargain.payment", MappingProxyType({
        "campaign": _CAMPAIGN,
        "payment": Param(str, pattern=re.compile(f"[0-9a-f]{{{payments.ID_LENGTH}}}")),
        "outcome": Param(str, pattern=re.compile(r"paid|closed")),
        "amount": Param(int, required=False, low=0, high=10**12)}),
        mutating=True, public=False, on="payment"),
    Method("bargain.get", _ONE, mutating=False,
           route=Route("GET", "/api/bargains/{campaign}/{bargain}"), read="instance"),
)

# Column order is `rules.bargain_row`'s. `helpers_to_floor` is frozen per bargain at its
# start and `view(row)` is given no campaign, so the row carries it.
READ_MODEL = ReadModel(
    table="bargains",
    columns=(
        Column("campaign", "text"), Column("id", "text"), Column("status", "text"),
        Column("initiator", "text"), Column("list_price", "bigint"),
        Column("floor_price", "bigint"), Column("price", "bigint"), Column("seed", "text"),
        Column("helpers", "jsonb"), Column("created_at", "timestamptz"),
        Column("expires_at", "timestamptz"), Column("hold_until", "timestamptz"),
        Column("version", "int"), Column("helpers_to_floor", "int"),
        Column("purchases", "jsonb"), Column("purchase_unit", "bool"),
    ),
    id_param="bargain",
    view_key="bargain",
)


class BargainGame:
    """The bargain game (see `games.core.Game` for what each method owes the host)."""

    kind: str = KIND
    read_model: ReadModel = READ_MODEL
    methods: tuple[Method, ...] = METHODS

    def parse_campaign(self, table: Table, rates: Rates) -> BargainCampaign:
        """A `[[campaigns]]` table of kind "bargain"."""
        return parse_campaign(table, rates)

    def initial(self, campaign: BargainCampaign) -> BargainState:
        """A campaign before anything happened."""
        return initial_state(campaign)

    def command(self, method: str, user: str, params: Mapping[str, Any]) -> Command:
        """A client's command. `bargain.help` reads `params["newcomer"] is True`, which only
        the gateway may set (it is no declared parameter)."""
        if method == "bargain.start":
            return StartBargain(user)
        if method == "bargain.payment":
            return SettlePayment(str(params["payment"]), str(params["outcome"]),
                                 int(params.get("amount", 0)))
        bargain = params.get("bargain")
        if not isinstance(bargain, str):
            raise GameError("invalid_request", f"{method} needs a bargain")
        if method == "bargain.help":
            return HelpBargain(user, bargain, newcomer=params.get(NEWCOMER) is True)
        if method == "bargain.buy":
            return BuyBargain(user, bargain)
        raise GameError("invalid_request", f"the bargain has no command {method!r}")

    def fingerprint(self, command: Command) -> str:
        """The bargain it names ("" for a start; the owner prefixes the method). The
        newcomer flag is left out, being a fact the server looked up: a retry after the
        helper's first order is still the same request."""
        if isinstance(command, SettlePayment):
            return f"{command.payment}|{command.outcome}|{command.amount}"
        if isinstance(command, ExpireHold):
            return command.payment
        return "" if isinstance(command, StartBargain) else command.bargain

    def decide(self, state: BargainState, command: Command, now: int, rng: random.Random
               ) -> list[Event]:
        """The events `command` causes, or GameError."""
        return decide(state, command, now, rng)

    def evolve(self, state: BargainState, event: Event) -> BargainState:
        """`state` after `event`."""
        return evolve(state, event)

    def version(self, state: BargainState) -> int:
        """Events folded into `state` so far."""
        return state.version

    def applied(self, campaign: BargainCampaign, state: BargainState, event: Event
                ) -> Applied:
        """The event's stored form, its frames (the bargain's topic with `B`'s summary as
        of the event; the initiator's own topic for a help), its deal and its deadline."""
        bargain = state.bargains[event.bargain]
        data = event_to_dict(event)
        also: tuple[tuple[int, str], ...] = ()
        frames = [Publish(instance_topic(KIND, campaign.id, bargain.id), event.seq,
                          {**data, "campaign": campaign.id,
                           "bargain": bargain_summary(campaign.id, bargain)})]
        outbox = None
        deadline = None
        if isinstance(event, BargainHelped):
            frames.append(Publish(user_topic(bargain.initiator), 0, {
                "type": event.type, "campaign": campaign.id, "bargain": bargain.id,
                "helper": event.helper, "cut": event.cut, "price": event.price}))
        elif isinstance(event, BargainBought):
            # One order per bargain (line "buy"), with the payment that bought it.
            outbox = Outbox("deal", (Line(user=bargain.initiator, sku=event.sku,
                                          amount=event.price, instance=bargain.id,
                                          line="buy", payment=event.payment),))
        elif isinstance(event, PurchaseHeld):
            also = ((event.until, payments.HOLD_KEY + event.payment),)
        elif isinstance(event, PurchaseLapsed):
            hold = bargain.purchase(event.payment)
            assert hold is not None
            outbox = Outbox("check", (Line(user=bargain.initiator,
                                           sku=campaign.product.sku, amount=hold.amount,
                                           instance=bargain.id, line=event.payment,
                                           payment=event.payment),))
        elif isinstance(event, PaymentReturned):
            outbox = Outbox("return", (Line(user=bargain.initiator,
                                            sku=campaign.product.sku, amount=event.amount,
                                            instance=bargain.id, line=event.payment,
                                            payment=event.payment),))
            frames.append(Publish(user_topic(bargain.initiator), 0, {
                "type": event.type, "campaign": campaign.id, "bargain": bargain.id,
                "payment": event.payment, "amount": event.amount}))
        elif isinstance(event, BargainStarted):
            deadline = (event.expires_at, bargain.id)
        elif isinstance(event, FloorReached):
            # Held: the payment window. Unheld: the bargain's own deadline, armed again.
            # Either way a deadline armed before that fires as a no-op: expiry checks the
            # bargain's deadline as it is now.
            deadline = (event.hold_until if event.hold_until is not None
                        else bargain.expires_at, bargain.id)
        return Applied(instance=bargain.id, seq=event.seq, type=event.type, data=data,
                       frames=tuple(frames), outbox=outbox, deadline=deadline, also=also)

    def decode(self, data: Mapping[str, Any]) -> Event:
        """An event from its stored form."""
        return event_from_dict(data)

    def answer(self, campaign: BargainCampaign, state: BargainState, command: Command,
               events: Sequence[Event], now: int) -> str:
        """start: `{"bargain": B}`; help: `{"bargain": B, "cut": fen}`; buy:
        `{"bargain": B, "order": O}` (the order the pipeline will make of the deal);
        a timer's expiry: `{"bargain": B or None}`."""
        bargain_id = events[0].bargain if events else getattr(command, "bargain", None)
        if bargain_id is None and isinstance(command, SettlePayment):
            bargain_id = state.payments.get(command.payment)
        bargain = None if bargain_id is None else state.bargains.get(bargain_id)
        rest: dict[str, Any] = {}
        for event in events:
            if isinstance(event, BargainHelped):
                rest["cut"] = event.cut
        if bargain is not None and isinstance(command, BuyBargain | SettlePayment) \
                and bargain.purchases:
            # The purchase's payment, and the order it is (or will be, once paid).
            hold = bargain.purchases[-1]
            rest["order"] = {"campaign": campaign.id, "bargain": bargain.id,
                             "sku": campaign.product.sku, "amount": hold.amount,
                             "status": "paid" if hold.status is payments.HoldStatus.PAID
                             else "pending"}
            rest["payment"] = hold.view()
        elif bargain is not None and bargain.status is BargainStatus.BOUGHT \
                and isinstance(command, BuyBargain):
            rest["order"] = {"campaign": campaign.id, "bargain": bargain.id,
                             "sku": campaign.product.sku, "amount": bargain.price,
                             "status": "paid"}
        return _answer_text(campaign.id, bargain, rest)

    def note(self, campaign: BargainCampaign, state: BargainState, command: Command,
             events: Sequence[Event]) -> str | None:
        """A help's answer (B with every helper so far) is remembered as
        `[bargain, helpers, seq]`: B as it was then is the bargain's first `helpers`
        helpers at version `seq` (see `recall`). Others are remembered whole."""
        if not isinstance(command, HelpBargain) or not events:
            return None
        bargain = state.bargains[command.bargain]
        # Ids are plain [A-Za-z0-9_-] (games.topics.IDENT): no escaping to do.
        return f'["{bargain.id}",{len(bargain.helpers)},{bargain.version}]'

    def recall(self, campaign: BargainCampaign, state: BargainState, note: str) -> str:
        bargain_id, count, seq = json.loads(note)
        now = state.bargains[bargain_id]
        helpers = now.helpers[:count]
        # Helps come before anything else can happen to a bargain, and the floor is
        # reached by its last help, in that help's command: so B after its `count`-th
        # help was open, or at the floor when that help was the last; its price is the
        # list price less the first cut and those helpers' cuts.
        floor = count == now.helpers_to_floor
        then = replace(
            now, helpers=helpers, version=seq,
            price=now.list_price - now.first_cut - sum(cut for _, cut, _ in helpers),
            status=BargainStatus.FLOOR_REACHED if floor else BargainStatus.OPEN,
            hold_until=now.hold_until if floor else None, rendered=(0, "[]"))
        return _answer_text(campaign.id, then, {"cut": helpers[-1][1]})


    def deadlines(self, state: BargainState) -> Iterable[tuple[int, str]]:
        """(deadline, bargain id) of every bargain open or at its floor."""
        found = []
        for bargain in state.live():
            deadline = bargain.deadline()
            if deadline is not None:
                found.append((deadline, bargain.id))
            buying = bargain.buying()
            if buying is not None and buying.status is payments.HoldStatus.HELD:
                found.append((buying.until, payments.HOLD_KEY + buying.payment))
        return found

    def tick(self, key: str) -> Command:
        """A bargain's deadline fired (expire it if it is still due), or a purchase's
        hold ended (ask about its payment)."""
        if key.startswith(payments.HOLD_KEY):
            return ExpireHold(key[len(payments.HOLD_KEY):])
        return ExpireBargain(key)

    def rows(self, campaign: BargainCampaign, state: BargainState, instances: Iterable[str]
             ) -> list[tuple[Any, ...]]:
        """Rows of `instances`, each once however often named; KeyError for one not in
        `state` (the owner reads that as "no such instance here")."""
        return [bargain_row(campaign.id, state.bargains[i]) for i in dict.fromkeys(instances)]

    def rebuild(self, campaign: BargainCampaign, rows: Sequence[Mapping[str, Any]],
                version: int) -> BargainState | None:
        """The state of `rows` when their versions add up to `version` (else None, and
        None for rows this code cannot read: the host then replays the events)."""
        try:
            if any(row["campaign"] != campaign.id for row in rows) \
                    or sum(int(row["version"]) for row in rows) != version:
                return None
            bargains = [bargain_from_row(row) for row in rows]
        except (KeyError, TypeError, ValueError):
            return None
        return state_from_bargains(campaign, bargains, version)

    def view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        """`B` from its read-model row."""
        return bargain_view(row["campaign"], bargain_from_row(row))

    def summary(self, state: BargainState) -> dict[str, int]:
        """Stock left and held, bargains bought, live (open or at the floor) and in
        memory."""
        return {"stock_left": state.stock_left, "held": state.held(),
                "bought": state.bought(), "live": sum(1 for _ in state.live()),
                "bargains": len(state.bargains)}

    def release(self, campaign: BargainCampaign, state: BargainState, now: int
                ) -> BargainState:
        """A day after the campaign's end (while help answers may still be asked for
        again, see `note`), once no bargain is open or held, its bargains and tallies are
        let go: every later start or help is refused before they are read, and the API
        reads bargains from the read model."""
        if now < campaign.ends_at + ANSWERS_KEPT_MS or not state.bargains \
                or any(True for _ in state.live()):
            return state
        return replace(state, bargains=PMap(), started=PMap(), helps=PMap(),
                       helps_day=PMap())


def _answer_text(campaign: str, bargain: Bargain | None, rest: dict[str, Any]) -> str:
    # B carries every helper: spliced from the text the bargain keeps (see
    # `rules.Bargain.rendered`), not encoded again on every help.
    head = "null" if bargain is None else bargain_text(campaign, bargain)
    if not rest:
        return f'{{"bargain":{head}}}'
    if list(rest) == ["cut"]:  # a help's answer: its one int spliced, not encoded
        return f'{{"bargain":{head},"cut":{int(rest["cut"])}}}'
    return f'{{"bargain":{head},{compact(rest)[1:-1]}}}'


GAME: Game[BargainCampaign, BargainState, Command, Event] = BargainGame()
