"""The group-buy on the game seam: its rules (`rules`) as one `games.core.Game` value."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from games import payments, topics
from games.campaign import GroupBuyCampaign, Product
from games.commission import Rates
from games.core import Applied, Column, Line, Method, Outbox, Param, Publish, ReadModel, Route
from games.errors import GameError
from games.groupbuy import rules as gb
from games.jsontext import compact
from games.pmap import PMap
from games.settings import Table, read_campaign_head, read_own_rates

KIND = "groupbuy"

_CAMPAIGN = Param(str, pattern=topics.SLUG_RE)
_GROUP = Param(str, pattern=topics.IDENT_RE)
_LIMIT = Param(int, required=False, low=1, high=100)
_BASE = "/api/groupbuys/{campaign}/groups"
_PAYMENT = Param(str, pattern=re.compile(f"[0-9a-f]{{{payments.ID_LENGTH}}}"))
_OUTCOME = Param(str, pattern=re.compile(r"paid|closed"))
_AMOUNT = Param(int, required=False, low=0, high=10**12)


def parse_campaign(s: Table, rates: Rates) -> GroupBuyCampaign:
    """A `kind = "groupbuy"` campaign table; `rates` are the shop's commission rates,
    which its optional `[campaigns.commission]` table overrides key by key."""
    head = read_campaign_head(s)
    p = Table(s.source, s.key("product"), s.get("product", dict))
    product = Product(
        sku=p.get("sku", str), title=p.get("title", str),
        list_price=p.get("list_price", int), group_price=p.get("group_price", int),
    )
    p.check("list_price", product.list_price > 0, "must be a positive number of fen")
    p.check("group_price", product.group_price > 0, "must be a positive number of fen")
    p.check("group_price", product.group_price <= product.list_price,
            "must not be above list_price")
    p.done()
    size = s.get("group_size", int)
    s.check("group_size", 2 <= size <= 50, "must be from 2 to 50")
    time_limit = s.get("time_limit_seconds", int)
    s.check("time_limit_seconds", 1 <= time_limit <= 30 * 86400,
            "must be from 1 second to 30 days")
    stock = s.get("stock", int)
    s.check("stock", stock >= 0, "must not be negative")
    led = s.get("max_groups_led", int, 1)
    s.check("max_groups_led", led >= 1, "must be at least 1")
    joined = s.get("max_groups_joined", int, 1)
    s.check("max_groups_joined", joined >= 1, "must be at least 1")
    pay_to_join = s.get("pay_to_join", bool, True)
    pay_within = s.get("pay_within_seconds", int, 900)
    s.check("pay_within_seconds", 1 <= pay_within <= 86400,
            "must be from 1 second to 1 day")
    ratio = s.get("virtual_fill_ratio", (int, float), None)
    if ratio is not None:
        s.check("virtual_fill_ratio", 0 < ratio <= 1, "must be above 0 and at most 1")
        ratio = float(ratio)
    rates = read_own_rates(s, rates)
    s.done()
    return GroupBuyCampaign(
        id=head.id, title=head.title, starts_at=head.starts_at, ends_at=head.ends_at,
        product=product,
        group_size=size, time_limit_ms=time_limit * 1000, stock=stock, max_groups_led=led,
        max_groups_joined=joined, virtual_fill_ratio=ratio, commission=rates,
        pay_within_ms=pay_within * 1000 if pay_to_join else None,
    )


def _group_price(campaign: GroupBuyCampaign) -> int | None:
    # A campaign that takes no payment has nothing to pay before its commands.
    return None if campaign.pay_within_ms is None else campaign.product.group_price


class GroupBuy:
    """The group-buy (拼团) game: one state per campaign holds all its groups."""

    kind: str = KIND
    read_model: ReadModel = ReadModel(
        table="groups",
        columns=(Column("campaign", "text"), Column("id", "text"), Column("status", "text"),
                 Column("leader", "text"), Column("members", "text[]"),
                 Column("size", "int"), Column("virtual_members", "int"),
                 Column("price", "bigint"), Column("created_at", "timestamptz"),
                 Column("expires_at", "timestamptz"), Column("version", "int"),
                 Column("seats", "jsonb")),
        id_param="group", view_key="group",
    )
    methods: tuple[Method, ...] = (
        Method("groupbuy.open", {"campaign": _CAMPAIGN}, True, Route("POST", _BASE, 201),
               pays=True, binds=True, prepaid=_group_price),
        Method("groupbuy.join", {"campaign": _CAMPAIGN, "group": _GROUP}, True,
               Route("POST", _BASE + "/{group}/join"), pays=True, binds=True,
               prepaid=_group_price),
        Method("groupbuy.payment", {"campaign": _CAMPAIGN, "payment": _PAYMENT,
                                    "outcome": _OUTCOME, "amount": _AMOUNT}, True,
               public=False, on="payment"),
        Method("groupbuy.get", {"campaign": _CAMPAIGN, "group": _GROUP}, False,
               Route("GET", _BASE + "/{group}"), read="instance"),
        Method("groupbuy.list_open", {"campaign": _CAMPAIGN, "limit": _LIMIT}, False,
               Route("GET", _BASE), read="open"),
    )

    def parse_campaign(self, table: Table, rates: Rates) -> GroupBuyCampaign:
        return parse_campaign(table, rates)

    def initial(self, campaign: GroupBuyCampaign) -> gb.GroupBuyState:
        return gb.initial_state(campaign)

    def command(self, method: str, user: str, params: Mapping[str, Any]) -> gb.Command:
        # The server's (Method.prepaid), never a client's: the payment it named for the
        # seat, and what the provider's verified notification says was paid for it.
        named, paid = str(params.get("payment", "")), int(params.get("paid", 0))
        if method == "groupbuy.open":
            return gb.OpenGroup(user=user, payment=named, paid=paid)
        if method == "groupbuy.join":
            return gb.JoinGroup(user=user, group=str(params["group"]), payment=named,
                                paid=paid)
        if method == "groupbuy.payment":
            return gb.SettlePayment(payment=str(params["payment"]),
                                    outcome=str(params["outcome"]),
                                    amount=int(params.get("amount", 0)))
        raise GameError("invalid_request", f"unknown method {method}")

    def fingerprint(self, command: gb.Command) -> str:
        if isinstance(command, gb.SettlePayment):
            return f"{command.payment}|{command.outcome}|{command.amount}"
        return command.group if isinstance(command, gb.JoinGroup) else ""

    def decide(self, state: gb.GroupBuyState, command: gb.Command, now: int,
               rng: random.Random) -> list[gb.Event]:
        return gb.decide(state, command, now, rng)

    def evolve(self, state: gb.GroupBuyState, event: gb.Event) -> gb.GroupBuyState:
        return gb.evolve(state, event)

    def version(self, state: gb.GroupBuyState) -> int:
        return state.version

    def applied(self, campaign: GroupBuyCampaign, state: gb.GroupBuyState, event: gb.Event
                ) -> Applied:
        cid = campaign.id
        data = gb.event_to_dict(event)
        group = state.groups[event.group]
        # Each frame carries the group's summary as of that event (the member list only
        # where the event brings it): a client applies frames to its snapshot. (`group`
        # is the id in the event and the summary in the frame.)
        summary = gb.group_summary(cid, group)
        frames = [Publish(topics.instance_topic(KIND, cid, event.group), event.seq,
                          {**data, "campaign": cid, "group": summary})]
        outbox = None
        deadline = None
        also: tuple[tuple[int, str], ...] = ()
        sku = campaign.product.sku
        if isinstance(event, gb.DealCompleted):
            frames += [Publish(topics.user_topic(member), 0, {
                "type": "deal_completed", "campaign": cid, "group": event.group,
                "price": event.price}) for member in event.members]
            paid = {seat.user: seat.payment for seat in group.seats
                    if seat.status is gb.SeatStatus.PAID}
            outbox = Outbox("deal", tuple(
                Line(user=member, sku=event.sku, amount=event.price, instance=event.group,
                     line=paid.get(member, member), payment=paid.get(member, ""))
                for member in event.members))
        elif isinstance(event, gb.Refunded):
            frames.append(Publish(topics.user_topic(event.user), 0, {
                "type": "refunded", "campaign": cid, "group": event.group,
                "amount": event.amount}))
            outbox = Outbox("refund", (Line(user=event.user, sku=sku, amount=event.amount,
                                            instance=event.group,
                                            line=event.payment or event.user,
                                            payment=event.payment),))
        elif isinstance(event, gb.GroupOpened):
            deadline = (event.expires_at, event.group)
            if event.paid:
                outbox = Outbox("paid", (Line(user=event.leader, sku=sku, amount=event.price,
                                              instance=event.group, line=event.payment,
                                              payment=event.payment),))
            elif event.payment:
                also = ((event.hold_until, gb.HOLD_KEY + event.payment),)
        elif isinstance(event, gb.SeatHeld):
            deadline = (event.until, gb.HOLD_KEY + event.payment)
        elif isinstance(event, gb.MemberJoined) and event.payment:
            outbox = Outbox("paid", (Line(user=event.user, sku=sku, amount=group.price,
                                          instance=event.group, line=event.payment,
                                          payment=event.payment),))
        elif isinstance(event, gb.HoldLapsed):
            outbox = Outbox("check", (Line(user=event.user, sku=sku, amount=event.amount,
                                           instance=event.group, line=event.payment,
                                           payment=event.payment),))
        elif isinstance(event, gb.PaymentReturned):
            frames.append(Publish(topics.user_topic(event.user), 0, {
                "type": "payment_returned", "campaign": cid, "group": event.group,
                "payment": event.payment, "amount": event.amount}))
            outbox = Outbox("return", (Line(user=event.user, sku=sku, amount=event.amount,
                                            instance=event.group, line=event.payment,
                                            payment=event.payment),))
        elif isinstance(event, gb.SeatReleased):
            frames.append(Publish(topics.user_topic(event.user), 0, {
                "type": "seat_released", "campaign": cid, "group": event.group,
                "payment": event.payment}))
            if event.ask:  # released before its hold ended: the provider is asked
                seat = group.seat(event.payment)
                assert seat is not None
                outbox = Outbox("check", (Line(user=event.user, sku=sku, amount=seat.amount,
                                               instance=event.group, line=event.payment,
                                               payment=event.payment),))
        return Applied(instance=event.group, seq=event.seq, type=event.type, data=data,
                       frames=frames, outbox=outbox, deadline=deadline, also=also)

    def decode(self, data: Mapping[str, Any]) -> gb.Event:
        return gb.event_from_dict(dict(data))

    def answer(self, campaign: GroupBuyCampaign, state: gb.GroupBuyState,
               command: gb.Command, events: Sequence[gb.Event], now: int) -> str:
        group: gb.Group | None = None
        user: str | None = None
        if events:
            # A command's events all concern one group: the answer is it after the last.
            group = state.groups[events[-1].group]
        if isinstance(command, gb.JoinGroup):
            group = group or state.groups.get(command.group)
            user = command.user
        elif isinstance(command, gb.OpenGroup):
            user = command.user
        elif isinstance(command, gb.SettlePayment):
            group_id = state.payments.get(command.payment)
            group = group or (None if group_id is None else state.groups.get(group_id))
        if group is None:
            return "{}"
        answer: dict[str, Any] = {"group": gb.group_view(campaign.id, group)}
        seat = (group.seat(command.payment) if isinstance(command, gb.SettlePayment)
                else _latest_seat(group, user))
        if seat is not None:
            answer["payment"] = gb.payment_view(seat)
        return compact(answer)

    def note(self, campaign: GroupBuyCampaign, state: gb.GroupBuyState, command: gb.Command,
             events: Sequence[gb.Event]) -> None:
        return None  # a group's answer is small: remembered whole

    def recall(self, campaign: GroupBuyCampaign, state: gb.GroupBuyState, note: str) -> str:
        raise ValueError("the group-buy remembers whole answers, never notes")

    def deadlines(self, state: gb.GroupBuyState) -> Iterable[tuple[int, str]]:
        # The original deadlines, as their events stored them: never re-based on restart.
        for group in state.open_groups():
            yield group.expires_at, group.id
            for seat in group.seats:
                if seat.status is gb.SeatStatus.HELD:
                    yield seat.until, gb.HOLD_KEY + seat.payment

    def tick(self, key: str) -> gb.Command:
        if key.startswith(gb.HOLD_KEY):
            return gb.ExpireHold(key[len(gb.HOLD_KEY):])
        return gb.ExpireGroup(key)

    def rows(self, campaign: GroupBuyCampaign, state: gb.GroupBuyState,
             instances: Iterable[str]) -> list[tuple[Any, ...]]:
        found = []
        for group_id in instances:
            g = state.groups[group_id]
            found.append((campaign.id, g.id, g.status.value, g.leader, list(g.members),
                          g.size, g.virtual, g.price, g.created_at, g.expires_at, g.version,
                          [seat.row() for seat in g.seats]))
        return found

    def rebuild(self, campaign: GroupBuyCampaign, rows: Sequence[Mapping[str, Any]],
                version: int) -> gb.GroupBuyState | None:
        groups = [_group(row) for row in rows]
        # Every event belongs to one group and bumps its version by one, so the groups'
        # versions add up to the stream's: then the stored groups are a complete snapshot.
        if sum(g.version for g in groups) != version:
            return None
        return gb.state_from_groups(campaign, groups, version)

    def view(self, row: Mapping[str, Any]) -> dict[str, Any]:
        return gb.group_view(str(row["campaign"]), _group(row))

    def summary(self, state: gb.GroupBuyState) -> dict[str, int]:
        return {"stock_left": state.stock_left, "groups": len(state.groups)}

    def release(self, campaign: GroupBuyCampaign, state: gb.GroupBuyState, now: int
                ) -> gb.GroupBuyState:
        # Nothing can change the groups of an ended campaign with none open (every command
        # on it is refused before its groups are looked at), and the API reads them from
        # Postgres: an owner's memory is bounded by its running campaigns.
        if now < campaign.ends_at or not state.groups or any(True for _ in state.open_groups()):
            return state
        return replace(state, groups=PMap(), led=PMap(), joined=PMap(), payments=PMap())


def _group(row: Mapping[str, Any]) -> gb.Group:
    seats = tuple(gb.Seat.from_row(seat) for seat in row.get("seats") or ())
    return gb.Group(id=row["id"], leader=row["leader"], members=tuple(row["members"]),
                    size=row["size"], price=row["price"], created_at=row["created_at"],
                    expires_at=row["expires_at"], status=gb.GroupStatus(row["status"]),
                    virtual=row["virtual_members"], version=row["version"], seats=seats)


def _latest_seat(group: gb.Group, user: str | None) -> gb.Seat | None:
    """`user`'s newest seat in `group` (the one an open or a join is answered with)."""
    if user is None:
        return None
    for seat in reversed(group.seats):
        if seat.user == user:
            return seat
    return None


GAME = GroupBuy()
