"""After the load: invariants checked in Postgres, and the deal → order pipeline's pace."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench import stock
from bench.stack import ALL_CAMPAIGNS, LOTTERY_ZONE, STORM_CAMPAIGN


async def invariants(conn: asyncpg.Connection, acked: int, drain_timeout: float = 120.0
                     ) -> dict[str, Any]:
    """Over-full groups, stock exactness, acknowledged commands missing from Postgres, and
    the paid members' orders and payments (see `paid_orders`).

    `acked` is the number of opens and joins clients saw acknowledged as successful over
    the whole run; each one must be an event in Postgres (an ack is a promise).
    """
    overfull = await conn.fetchval(
        "SELECT count(*) FROM groups WHERE cardinality(members) > size")
    mismatch, taken_total = 0, 0
    for campaign in ALL_CAMPAIGNS:
        members = await conn.fetchval(
            "SELECT coalesce(sum(cardinality(members)), 0) FROM groups"
            " WHERE campaign = $1 AND status <> 'failed'", campaign)
        taken = await seats_taken(conn, [campaign])
        mismatch += abs(int(members) - int(taken))
        taken_total += int(taken)
    unbalanced = await conn.fetchval(
        "SELECT count(*) FROM (SELECT txn FROM ledger_entries GROUP BY txn"
        " HAVING sum(amount) <> 0) AS t")
    # Orders are the pipeline's, after the commit that took the money: wait for it.
    drain = await wait_drained(conn, drain_timeout)
    return {"overfull": int(overfull), "oversold": mismatch,
            "committed": taken_total, "acked": acked,
            "lost_acks": max(0, acked - taken_total), "ledger_unbalanced": int(unbalanced),
            **await paid_orders(conn, ALL_CAMPAIGNS), "orders_drain_seconds": drain}


async def seats_taken(conn: asyncpg.Connection, campaigns: Sequence[str]) -> int:
    """Members the group-buy `campaigns`' events seated: each joiner, and each leader of
    a group opened without payment (a leader who pays is seated by member_joined too)."""
    return int(await conn.fetchval(
        "SELECT count(*) FROM events WHERE stream = ANY($1::text[]) AND (type = 'member_joined'"
        " OR type = 'group_opened' AND (coalesce(data->>'payment', '') = ''"
        " OR coalesce((data->>'paid')::boolean, false)))",
        [f"groupbuy:{c}" for c in campaigns]))


async def paid_orders(conn: asyncpg.Connection, campaigns: tuple[str, ...]
                      ) -> dict[str, int]:
    """Payment in the loop of the group-buy `campaigns` (each takes payment at the join):
    once the outbox drained, every paid member has exactly one order and every order is a
    paid member's, and each order has its one `payments` row of kind 'payment'.

    paid_members: members in the `groups` read model (paid members only, whatever became
    of their group); members_without_order: members with no order of their group (an
    order's line is its payment, so members and orders meet on the group and the user);
    orders_twice: members with more than one; orders_without_member: orders of no such
    member; payments_mismatch: |payments of kind 'payment' − orders|.
    """
    row = await conn.fetchrow(
        """
        WITH m AS (
            SELECT g.campaign, g.id AS instance, u AS user_id
            FROM groups g, unnest(g.members) AS u WHERE g.campaign = ANY($1::text[])),
        o AS (
            SELECT campaign, instance, user_id, count(*) AS n FROM orders
            WHERE campaign = ANY($1::text[]) GROUP BY 1, 2, 3)
        SELECT
          (SELECT count(*) FROM m) AS paid_members,
          (SELECT coalesce(sum(n), 0) FROM o) AS orders,
          (SELECT count(*) FROM m WHERE NOT EXISTS (
              SELECT 1 FROM o WHERE o.campaign = m.campaign AND o.instance = m.instance
                AND o.user_id = m.user_id)) AS members_without_order,
          (SELECT count(*) FROM o WHERE n > 1) AS orders_twice,
          (SELECT count(*) FROM o WHERE NOT EXISTS (
              SELECT 1 FROM m WHERE m.campaign = o.campaign AND m.instance = o.instance
                AND m.user_id = o.user_id)) AS orders_without_member,
          (SELECT count(*) FROM payments
           WHERE campaign = ANY($1::text[]) AND kind = 'payment') AS payments
        """, list(campaigns))
    found = {k: int(v) for k, v in row.items()}
    found["payments_mismatch"] = abs(found["payments"] - found["orders"])
    return found


async def wait_drained(conn: asyncpg.Connection, timeout: float) -> float:
    """Poll until the outbox has nothing unprocessed; seconds waited (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if not await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL"):
            break
        await asyncio.sleep(0.25)  # the pipeline actor works in another process
    return time.monotonic() - started


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def pipeline(conn: asyncpg.Connection, since: float, until: float,
                   campaigns: tuple[str, ...] = (STORM_CAMPAIGN,)) -> dict[str, Any]:
    """Deals committed in [since, until] (epoch s) turned into orders and commissions:
    rates and lag.

    Lag is the outbox row's `processed_at` (Postgres' clock when the pipeline's work on it
    was done, just before its commit: orders, payments, commissions and ledger lines are
    one transaction) minus its `created_at` (the start of the statement that committed
    the deal), on the same clock.
    """
    window = (datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC))
    rows = await conn.fetch(
        """
        SELECT ob.created_at AS dealt, ob.processed_at AS ledgered,
               count(DISTINCT o.id) AS orders, count(c.id) AS commissions,
               count(DISTINCT o.id) FILTER (WHERE r.user_id IS NOT NULL AND NOT EXISTS (
                   SELECT 1 FROM commissions e WHERE e.order_id = o.id)) AS unearned
        FROM outbox ob
        -- The deal's instances, one row each, so that orders join on an equality the
        -- (campaign, instance, line) index serves: an IN (subquery) in the join's
        -- condition made it a scan of every order per deal (minutes at 35k deals).
        LEFT JOIN LATERAL (
            SELECT DISTINCT l->>'instance' AS instance
            FROM jsonb_array_elements(ob.data->'lines') AS l) li ON true
        LEFT JOIN orders o
          ON o.campaign = ob.data->>'campaign' AND o.instance = li.instance
        LEFT JOIN commissions c ON c.order_id = o.id
        LEFT JOIN referrals r ON r.user_id = o.user_id
        WHERE ob.type = 'deal' AND ob.data->>'campaign' = ANY($1::text[])
          AND ob.created_at BETWEEN $2 AND $3
        GROUP BY ob.id, ob.created_at, ob.processed_at
        """, list(campaigns), *window)
    orders = sum(int(r["orders"]) for r in rows)
    postings = sum(int(r["commissions"]) for r in rows)
    lags = [(r["ledgered"] - r["dealt"]).total_seconds() * 1000 for r in rows
            if r["orders"] and r["ledgered"] is not None]
    seconds = max(1e-9, until - since)
    return {"deals": len(rows), "deals_without_orders": sum(1 for r in rows if not r["orders"]),
            "orders": int(orders), "seconds": seconds,
            "deals_per_s": len(rows) / seconds, "orders_per_s": int(orders) / seconds,
            "commissions": postings, "commissions_per_s": postings / seconds,
            "orders_without_commission": sum(int(r["unearned"]) for r in rows),
            "lag_p50_ms": _pct(lags, 0.50), "lag_p99_ms": _pct(lags, 0.99),
            "lag_max_ms": max(lags) if lags else float("nan")}


async def committed_at(conn: asyncpg.Connection, campaign: str, group: str) -> dict[int, float]:
    """A group's events by their seq on its topic: when their commit statement began
    (Postgres `now()`, epoch ms), just before the commit itself."""
    rows = await conn.fetch(
        "SELECT (data->>'seq')::int AS seq, created_at FROM events"
        " WHERE stream = $1 AND data->>'group' = $2", f"groupbuy:{campaign}", group)
    return {int(r["seq"]): r["created_at"].timestamp() * 1000 for r in rows}


async def load_acked(conn: asyncpg.Connection, table: str,
                     acked: list[tuple[str, str, int]]) -> None:
    """A temporary table `table` (bargain, helper, cut) of the helps clients saw
    acknowledged, for the bargain checks to join against."""
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.execute(f"CREATE TEMP TABLE {table} (bargain text, helper text, cut bigint)")
    await conn.copy_records_to_table(table, records=acked)
    await conn.execute(f"ANALYZE {table}")


async def bargains(conn: asyncpg.Connection, campaign: str, acked: str) -> dict[str, int]:
    """Fission's bargain invariants in Postgres, from its events and its read model;
    `acked` names a table of the helps clients saw acknowledged (bargain, helper, cut).

    below_floor: `bargain_helped` events whose price is under the bargain's floor (or
    whose cut is under 1 fen), plus read-model rows priced under it; price_mismatch:
    bargains whose price is not the list price less the first cut and the sum of their
    helps' cuts, in the events or in the read model's helper list, or whose helper list
    is not their events'; helped_twice: a helper's helps of one bargain beyond the first
    (events or read model); floor_missed: bargains at their floor with another price or
    another number of helps than it takes; lost_acks: acknowledged helps with no
    `bargain_helped` event of the same bargain, helper and cut.
    """
    stream = f"bargain:{campaign}"
    row = await conn.fetchrow(
        """
        WITH helped AS (
            SELECT data->>'bargain' AS id, data->>'helper' AS helper,
                   (data->>'cut')::bigint AS cut, (data->>'price')::bigint AS price
            FROM events WHERE stream = $1 AND type = 'bargain_helped'),
        started AS (
            SELECT data->>'bargain' AS id, (data->>'price')::bigint AS price
            FROM events WHERE stream = $1 AND type = 'bargain_started'),
        per AS (
            SELECT id, sum(cut) AS cuts, count(*) AS helps, count(DISTINCT helper) AS helpers
            FROM helped GROUP BY id),
        model AS (
            SELECT b.id, coalesce(sum((h->>1)::bigint), 0) AS cuts, count(h) AS helps,
                   count(DISTINCT h->>0) AS helpers
            FROM bargains b LEFT JOIN LATERAL jsonb_array_elements(b.helpers) AS h ON true
            WHERE b.campaign = $2 GROUP BY b.id)
        SELECT
          (SELECT count(*) FROM helped h JOIN bargains b ON b.campaign = $2 AND b.id = h.id
           WHERE h.price < b.floor_price OR h.cut < 1)
            + (SELECT count(*) FROM bargains WHERE campaign = $2 AND price < floor_price)
            AS below_floor,
          (SELECT count(*) FROM bargains b JOIN started s ON s.id = b.id
           LEFT JOIN per p ON p.id = b.id JOIN model m ON m.id = b.id
           WHERE b.campaign = $2 AND (b.price <> s.price - coalesce(p.cuts, 0)
                                      OR b.price <> s.price - m.cuts
                                      OR m.helps <> coalesce(p.helps, 0)))
            + (SELECT count(*) FROM bargains b WHERE b.campaign = $2
               AND NOT EXISTS (SELECT 1 FROM started s WHERE s.id = b.id)) AS price_mismatch,
          (SELECT coalesce(sum(helps - helpers), 0) FROM per)
            + (SELECT coalesce(sum(helps - helpers), 0) FROM model) AS helped_twice,
          (SELECT count(*) FROM bargains b LEFT JOIN per p ON p.id = b.id
           WHERE b.campaign = $2 AND b.status = 'floor_reached'
             AND (b.price <> b.floor_price OR coalesce(p.helps, 0) <> b.helpers_to_floor))
            AS floor_missed,
          (SELECT count(*) FROM bargains WHERE campaign = $2) AS bargains,
          (SELECT count(*) FROM helped) AS helps
        """, stream, campaign)
    lost = await conn.fetchval(
        f"""
        SELECT count(*) FROM {acked} a LEFT JOIN (
            SELECT data->>'bargain' AS id, data->>'helper' AS helper,
                   (data->>'cut')::bigint AS cut
            FROM events WHERE stream = $1 AND type = 'bargain_helped') e
          ON e.id = a.bargain AND e.helper = a.helper AND e.cut = a.cut
        WHERE e.id IS NULL
        """, stream)
    acked_n = await conn.fetchval(f"SELECT count(*) FROM {acked}")
    found = {k: int(v) for k, v in row.items()}
    return {**found, "acked": int(acked_n), "lost_acks": int(lost)}


async def load_draws(conn: asyncpg.Connection, table: str,
                     acked: list[tuple[str, str, str]]) -> None:
    """A temporary table `table` (draw, user_id, prize) of the draws clients saw
    acknowledged, for the lottery checks to join against."""
    await conn.execute(f"DROP TABLE IF EXISTS {table}")
    await conn.execute(f"CREATE TEMP TABLE {table} (draw text, user_id text, prize text)")
    await conn.copy_records_to_table(table, records=acked)
    await conn.execute(f"ANALYZE {table}")


async def lotteries(conn: asyncpg.Connection, campaign: str, acked: str,
                    free_draws_per_day: int) -> dict[str, Any]:
    """Fission's lottery invariants in Postgres, from its events and its read model;
    `acked` names a table of the draws clients saw acknowledged (draw, user_id, prize).

    oversold: `drawn` events of a prize beyond its stock (from the campaign's row in
    `lotteries`), plus prizes whose `stock_left` there is below 0; stock_mismatch:
    |stock - stock_left - drawn events of it| summed over the prizes with stock, plus
    |the row's `draws` - drawn events|; over_limit: (user, local day) with more free
    draws than the daily limit (the bench grants no earned draws); lost_acks:
    acknowledged draws with no `drawn` event of the same draw id, user and prize. `won`:
    drawn events per prize; `stock`: each prize's stock (None: unlimited).
    """
    stream = f"lottery:{campaign}"
    row = await conn.fetchrow("SELECT prizes, draws FROM lotteries WHERE campaign = $1",
                              campaign)
    prizes = row["prizes"] if row is not None else []
    if isinstance(prizes, str):  # jsonb without a codec arrives as text
        prizes = json.loads(prizes)
    won = {r["prize"]: int(r["n"]) for r in await conn.fetch(
        "SELECT data->>'prize' AS prize, count(*) AS n FROM events"
        " WHERE stream = $1 AND type = 'drawn' GROUP BY 1", stream)}
    drawn = sum(won.values())
    oversold, mismatch = stock.faults((p["stock"], p["stock_left"], won.get(p["id"], 0))
                                      for p in prizes if p.get("stock") is not None)
    mismatch += abs((row["draws"] if row is not None else 0) - drawn)
    over_limit = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM events WHERE stream = $1 AND type = 'drawn'"
        " AND NOT (data->>'earned')::bool"
        " GROUP BY data->>'user', (to_timestamp((data->>'at')::bigint / 1000.0)"
        "   AT TIME ZONE $2)::date"
        " HAVING count(*) > $3) AS t", stream, LOTTERY_ZONE, free_draws_per_day)
    lost = await conn.fetchval(
        f"""
        SELECT count(*) FROM {acked} a LEFT JOIN (
            SELECT data->>'draw' AS draw, data->>'user' AS user_id, data->>'prize' AS prize
            FROM events WHERE stream = $1 AND type = 'drawn') e
          ON e.draw = a.draw AND e.user_id = a.user_id AND e.prize = a.prize
        WHERE e.draw IS NULL
        """, stream)
    acked_n = await conn.fetchval(f"SELECT count(*) FROM {acked}")
    return {"oversold": int(oversold), "stock_mismatch": int(mismatch),
            "over_limit": int(over_limit), "lost_acks": int(lost), "acked": int(acked_n),
            "draws": drawn, "won": won, "stock": {p["id"]: p.get("stock") for p in prizes},
            "read_model": row is not None}
