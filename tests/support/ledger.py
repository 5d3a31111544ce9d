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
  under review;
- the referral bindings: each binding in force (`referrals`) is its user's one open row
  of `referral_history`, and each open row is one in force; a user's bindings follow one
  another (each ends, taken over by the next one's referrer, when the next begins); and
  the bindings in force never loop;
- who earns: a buyer earns on their own order at level 1 only (self-purchase); each
  distributor's status and each user's grade is the last of their recorded changes,
  and a user's grade changes follow one another;
- times follow one another on the one clock: an order is confirmed, refunded, its
  commissions settled (never before due) and closed, and a withdrawal closed, each no
  earlier than the step before it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import pairwise

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
    found += await _earner_problems(conn)
    found += await referral_problems(conn)
    found += await _refunds(conn)
    found += await _times(conn)
    return found


async def _times(conn: asyncpg.Connection) -> list[str]:
    """Business times, all from the pipeline's one clock, follow one another: an order
    is confirmed and refunded no earlier than it was made (a refund of a confirmed one
    no earlier than its confirmation), a commission settles no earlier than it was due
    and closes no earlier than its order's confirmation, a withdrawal closes no earlier
    than it was asked for."""
    rows = await conn.fetch(
        "SELECT 'order ' || id || ' confirmed before it was made' AS problem FROM orders"
        " WHERE confirmed_at < created_at"
        " UNION ALL SELECT 'order ' || id || ' refunded before it was made or confirmed'"
        " FROM orders WHERE refunded_at < coalesce(confirmed_at, created_at)"
        " UNION ALL SELECT 'commission ' || c.id || ' settled before it was due'"
        " FROM commissions c WHERE c.status = 'settled' AND c.closed_at < c.settle_at"
        " UNION ALL SELECT 'commission ' || c.id || ' closed before its order was confirmed'"
        " FROM commissions c JOIN orders o ON o.id = c.order_id"
        " WHERE c.closed_at < o.confirmed_at"
        " UNION ALL SELECT 'withdrawal ' || id || ' closed before it was asked for'"
        " FROM withdrawals WHERE closed_at < created_at")
    return [r["problem"] for r in rows]


async def _earner_problems(conn: asyncpg.Connection) -> list[str]:
    found = [f"commission {r['id']}: {r['buyer']} earned level 2 on their own order"
             for r in await conn.fetch("SELECT id, buyer FROM commissions"
                                       " WHERE beneficiary = buyer AND level <> 1")]
    for r in await conn.fetch(
            "SELECT d.user_id, d.status, (SELECT c.status FROM distributor_changes c"
            " WHERE c.user_id = d.user_id ORDER BY c.id DESC LIMIT 1) AS last"
            " FROM distributors d"):
        if r["status"] != r["last"]:
            found.append(f"distributor {r['user_id']} is {r['status']}; its last recorded"
                         f" change says {r['last']}")
    changes: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for r in await conn.fetch("SELECT user_id, from_grade, to_grade FROM grade_changes"
                              " ORDER BY id"):
        changes[r["user_id"]].append((r["from_grade"], r["to_grade"]))
    for user, steps in changes.items():
        for (_, before), (after, _) in pairwise(steps):
            if before != after:
                found.append(f"{user}'s grade went to {before} but next changed from {after}")
    current = {r["user_id"]: r["grade"]
               for r in await conn.fetch("SELECT user_id, grade FROM distributor_grades")}
    for user in set(current) | set(changes):
        last = changes[user][-1][1] if changes.get(user) else None
        if current.get(user) != last:
            found.append(f"{user} is at grade {current.get(user)}; its changes end at {last}")
    return found


async def referral_problems(conn: asyncpg.Connection) -> list[str]:
    """What is wrong with the referral bindings and their history (see above)."""
    found: list[str] = []
    for row in await conn.fetch(
            "SELECT r.user_id, r.referrer, r.bound_at, h.referrer AS h_referrer,"
            " h.bound_at AS h_bound_at FROM referrals r FULL JOIN (SELECT * FROM"
            " referral_history WHERE ended_at IS NULL) h ON h.user_id = r.user_id"
            " WHERE r.user_id IS NULL OR h.user_id IS NULL OR r.referrer <> h.referrer"
            " OR r.bound_at <> h.bound_at"):
        found.append(f"binding of {row['user_id']!r} in force ({row['referrer']},"
                     f" {row['bound_at']}) is not its history's open one"
                     f" ({row['h_referrer']}, {row['h_bound_at']})")
    last: dict[str, asyncpg.Record] = {}
    for row in await conn.fetch("SELECT * FROM referral_history ORDER BY user_id, id"):
        before = last.get(row["user_id"])
        if before is not None and (before["ended_at"], before["ended_by"]) != (
                row["bound_at"], row["referrer"]):
            found.append(f"binding {row['id']} of {row['user_id']!r} does not follow the"
                         f" one before it ({dict(before)})")
        last[row["user_id"]] = row
    found += [f"the last binding of {user!r} has ended" for user, row in last.items()
              if row["ended_at"] is not None]
    loops = await conn.fetch(
        "WITH RECURSIVE up(start, at, depth) AS (SELECT user_id, referrer, 1 FROM referrals"
        " UNION ALL SELECT up.start, r.referrer, up.depth + 1 FROM up JOIN referrals r"
        " ON r.user_id = up.at WHERE up.at <> up.start AND up.depth < 1000)"
        " SELECT DISTINCT start FROM up WHERE at = start")
    found += [f"the bindings in force loop through {r['start']!r}" for r in loops]
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
