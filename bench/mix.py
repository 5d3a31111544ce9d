"""The pipeline mix: refunds in pieces and after-sales refunds while deals flow, and what
the ledger must say after them.

While the deal pairs run on the mix deployment (see `bench.stack.MIX_CAMPAIGNS`), a
`Refunder` in the driver watches the orders the pipeline commits and, by order id
(`id % every`), refunds a share of them through the public routes:

- 0: the buyer refunds one piece, a third of the order (`POST /api/orders/{id}/refund`
  with `{"amount": fen}`), inside the return window;
- 1: the buyer refunds two pieces (1777 fen, then 2333 fen: reversals that round down);
- 2: the buyer refunds a piece (1001 fen), then the rest (no amount: refunded whole);
- 3: once its commissions settled, a marketer refunds half of it after sales
  (`POST /api/admin/orders/{id}/refund`): settled commission taken back from available;
- 4: once settled, its level-1 earner withdraws their whole available balance first
  (`POST /api/withdrawals`), then a marketer refunds the order whole: what available
  lacks becomes the earner's debt, which the next settlements pay first.

A buyer's piece that comes after the window closed is refused (`return_window_closed`)
and counted, never a failure: under load that is the run's pace, not a broken rule.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable
from typing import Any

import aiohttp
import asyncpg

from bench.clients import token
from games import commission as rules
from server.auth import issue
from tests.support import ledger as audit

MARKETER = "bench-boss"
CONCURRENCY = 64  # refund calls in flight at once
POLL = 0.2  # s between looks at the new orders (the refunder's own pace)
KINDS = 5  # refund kinds, by order id % every (the module docstring)
LOOK_BACK = 2000  # order ids below the highest seen that are looked at again


class Refunder:
    """Refunds a share of the mix's orders as they come (see the module docstring)."""

    def __init__(self, pool: asyncpg.Pool, url: str, secret: str,
                 campaigns: tuple[str, ...], every: int) -> None:
        if every < KINDS:
            raise ValueError(f"one order in {every} of each of {KINDS} kinds is too many")
        self.conn = pool  # a pool: the look for new orders and the refunds query at once
        self.url = url
        self.secret = secret
        self.campaigns = list(campaigns)
        self.every = every
        self.seen: set[int] = set()
        self.high = 0  # the highest order id seen
        self.after_sales: dict[int, tuple[str, int]] = {}  # order -> (kind, amount) waiting
        self.codes: Counter[str] = Counter()
        self.pieces = 0  # pieces the routes accepted
        self.withdrawals = 0
        self._slots = asyncio.Semaphore(CONCURRENCY)
        self._tasks: set[asyncio.Task[None]] = set()
        self._boss = {"Authorization": f"Bearer {issue(secret, MARKETER, role='marketer')}"}

    async def run(self, stop: asyncio.Event, linger: float) -> None:
        """Refund as orders come until `stop`; then finish the after-sales refunds still
        waiting for their settlement, for at most `linger` seconds more."""
        async with aiohttp.ClientSession() as session:
            self.session = session
            while not stop.is_set():
                await self._new_orders()
                await self._settled()
                await asyncio.sleep(POLL)
            await self._new_orders()  # the last deals' orders, for their after-sales
            until = time.monotonic() + linger
            while self.after_sales and time.monotonic() < until:
                await self._settled()
                await asyncio.sleep(POLL)
            if self._tasks:
                await asyncio.gather(*self._tasks)
        self.codes.update({"after_sales_never_settled": len(self.after_sales)})

    def _spawn(self, work: Awaitable[None]) -> None:
        async def bounded() -> None:
            async with self._slots:
                await work

        task = asyncio.create_task(bounded())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _new_orders(self) -> None:
        # Ids are taken at insert, so one committed a little late may sit below the
        # highest seen: look back a margin and skip those already seen. Only the orders
        # of a refund's kind are read (the driver shares the machine it measures).
        rows = await self.conn.fetch(
            "SELECT id, user_id, amount FROM orders WHERE campaign = ANY($1::text[])"
            " AND id > $2 AND id % $3 < $4 AND confirmed_at IS NOT NULL ORDER BY id",
            self.campaigns, self.high - LOOK_BACK, self.every, KINDS)
        for row in rows:
            order, buyer, amount = int(row["id"]), row["user_id"], int(row["amount"])
            if order in self.seen:
                continue
            self.seen.add(order)
            self.high = max(self.high, order)
            kind = order % self.every
            if kind == 0:
                self._spawn(self._buyer(order, buyer, [amount // 3]))
            elif kind == 1:
                self._spawn(self._buyer(order, buyer, [1777, 2333]))
            elif kind == 2:
                self._spawn(self._buyer(order, buyer, [1001, None]))
            elif kind == 3:
                self.after_sales[order] = ("half", amount // 2)
            elif kind == 4:
                self.after_sales[order] = ("debt", amount)

    async def _settled(self) -> None:
        if not self.after_sales:
            return
        rows = await self.conn.fetch(
            "SELECT order_id, (array_agg(beneficiary ORDER BY level))[1] AS earner"
            " FROM commissions WHERE order_id = ANY($1::bigint[]) GROUP BY order_id"
            " HAVING bool_and(status = 'settled')", list(self.after_sales))
        for row in rows:
            order = int(row["order_id"])
            kind, amount = self.after_sales.pop(order)
            self._spawn(self._after_sales(order, kind, amount, row["earner"]))

    async def _post(self, path: str, headers: dict[str, str], body: dict[str, Any] | None,
                    what: str) -> bool:
        try:
            async with self.session.post(self.url + path, json=body, headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=30)) as resp:
                answer = await resp.json()
                code = "ok" if resp.status < 300 else answer.get("error", {}).get("code", "?")
                self.codes[f"{what} {resp.status} {code}"] += 1
                return resp.status < 300
        except (aiohttp.ClientError, TimeoutError, ValueError) as failed:
            self.codes[f"{what} {type(failed).__name__}"] += 1
            return False

    def _user(self, user: str, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token(self.secret, user)}", "Idempotency-Key": key}

    async def _buyer(self, order: int, buyer: str, pieces: list[int | None]) -> None:
        """The buyer's pieces, one after another (None: the rest)."""
        for n, amount in enumerate(pieces, 1):
            body = None if amount is None else {"amount": amount}
            if not await self._post(f"/api/orders/{order}/refund",
                                    self._user(buyer, f"mix-{order}-{n}"), body, "buyer"):
                return
            self.pieces += 1

    async def _after_sales(self, order: int, kind: str, amount: int, earner: str) -> None:
        if kind == "debt":
            held = await self.conn.fetchval(
                "SELECT coalesce(sum(amount), 0) FROM ledger_entries WHERE account = $1",
                rules.available(earner))
            if held >= 100 and await self._post(  # the smallest withdrawal (the default)
                    "/api/withdrawals", self._user(earner, f"mix-w-{order}"),
                    {"amount": int(held)}, "withdrawal"):
                self.withdrawals += 1
        body: dict[str, Any] = {"note": "bench after-sales"}
        if kind == "half":
            body["amount"] = amount
        headers = {**self._boss, "Idempotency-Key": f"mix-a-{order}"}
        if await self._post(f"/api/admin/orders/{order}/refund", headers, body, "after_sales"):
            self.pieces += 1


async def wait_settled(conn: asyncpg.Connection, timeout: float) -> float:
    """Poll until no commission is pending (the last orders' windows ended and the
    pipeline settled them: the ledger is still when it is audited); seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not await conn.fetchval("SELECT count(*) FROM commissions"
                                   " WHERE status = 'pending'"):
            break
        await asyncio.sleep(0.25)  # the pipeline's settlement timer runs in another process
    return time.monotonic() - started


async def figures(conn: asyncpg.Connection) -> dict[str, Any]:
    """What the mix did: grade changes, refund pieces and their fen, debts, withdrawals."""
    grades = {r["to_grade"]: int(r["n"]) for r in await conn.fetch(
        "SELECT to_grade, count(*) AS n FROM grade_changes GROUP BY 1")}
    refunds = {("after_sales" if r["after_sales"] else "buyer"): {
        "pieces": int(r["n"]), "fen": int(r["fen"])} for r in await conn.fetch(
        "SELECT after_sales, count(*) AS n, sum(amount) AS fen FROM order_refunds"
        " GROUP BY 1")}
    orders = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE refunded_amount > 0 AND status <> 'refunded')"
        " AS partly, count(*) FILTER (WHERE status = 'refunded') AS whole FROM orders")
    debt = await conn.fetchrow(
        "SELECT coalesce(-sum(amount) FILTER (WHERE txn LIKE '%:clawback-%'), 0) AS incurred,"
        " coalesce(sum(amount) FILTER (WHERE txn LIKE '%:settle'), 0) AS repaid"
        " FROM ledger_entries WHERE account LIKE 'user:%:debt'")
    owing = await conn.fetchrow(
        "SELECT count(*) AS users, coalesce(-sum(b), 0) AS fen FROM (SELECT sum(amount) AS b"
        " FROM ledger_entries WHERE account LIKE 'user:%:debt' GROUP BY account) t"
        " WHERE b < 0")
    withdrawn = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(sum(amount), 0) AS fen FROM withdrawals")
    return {"grade_changes": sum(grades.values()), "grades_reached": grades,
            "refunds": refunds, "orders_partly_refunded": int(orders["partly"]),
            "orders_refunded_whole": int(orders["whole"]),
            "debt_incurred_fen": int(debt["incurred"]), "debt_repaid_fen": int(debt["repaid"]),
            "users_in_debt": int(owing["users"]), "debt_owed_fen": int(owing["fen"]),
            "withdrawals": int(withdrawn["n"]), "withdrawn_fen": int(withdrawn["fen"])}


# The key ledger checks as counts, set-based (fast at any size); `audit` adds the whole
# of tests/support/ledger.py's audit beside them.
BROKEN = ("unbalanced", "below_zero", "debt_above_zero", "reversal_mismatch",
          "refunded_mismatch", "audit_problems")


async def invariants(conn: asyncpg.Connection) -> dict[str, Any]:
    """The ledger after the mix: every transaction balances; no account but a debt below
    zero, and no debt above it; each commission's reversed = floor(amount × order's
    refunded / order's amount) (games.commission.reversed_through); each order's
    refunded_amount = its pieces; and tests/support/ledger.py's whole audit (its first
    problems listed).

    All in one read-only snapshot (repeatable read): the audit reads the ledger lines,
    then the commissions, and a settlement committing between the two reads would look
    like a commission settled without its lines."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        return await _invariants(conn)


async def _invariants(conn: asyncpg.Connection) -> dict[str, Any]:
    row = await conn.fetchrow(
        """
        WITH b AS (SELECT account, sum(amount) AS balance FROM ledger_entries
                   WHERE account LIKE 'user:%' GROUP BY account)
        SELECT
          (SELECT count(*) FROM (SELECT txn FROM ledger_entries GROUP BY txn
                                 HAVING sum(amount) <> 0) t) AS unbalanced,
          (SELECT count(*) FROM b WHERE account NOT LIKE '%:debt' AND balance < 0)
            AS below_zero,
          (SELECT count(*) FROM b WHERE account LIKE '%:debt' AND balance > 0)
            AS debt_above_zero,
          (SELECT count(*) FROM commissions c JOIN orders o ON o.id = c.order_id
           WHERE o.amount > 0 AND c.reversed <> c.amount * o.refunded_amount / o.amount)
            AS reversal_mismatch,
          (SELECT count(*) FROM orders o WHERE o.refunded_amount <> (
              SELECT coalesce(sum(amount), 0) FROM order_refunds r WHERE r.order_id = o.id))
            AS refunded_mismatch
        """)
    found: dict[str, Any] = {k: int(v) for k, v in row.items()}
    problems = await audit.problems(conn)
    found["audit_problems"] = len(problems)
    found["audit_first"] = problems[:10]
    return found


def failures(mix: dict[str, Any] | None) -> list[str]:
    """What fails a run in the mix: a broken ledger invariant, or a mix that refunded
    nothing or made no deal (speed never fails it)."""
    if mix is None:
        return []
    found = [f"pipeline mix: {k} = {mix['invariants'].get(k)}" for k in BROKEN
             if mix["invariants"].get(k, 1)]
    found += [f"pipeline mix audit: {p}" for p in mix["invariants"].get("audit_first", [])]
    if not mix.get("deals"):
        found.append("pipeline mix: no deal was made")
    if not mix.get("refund_pieces"):
        found.append("pipeline mix: no refund piece was accepted")
    return found
