"""What the commission ledger must say after anything: checked by tests of the ledger's
area after each test (`problems` lists what is wrong; an empty list is a sound ledger).

- every ledger transaction sums to zero (the database refuses others too: this also
  catches lines written outside a whole transaction);
- no user account is on the wrong side of zero: pending, available and withdrawing never
  below it (a refund after settlement takes from available only what it holds), a debt
  never above it (it is what the user owes, paid back at most to zero);
- every commission is posted once and each fen of it ends exactly once: of its `amount`,
  `reversed` went back to the shop (refunds, in pieces: `reverse-{n}` from pending while
  it was pending, `clawback-{n}` from available or into debt after it settled) and the
  rest either still waits in pending (pending), or settled once (`settled` = amount less
  what was reversed before, moved to available or to pay a debt); a commission reversed
  whole is `reversed`; only on an order whose deal completed;
- each commission's `reversed` is exactly its share of what its order refunded:
  floor(amount × refunded_amount / order amount) (games.commission.reversed_through);
  so a reversed one's order is refunded, and a refunded order's commissions are all back;
- each order's `refunded_amount` is the sum of its refund pieces and of its refund
  movements, and the provider is asked for at least that of its payment, at most what
  was paid;
- each user's accounts equal what the commissions and withdrawals say: pending = the rest
  of their pending commissions, available + debt = what settled less what refunds took
  back since and what they withdrew or are withdrawing, withdrawing = their withdrawals
  under review.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import asyncpg


def _kind(txn: str) -> str:
    """A commission line's step: post, settle, reverse (piece n: `reverse-n`), clawback."""
    return txn.rsplit(":", 1)[-1].split("-", 1)[0]


async def problems(conn: asyncpg.Connection) -> list[str]:
    """Everything wrong with the ledger `conn` sees (see the module docstring)."""
    found: list[str] = []
    for row in await conn.fetch("SELECT txn, sum(amount) AS total FROM ledger_entries"
                                " GROUP BY txn HAVING sum(amount) <> 0"):
        found.append(f"transaction {row['txn']} sums to {row['total']}")
    balances: dict[str, int] = {
        r["account"]: int(r["balance"]) for r in await conn.fetch(
            "SELECT account, sum(amount) AS balance FROM ledger_entries"
            " WHERE account LIKE 'user:%' GROUP BY account")}
    for account, balance in balances.items():
        if account.endswith(":debt"):
            if balance > 0:
                found.append(f"{account} is {balance} fen: more paid back than was owed")
        elif balance < 0:
            found.append(f"{account} is {balance} fen (only a debt may be below zero)")
    # Per commission: how many lines of each step, how many transactions of each step,
    # and the fen each step moved on each side.
    lines: dict[int, Counter[str]] = defaultdict(Counter)
    txns: dict[int, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    moved: dict[int, Counter[tuple[str, str]]] = defaultdict(Counter)
    for row in await conn.fetch("SELECT commission_id, txn, account, amount"
                                " FROM ledger_entries WHERE commission_id IS NOT NULL"):
        cid, kind = row["commission_id"], _kind(row["txn"])
        lines[cid][kind] += 1
        txns[cid][kind].add(row["txn"])
        side = row["account"].rsplit(":", 1)[-1] if row["account"].startswith("user:") \
            else "shop"
        moved[cid][(kind, side)] += row["amount"]
    expected: dict[str, int] = Counter()
    for c in await conn.fetch(
            "SELECT c.id, c.status, c.beneficiary, c.amount, c.reversed, c.settled,"
            " o.status AS order_status, o.confirmed_at, o.amount AS order_amount,"
            " o.refunded_amount FROM commissions c JOIN orders o ON o.id = c.order_id"):
        cid, status, amount, back = c["id"], c["status"], c["amount"], c["reversed"]
        kinds, fen = lines.get(cid, Counter()), moved.get(cid, Counter())
        steps = txns.get(cid, {})
        where = f"commission {cid} ({status}, {amount} fen, {back} reversed)"
        if kinds["post"] != 1 or fen[("post", "pending")] != amount:
            found.append(f"{where} is posted by lines {dict(kinds)}, {dict(fen)}")
        if set(kinds) - {"post", "settle", "reverse", "clawback"}:
            found.append(f"{where} has lines of unknown steps {dict(kinds)}")
        # A reversal piece is two lines; a settlement or a clawback two or three (the
        # debt's share is its own line), each once per transaction.
        for kind, low, high in (("reverse", 2, 2), ("settle", 2, 3), ("clawback", 2, 3)):
            n = len(steps.get(kind, ()))
            if not n * low <= kinds[kind] <= n * high:
                found.append(f"{where} has {kinds[kind]} {kind} lines in {n} transactions")
        before = -fen[("reverse", "pending")]  # reversed while pending
        after = fen[("clawback", "shop")]  # taken back after it settled
        if fen[("reverse", "shop")] != before or before + after != back:
            found.append(f"{where}: its reversals moved {dict(fen)}")
        if len(steps.get("settle", ())) != (1 if status == "settled" else 0):
            found.append(f"{where} settled in {len(steps.get('settle', ()))} transactions")
        if status == "settled":
            if c["settled"] != amount - before or -fen[("settle", "pending")] != c["settled"]:
                found.append(f"{where} settled {c['settled']} fen with lines {dict(fen)}")
            if fen[("settle", "available")] + fen[("settle", "debt")] != c["settled"]:
                found.append(f"{where}: its settlement moved {dict(fen)}")
        elif after or c["settled"] is not None:
            found.append(f"{where} is taken back after a settlement it never had")
        if status == "reversed" and back != amount:
            found.append(f"{where} is reversed but not whole")
        if status == "pending" and back >= amount:
            found.append(f"{where} is pending with nothing left")
        if c["confirmed_at"] is None:
            found.append(f"commission {cid} is on an order whose deal is not done")
        share = (amount * c["refunded_amount"] // c["order_amount"]
                 if c["order_amount"] else 0)
        if back != share:
            found.append(f"{where}: its order refunded {c['refunded_amount']} of"
                         f" {c['order_amount']} fen, so {share} fen should be reversed")
        if status == "reversed" and c["order_status"] != "refunded":
            found.append(f"commission {cid} is reversed but its order is not refunded")
        if back != amount and c["order_status"] == "refunded":
            found.append(f"commission {cid} outlived its order's refund")
        user = c["beneficiary"]
        if status == "pending":
            expected[f"user:{user}:pending"] += amount - back
        elif status == "settled":
            expected[f"user:{user}:funds"] += c["settled"] - after
    for w in await conn.fetch("SELECT user_id, amount, status FROM withdrawals"):
        if w["status"] in ("reviewing", "paid"):
            expected[f"user:{w['user_id']}:funds"] -= w["amount"]
        if w["status"] == "reviewing":
            expected[f"user:{w['user_id']}:withdrawing"] += w["amount"]
    # Available and debt are checked together: which of the two a fen is in depends on
    # the order settlements and clawbacks came in; their sum does not.
    held: dict[str, int] = Counter()
    for account, balance in balances.items():
        user, _, kind = account.rpartition(":")
        held[f"{user}:funds" if kind in ("available", "debt") else account] += balance
    for account in set(expected) | set(held):
        if held.get(account, 0) != expected.get(account, 0):
            found.append(f"{account} holds {held.get(account, 0)} fen; its commissions"
                         f" and withdrawals say {expected.get(account, 0)}")
    found += await _refunds(conn)
    return found


async def _refunds(conn: asyncpg.Connection) -> list[str]:
    """What is wrong with the orders' refunds: each order's refunded amount is the sum of
    its pieces, of its refund movements and of its payment's provider refunds."""
    found: list[str] = []
    for o in await conn.fetch(
            "SELECT o.id, o.amount, o.status, o.refunded_amount,"
            " (SELECT coalesce(sum(amount), 0) FROM order_refunds r WHERE r.order_id = o.id)"
            " AS pieces,"
            " (SELECT count(*) FROM order_refunds r WHERE r.order_id = o.id) AS n,"
            " (SELECT coalesce(sum(amount), 0) FROM payments p WHERE p.kind = 'refund'"
            "  AND p.campaign = o.campaign AND p.instance = o.instance AND p.line = o.line)"
            " AS moved,"
            " (SELECT payment_id FROM payments p WHERE p.kind = 'payment'"
            "  AND p.campaign = o.campaign AND p.instance = o.instance AND p.line = o.line)"
            " AS payment FROM orders o"):
        where = f"order {o['id']} ({o['status']}, {o['refunded_amount']} of {o['amount']})"
        if o["pieces"] != o["refunded_amount"] or o["moved"] != o["refunded_amount"]:
            found.append(f"{where}: its pieces say {o['pieces']}, its movements {o['moved']}")
        if o["status"] == "refunded" and o["n"] == 0:
            found.append(f"{where} is refunded without a piece")
        if (o["status"] == "refunded") != (o["refunded_amount"] == o["amount"] > 0) and \
                o["amount"] > 0:
            found.append(f"{where}: its status disagrees with what it refunded")
        if o["payment"]:
            asked = await conn.fetchval(
                "SELECT coalesce(sum(amount), 0) FROM provider_refunds WHERE payment_id = $1",
                o["payment"])
            # Every fen refunded is asked of the provider, never more than was paid (a
            # test may stand in for the provider's own refund of the payment).
            if not o["refunded_amount"] <= asked <= o["amount"]:
                found.append(f"{where}: the provider is asked for {asked} fen back")
    return found
