"""The pipeline's withdrawal work: hold, pay at once or queue for review, decide.

Each function runs inside the pipeline's transaction and returns its answer with the
live events to publish once that transaction has committed. A request is checked
against the user's available balance under a per-user lock and holds its amount in
the same transaction, so concurrent requests cannot spend the same fen twice; its
idempotency key makes a repeat answer the first withdrawal instead of paying again.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from actors import answers
from actors.answers import Answer
from actors.payments import PaymentAdapter
from games import withdrawal as rules
from games.commission import Line, available, debt
from games.errors import GameError
from games.topics import user_topic
from storage import ledger, reads
from storage import withdrawals as store
from storage.live import LiveEvent


def _txn(withdrawal_id: int, step: str) -> str:
    return f"withdrawal:{withdrawal_id}:{step}"


def _lines(withdrawal_id: int, step: str, lines: Sequence[Line]
           ) -> list[tuple[str, int | None, Line]]:
    return [(_txn(withdrawal_id, step), None, line) for line in lines]


def _event(kind: str, row: asyncpg.Record, **extra: int) -> LiveEvent:
    return LiveEvent(user_topic(row['user_id']), 0,
                     {"type": kind, "withdrawal": reads.withdrawal_view(row), **extra})


async def _pay(conn: asyncpg.Connection, payments: PaymentAdapter, row: asyncpg.Record,
               reviewer: str | None, note: str | None, now: datetime) -> asyncpg.Record:
    # The payee receives the amount less its fee; the fee is a ledger line of its own.
    reference = await payments.payout(conn, row["id"], row["user_id"],
                                      row["amount"] - row["fee"])
    await ledger.write_lines(conn, _lines(row["id"], "pay",
                                          rules.pay(row["user_id"], row["amount"], row["fee"])))
    paid: asyncpg.Record = await store.close(conn, row["id"], "paid", reference, reviewer,
                                             note, now)
    return paid


async def request(conn: asyncpg.Connection, payments: PaymentAdapter, user: str, key: str,
                  amount: int, limits: rules.Limits, now: datetime
                  ) -> tuple[Answer, list[LiveEvent]]:
    """`user` asks to withdraw `amount` fen of their available commission, at `now`
    (the pipeline's clock)."""
    await store.lock_user(conn, user)
    first = await store.by_key(conn, user, key)
    if first is not None:
        if first["amount"] != amount:
            return answers.error("invalid_request",
                                 "this idempotency key was used for another amount"), []
        return answers.ok({"withdrawal": reads.withdrawal_view(first)}), []
    try:
        balance = (await ledger.balances(conn, [available(user)]))[available(user)]
        decision = rules.decide(amount, balance, limits)
    except GameError as refused:
        return answers.error(refused.code, refused.message), []
    row = await store.insert(conn, user, key, amount, "reviewing", limits.fee(amount), now)
    await ledger.write_lines(conn, _lines(row["id"], "hold", rules.hold(user, amount)))
    if decision is rules.Decision.PAY:
        row = await _pay(conn, payments, row, None, None, now)
        return answers.ok({"withdrawal": reads.withdrawal_view(row)}), [
            _event("withdrawal_paid", row)]
    return answers.ok({"withdrawal": reads.withdrawal_view(row)}), [
        _event("withdrawal_reviewing", row)]


async def review(conn: asyncpg.Connection, payments: PaymentAdapter, reviewer: str,
                 withdrawal_id: int, approve: bool, note: str | None, now: datetime
                 ) -> tuple[Answer, list[LiveEvent]]:
    """A marketer pays (`approve`) or rejects a withdrawal waiting for review, at `now`
    (the pipeline's clock).

    Deciding again as decided before answers the withdrawal as it is; the opposite
    decision on a decided one is `already_reviewed`.
    """
    row = await store.lock(conn, withdrawal_id)
    if row is None:
        return answers.error("not_found", f"no withdrawal {withdrawal_id}"), []
    wanted = "paid" if approve else "rejected"
    if row["status"] == wanted:
        return answers.ok({"withdrawal": reads.withdrawal_view(row)}), []
    if row["status"] != "reviewing":
        return answers.error("already_reviewed",
                             f"withdrawal {withdrawal_id} is {row['status']} already"), []
    if approve:
        row = await _pay(conn, payments, row, reviewer, note, now)
        return answers.ok({"withdrawal": reads.withdrawal_view(row)}), [
            _event("withdrawal_paid", row)]
    # The user's lock (the one refunds take) keeps their debt still while it is repaid.
    await store.lock_user(conn, row["user_id"])
    owed = -(await ledger.balances(conn, [debt(row["user_id"])]))[debt(row["user_id"])]
    await ledger.write_lines(conn, _lines(row["id"], "release",
                                          rules.release(row["user_id"], row["amount"], owed)))
    row = await store.close(conn, row["id"], "rejected", None, reviewer, note, now)
    return answers.ok({"withdrawal": reads.withdrawal_view(row)}), [
        _event("withdrawal_rejected", row, debt_paid=min(row["amount"], owed))]
