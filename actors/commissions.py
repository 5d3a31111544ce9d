"""The pipeline's commission work: earn on fresh orders, settle, reverse, bind referrals.

Each function runs inside the pipeline's transaction, so a commission and its ledger
lines are written exactly when the order (or the refund, or the settlement) is: one
commit, or none. Each returns the live events to publish once that commit is done.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from actors import answers, refunds
from actors.answers import Answer
from actors.payments import Movement, PaymentAdapter
from games import commission as rules
from games.commission import Line
from games.errors import GameError
from games.topics import user_topic
from storage import distributors, ledger, reads
from storage import withdrawals as store
from storage.config import CommissionConfig, Config
from storage.ledger import Commission, NewCommission
from storage.live import LiveEvent


@dataclass(frozen=True)
class FreshOrder:
    """An order the pipeline has just written."""

    id: int
    campaign: str
    buyer: str
    amount: int
    created_at: datetime


def _event(c: Commission, kind: str, **extra: int) -> LiveEvent:
    # The beneficiary sees their commission move; `buyer` is who bought through them.
    # `amount` is the commission's, or (in `extra`) the fen this step moved.
    return LiveEvent(user_topic(c.beneficiary), 0, {
        "type": kind, "commission": c.id, "order": c.order_id, "level": c.level,
        "amount": c.amount, "buyer": c.buyer, "campaign": c.campaign, **extra})


def _txn(c: Commission, step: str) -> str:
    return f"commission:{c.id}:{step}"


async def earn(conn: asyncpg.Connection, orders: Sequence[FreshOrder], config: Config
               ) -> tuple[list[Commission], list[LiveEvent]]:
    """Write the commissions `orders` earn, pending, with their lines.

    Who may earn, and each earner's grade (its rates), are read for the whole batch at
    once, as they stand in this transaction: a grade raised by an earlier settlement
    applies here, and the rate used is stored on each commission, so a later change of
    grade never touches it.
    """
    if not orders:
        return [], []
    settings = config.commission
    chains = await ledger.referral_chains(conn, [o.buyer for o in orders])
    candidates = {u for o in orders for u in chains.get(o.buyer, ())[:rules.LEVELS]}
    if settings.self_purchase:
        candidates |= {o.buyer for o in orders}
    allowed = await distributors.eligible(conn, sorted(candidates), settings.earners,
                                          settings.earner_min_spend_fen)
    recorded = await distributors.grades(conn, sorted(candidates)) if settings.grades else {}
    window = timedelta(seconds=settings.return_window_seconds)
    campaigns = {o.campaign for o in orders}
    rates = {c: config.commission_rates(c) for c in campaigns}
    graded = {c: config.graded_rates(c, candidates, recorded) for c in campaigns}
    fresh = [
        NewCommission(order.id, share.level, share.beneficiary, order.buyer, order.campaign,
                      order.amount, share.rate_bps, share.amount, order.created_at + window)
        for order in orders
        for share in rules.shares(order.buyer, order.amount, chains.get(order.buyer, ()),
                                  rates[order.campaign], self_purchase=settings.self_purchase,
                                  eligible=allowed.__contains__, graded=graded[order.campaign])
    ]
    written = await ledger.insert_commissions(conn, fresh)
    if written:
        # One compound entry per batch (the shop's line for the sum, a line per
        # commission): half the rows of an entry per commission, as auditable.
        ids = [c.id for c in written]
        txn = f"commissions:{min(ids)}-{max(ids)}:post"
        shop, *credits = rules.post_all([(c.beneficiary, c.amount) for c in written])
        await ledger.write_lines(conn, [(txn, None, shop), *(
            (txn, c.id, line) for c, line in zip(written, credits, strict=True))])
    return written, [_event(c, "commission_pending") for c in written]


async def settle(conn: asyncpg.Connection, now: datetime, limit: int,
                 config: CommissionConfig | None = None
                 ) -> tuple[list[Commission], list[LiveEvent]]:
    """Settle up to `limit` commissions whose return window has ended by `now`, flag
    the users whose settled income this year has now reached the tax threshold, and
    raise the grades of the users these settlements concern.

    Each settles its rest (what partial refunds left of it); a beneficiary's debt (a
    refund after an earlier settlement their balance could not cover) is paid from it
    first, the remainder credited to available.
    """
    settled = await ledger.settle_due(conn, now, limit)
    owed = await _owed(conn, sorted({c.beneficiary for c in settled}))
    lines: list[tuple[str, int | None, Line]] = []
    live: list[LiveEvent] = []
    for c in settled:
        if c.rest <= 0:
            continue  # cannot happen (taken back whole, it is reversed), but never a 0 line
        paid = min(c.rest, owed.get(c.beneficiary, 0))
        owed[c.beneficiary] = owed.get(c.beneficiary, 0) - paid
        lines += [(_txn(c, "settle"), c.id, line)
                  for line in rules.settle_owing(c.beneficiary, c.rest, paid)]
        live.append(_event(c, "commission_settled", amount=c.rest, debt_paid=paid,
                           debt=owed[c.beneficiary]))
    await ledger.write_lines(conn, lines)
    if settled:
        config = config or CommissionConfig()
        flagged = await ledger.flag_tax(conn, sorted({c.beneficiary for c in settled}), now,
                                        config.tax_threshold_fen, config.tax_zone)
        live += [LiveEvent(user_topic(user), 0, {
            "type": "tax_flagged", "year": year, "income": income,
            "threshold": config.tax_threshold_fen}) for user, year, income in flagged]
        live += await regrade(conn, sorted({u for c in settled for u in (c.beneficiary,
                                                                         c.buyer)}),
                              now, config)
    return settled, live


async def regrade(conn: asyncpg.Connection, users: Sequence[str], now: datetime,
                  config: CommissionConfig) -> list[LiveEvent]:
    """Raise those of `users` whose standing at `now` reaches a higher grade (never
    lower: grades do not fall by themselves), recorded with what they were judged on."""
    if not config.grades or not users:
        return []
    await distributors.lock_grades(conn)
    recorded = await distributors.grades(conn, users)
    stats = await distributors.grade_stats(conn, users, now, config.tax_zone)
    changes = []
    for user in users:
        before = rules.grade_of(config.grades, recorded.get(user))
        after = rules.upgrade(config.grades, recorded.get(user), stats[user])
        if before is not None and after is not None:
            changes.append((distributors.GradeChange(user, before.id, after.id, stats[user]),
                            after))
    await distributors.raise_grades(conn, [change for change, _ in changes], now)
    return [LiveEvent(user_topic(c.user), 0, {
        "type": "grade_changed", "from": c.before, "grade": g.id, "title": g.title,
        "level1_bps": g.rates.level1_bps, "level2_bps": g.rates.level2_bps,
        "at": reads.iso_time(now)}) for c, g in changes]


async def _owed(conn: asyncpg.Connection, users: Sequence[str]) -> dict[str, int]:
    """What each of `users` owes (fen, from 0), those who owe locked (in name order, as
    every taker of these locks does) so that no refund adds to or pays a debt meanwhile.

    Only debtors are locked: a debt appearing after the first read is recovered from a
    later settlement instead, which keeps every balance sound either way."""
    debts = await ledger.balances(conn, [rules.debt(u) for u in users])
    debtors = [u for u in users if debts[rules.debt(u)] < 0]
    for user in debtors:
        await store.lock_user(conn, user)
    if debtors:
        debts |= await ledger.balances(conn, [rules.debt(u) for u in debtors])
    return {u: -debts[rules.debt(u)] for u in debtors}


async def refund(conn: asyncpg.Connection, payments: PaymentAdapter, user: str, order_id: int,
                 config: CommissionConfig, now: datetime, *, amount: int | None = None,
                 key: str | None = None, after_sales: bool = False, note: str | None = None
                 ) -> tuple[Answer, list[LiveEvent]]:
    """Refund `amount` fen (None: the rest) of an order and take back, in proportion,
    what it earned; the answer, and the live events to publish after the commit.

    The buyer (`user`) refunds inside the order's return window; a marketer (`user`,
    with `after_sales`) refunds any confirmed order, after settlement too: a settled
    commission is then taken back from available, what available lacks recorded as debt.
    Each commission's reversal is `games.commission.reversed_through` of the order's
    refunded total less what it reversed before. Concurrent refunds of one order queue on
    its row's lock. A repeat with the same `key` answers the order again, as does a
    refund of an order refunded whole; neither changes anything.
    """
    order = await ledger.lock_order(conn, order_id)
    if order is None or (not after_sales and order["user_id"] != user):
        return answers.error("not_found", f"{'there is' if after_sales else 'you have'} no"
                                          f" order {order_id}"), []
    if key is not None:
        first = await ledger.refund_by_key(conn, order_id, user, key)
        if first is not None:
            if amount is not None and first["amount"] != amount:
                return answers.error("invalid_request", "this idempotency key was used for"
                                                        " another amount"), []
            return answers.ok({"order": reads.order_view(order)}), []
    if order["status"] == "refunded":
        return answers.ok({"order": reads.order_view(order)}), []
    if order["confirmed_at"] is None:
        return answers.error(
            "order_waiting", f"order {order_id} waits for its deal: if the deal fails, it"
                             " is refunded in full"), []
    earned = await ledger.order_commissions(conn, order_id)
    closes = order["confirmed_at"] + timedelta(seconds=config.return_window_seconds)
    if not after_sales and (now >= closes or any(c.status == "settled" for c in earned)):
        return answers.error(
            "return_window_closed",
            f"the return window of order {order_id} closed at {reads.iso_time(closes)}:"
            " a marketer may still refund it after sales"), []
    try:
        piece_amount = rules.refund_amount(order["amount"], order["refunded_amount"], amount)
    except GameError as refused:
        return answers.error(refused.code, refused.message), []
    piece, refunded = await ledger.add_refund(conn, order_id, piece_amount, user,
                                              after_sales, key, note, now)
    buyer = order["user_id"]
    taken = await conn.fetchval(
        "SELECT payment_id FROM payments WHERE kind = 'payment' AND campaign = $1"
        " AND instance = $2 AND line = $3", order["campaign"], order["instance"],
        order["line"])
    await payments.record(conn, [Movement("refund", order["campaign"], order["instance"],
                                          order["line"], buyer, piece_amount, taken or "",
                                          piece)])
    if taken and piece_amount:  # money the provider took: it gives it back (after commit)
        await refunds.request(conn, [refunds.Wanted(taken, buyer, piece_amount,
                                                    order["amount"], piece)], now)
    steps = [(c, rules.reversed_through(c.amount, order["amount"],
                                        refunded["refunded_amount"]) - c.reversed)
             for c in earned if c.status != "reversed"]
    steps = [(c, fen) for c, fen in steps if fen > 0]
    await ledger.add_reversed(conn, [(c.id, fen) for c, fen in steps], now)
    lines: list[tuple[str, int | None, Line]] = []
    live: list[LiveEvent] = []
    clawed = [(c, fen) for c, fen in steps if c.status == "settled"]
    balance = await _available_locked(conn, sorted({c.beneficiary for c, _ in clawed}))
    for c, fen in steps:
        if c.status == "pending":
            lines += [(_txn(c, f"reverse-{piece}"), c.id, line)
                      for line in rules.reverse(c.beneficiary, fen)]
            event = _event(c, "commission_reversed", amount=fen, reversed=c.reversed + fen)
        else:
            have, owes = balance[c.beneficiary]
            taken_back = rules.claw_back(c.beneficiary, fen, have)
            lines += [(_txn(c, f"clawback-{piece}"), c.id, line) for line in taken_back]
            short = fen - min(fen, max(0, have))
            balance[c.beneficiary] = (have - (fen - short), owes + short)
            event = _event(c, "commission_clawed_back", amount=fen,
                           reversed=c.reversed + fen, from_available=fen - short,
                           to_debt=short, debt=owes + short)
        live.append(event)
    await ledger.write_lines(conn, lines)
    view = reads.order_view(refunded)
    told = ({"type": "order_refunded", "order": view} if refunded["status"] == "refunded"
            else {"type": "order_partly_refunded", "order": view, "amount": piece_amount})
    return answers.ok({"order": view}), [LiveEvent(user_topic(buyer), 0, told), *live]


async def _available_locked(conn: asyncpg.Connection, users: Sequence[str]
                            ) -> dict[str, tuple[int, int]]:
    """Each of `users`' (available balance, debt owed), read under their lock (taken in
    name order), so a withdrawal or another refund cannot spend the same balance."""
    for user in users:
        await store.lock_user(conn, user)
    found = await ledger.balances(conn, [a for u in users
                                         for a in (rules.available(u), rules.debt(u))])
    return {u: (found[rules.available(u)], -found[rules.debt(u)]) for u in users}


async def bind(conn: asyncpg.Connection, user: str, referrer: str,
               policy: rules.BindingPolicy, clock: Callable[[], datetime]
               ) -> tuple[Answer, list[LiveEvent]]:
    """Bind `user` to `referrer` at `clock`'s time (the pipeline's) as `policy` allows
    (games.commission.decide_bind): a first binding, the same one again (answered as it
    stands), or a takeover that ends the binding in force and keeps it in the history.

    The new referrer is told `referral_bound`; a referrer who lost the user is told
    `referral_moved`. Binds that may write hold one lock, so two at once never pass the
    loop check together (A binding to B while B binds to A).
    """
    existing = await ledger.referral_of(conn, user)
    current = _bound(existing)
    now = clock()
    if not rules.needs_chain(referrer, current, policy, now):
        # The binding in force decides alone (answered as it stands, or refused): a
        # bound user's every share-link join takes no lock and walks no chain.
        decision = rules.decide_bind(user, referrer, current, (), policy, now)
    else:
        await ledger.lock_referrals(conn)
        existing = await ledger.referral_of(conn, user)  # as it is under the lock
        current = _bound(existing)
        # Read once the lock is held: a bind that waited for it is later than the one it
        # waited for, so a binding never ends before it began (a clock stepping back
        # aside).
        now = clock() if current is None else max(clock(), current.bound_at)
        decision = rules.decide_bind(user, referrer, current,
                                     await ledger.ancestors(conn, referrer), policy, now)
    if decision.outcome == "refused":
        return answers.error(decision.code, decision.message), []
    if decision.outcome == "unchanged":
        assert existing is not None
        return answers.ok({"referral": reads.referral_view(existing)}), []
    live = [LiveEvent(user_topic(referrer), 0, {"type": "referral_bound", "user": user})]
    if decision.outcome == "moved":
        assert current is not None
        row = await ledger.move_referral(conn, user, referrer, now)
        # Who took the user over is the user's business, not the former referrer's.
        live.append(LiveEvent(user_topic(current.referrer), 0,
                              {"type": "referral_moved", "user": user}))
    else:
        row = await ledger.insert_referral(conn, user, referrer, now)
    return answers.ok({"referral": reads.referral_view(row)}), live


async def distributor(conn: asyncpg.Connection, user: str, action: str, actor: str,
                      now: datetime) -> tuple[Answer, list[LiveEvent]]:
    """`action` on `user`'s distributor status: "apply" (by the user themselves),
    "approve" or "revoke" (by the marketer `actor`), at `now` (the pipeline's clock).

    Applying is idempotent (again while applied answers the same; after a revocation it
    applies anew); an approved user applying is told they are one already. Approving
    needs an application (or a revoked one); approving the approved or revoking the
    revoked answers as it stands and changes nothing.
    """
    row = await distributors.lock(conn, user)
    status = None if row is None else row["status"]
    if action == "apply":
        if status == "approved":
            return answers.error("already_distributor",
                                 "you are an approved distributor already"), []
        if row is not None and status == "applied":
            return answers.ok({"distributor": distributors.view(row)}), []
        row = await distributors.apply(conn, user, now)
    else:
        target = {"approve": "approved", "revoke": "revoked"}[action]
        if row is None:
            return answers.error("not_found", f"{user!r} has not applied to distribute"), []
        if status == target:
            return answers.ok({"distributor": distributors.view(row)}), []
        row = await distributors.decide(conn, user, target, actor, now)
    view = distributors.view(row)
    return answers.ok({"distributor": view}), [LiveEvent(user_topic(user), 0, {
        "type": "distributor_status", "distributor": view})]


def _bound(row: asyncpg.Record | None) -> rules.Bound | None:
    return None if row is None else rules.Bound(row["referrer"], row["bound_at"])
