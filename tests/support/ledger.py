"""What the commission ledger must say after anything: checked by tests of the ledger's
area after each test (`problems` lists what is wrong; an empty list is a sound ledger).

- every ledger transaction sums to zero (the database refuses others too: this also
  catches lines written outside a whole transaction);
- no user account is below zero (no debt is recorded yet, so none may be owed);
- every commission is posted once and ends at most once: pending (posted only),
  settled (posted, then settled once) or reversed (posted, then reversed once), never
  both, and only on an order whose deal completed; a reversed one's order is refunded;
- each user's accounts equal what the commissions and withdrawals say: pending = their
  pending commissions, available = settled ones less what they withdrew or are
  withdrawing, withdrawing = their withdrawals under review;
- the referral bindings: each binding in force (`referrals`) is its user's one open row
  of `referral_history`, and each open row is one in force; a user's bindings follow one
  another (each ends, taken over by the next one's referrer, when the next begins); and
  the bindings in force never loop.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from itertools import pairwise

import asyncpg


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
        if balance < 0:
            found.append(f"{account} is {balance} fen (no debt is recorded)")
    lines: dict[int, Counter[str]] = defaultdict(Counter)
    for row in await conn.fetch("SELECT commission_id, txn FROM ledger_entries"
                                " WHERE commission_id IS NOT NULL"):
        lines[row["commission_id"]][row["txn"].rsplit(":", 1)[-1]] += 1
    expected: dict[str, int] = Counter()
    for c in await conn.fetch(
            "SELECT c.id, c.status, c.beneficiary, c.amount, o.status AS order_status,"
            " o.confirmed_at FROM commissions c JOIN orders o ON o.id = c.order_id"):
        kinds = lines.get(c["id"], Counter())
        # A commission's post is one line in its batch; a settlement or reversal is two.
        want = {"post": 1} | ({"settle": 2} if c["status"] == "settled" else {}) | (
            {"reverse": 2} if c["status"] == "reversed" else {})
        if dict(kinds) != want:
            found.append(f"commission {c['id']} ({c['status']}) has lines {dict(kinds)},"
                         f" not {want}")
        if c["confirmed_at"] is None:
            found.append(f"commission {c['id']} is on an order whose deal is not done")
        if c["status"] == "reversed" and c["order_status"] != "refunded":
            found.append(f"commission {c['id']} is reversed but its order is not refunded")
        if c["status"] != "reversed" and c["order_status"] == "refunded":
            found.append(f"commission {c['id']} outlived its order's refund")
        user = c["beneficiary"]
        if c["status"] == "pending":
            expected[f"user:{user}:pending"] += c["amount"]
        elif c["status"] == "settled":
            expected[f"user:{user}:available"] += c["amount"]
    for w in await conn.fetch("SELECT user_id, amount, status FROM withdrawals"):
        if w["status"] in ("reviewing", "paid"):
            expected[f"user:{w['user_id']}:available"] -= w["amount"]
        if w["status"] == "reviewing":
            expected[f"user:{w['user_id']}:withdrawing"] += w["amount"]
    for account in set(expected) | set(balances):
        if balances.get(account, 0) != expected.get(account, 0):
            found.append(f"{account} holds {balances.get(account, 0)} fen; its commissions"
                         f" and withdrawals say {expected.get(account, 0)}")
    found += await _earner_problems(conn)
    found += await referral_problems(conn)
    return found


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
