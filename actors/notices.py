"""What the pipeline tells games about the shop's orders (games.core.Method `on`).

A game's method declared `on="order_paid"` (or `"order_refunded"`) is sent, for each
paid (refunded) order, to every campaign of that game running when the order was made:
a lottery grants an extra draw per paid order and takes it back on refund. The pipeline
writes the notice in the transaction that paid or refunded the order, and delivers it to
the campaign's owner after that commits, at least once (`deliver`): the key is the
order's, so an owner answers a repeat as it answered the first, and the game takes each
order once whatever the key's retention.

Each notice carries the order's facts (`facts`), read in the same transaction: its amount
(fen), when it was made (epoch ms), the buyer's direct referrer, the commission each
beneficiary earned on it (user, level, fen) and the regions last recorded for those users
(`user_regions`). A game that ranks sellers (a leaderboard) needs them, and a game can
only know what its commands tell it; the pipeline writes a paid order's notices after
its commissions, so they are there to read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from actors.answers import Answer
from games import jsontext
from games.registry import GAMES
from storage.config import Config

log = logging.getLogger("fission.notices")

PAID = "order_paid"
REFUNDED = "order_refunded"  # refunded whole (by its last piece, or in one)
# A piece of an order refunded, the order not yet whole: a board ranking sales or
# commission takes that much back; a lottery's draw waits for the whole refund.
PARTLY_REFUNDED = "order_partly_refunded"

# Sends commands to their owners; answers in order (actors.client.ShardClient's shape).
Send = Callable[[list[dict[str, Any]]], Awaitable[list[Answer]]]


def listeners(config: Config, event: str, at: datetime) -> list[tuple[str, str]]:
    """(campaign, method) of every campaign running at `at` whose game takes `event`."""
    moment = int(at.timestamp() * 1000)
    found = []
    for campaign in config.campaigns:
        if not campaign.starts_at <= moment < campaign.ends_at:
            continue
        for method in GAMES[campaign.kind].methods:
            if method.on == event:
                found.append((campaign.id, method.name))
    return found


def order_key(order_id: int) -> str:
    """The order as games name it (a notice's param and its idempotency key's root)."""
    return f"o{order_id}"


async def facts(conn: asyncpg.Connection, orders: Sequence[tuple[int, str, int, datetime]]
                ) -> dict[int, dict[str, Any]]:
    """The facts of `orders` (id, buyer, amount, when made), by order id (see above)."""
    ids = [order_id for order_id, _, _, _ in orders]
    buyers = sorted({buyer for _, buyer, _, _ in orders})
    earned: dict[int, list[list[Any]]] = {}
    for r in await conn.fetch(
            "SELECT order_id, level, beneficiary, amount FROM commissions"
            " WHERE order_id = ANY($1::bigint[]) ORDER BY order_id, level", ids):
        earned.setdefault(r["order_id"], []).append([r["beneficiary"], r["level"],
                                                     r["amount"]])
    referrers = {r["user_id"]: r["referrer"] for r in await conn.fetch(
        "SELECT user_id, referrer FROM referrals WHERE user_id = ANY($1::text[])", buyers)}
    users = set(buyers) | set(referrers.values()) | {
        line[0] for lines in earned.values() for line in lines}
    regions = {r["user_id"]: r["region"] for r in await conn.fetch(
        "SELECT user_id, region FROM user_regions WHERE user_id = ANY($1::text[])",
        sorted(users))}
    found = {}
    for order_id, buyer, amount, at in orders:
        lines = earned.get(order_id, [])
        involved = {buyer, referrers.get(buyer), *(line[0] for line in lines)}
        found[order_id] = {
            "amount": amount, "at": int(at.timestamp() * 1000),
            "referrer": referrers.get(buyer), "earned": lines,
            "regions": {u: regions[u] for u in sorted(u for u in involved if u in regions)}}
    return found


async def write(conn: asyncpg.Connection, config: Config, event: str,
                orders: Sequence[tuple[int, str, int, datetime]]) -> int:
    """Notices of `event` for `orders` (id, user, amount in fen, when it was made), with
    their facts, in the caller's transaction; how many. A 0-fen order (a product won in a
    game) is no paid order: it tells nobody."""
    paid = [order for order in orders if order[2] > 0]
    told = [(order, campaign, method) for order in paid
            for campaign, method in listeners(config, event, order[3])]
    if not told:
        return 0
    known = await facts(conn, sorted({order for order, _, _ in told}))
    await conn.executemany(
        "INSERT INTO game_notices (campaign, method, user_id, order_key, facts)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING",
        [(campaign, method, order[1], order_key(order[0]), jsontext.compact(known[order[0]]))
         for order, campaign, method in told])
    return len(told)


async def write_part(conn: asyncpg.Connection, config: Config, order_id: int, user: str,
                     amount: int, at: datetime, piece: int) -> int:
    """Notices of `PARTLY_REFUNDED` for piece `piece` of order `order_id` (of `user`,
    `amount` fen, made `at`), in the caller's transaction; how many.

    Each piece is its own notice (order key `o{id}-{piece}`); its facts are the order's
    (as a paid order's) with `order` (the order's key), `refunded` (fen refunded so far)
    and `reversed` (user -> fen of their commission on it reversed so far): cumulative,
    so a game takes back exactly what refunds took, whatever order pieces arrive in."""
    told = listeners(config, PARTLY_REFUNDED, at)
    if not told or amount <= 0:
        return 0
    known = (await facts(conn, [(order_id, user, amount, at)]))[order_id]
    refunded = await conn.fetchval("SELECT refunded_amount FROM orders WHERE id = $1",
                                   order_id)
    taken = {r["beneficiary"]: r["reversed"] for r in await conn.fetch(
        "SELECT beneficiary, reversed FROM commissions WHERE order_id = $1", order_id)}
    known |= {"order": order_key(order_id), "refunded": refunded, "reversed": taken}
    await conn.executemany(
        "INSERT INTO game_notices (campaign, method, user_id, order_key, facts)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING",
        [(campaign, method, user, f"{order_key(order_id)}-{piece}", jsontext.compact(known))
         for campaign, method in told])
    return len(told)


async def payment(conn: asyncpg.Connection, config: Config, campaign: str, user: str,
                  payment_id: str, outcome: str, amount: int) -> bool:
    """A notice telling `campaign`'s game the provider's word on one of its payments
    (its method `on="payment"`): `outcome` "paid" (with the `amount` taken) or "closed";
    in the caller's transaction, once per (payment, outcome). Whether the game takes
    payments at all (False: nothing written)."""
    found = config.campaign(campaign)
    method = None if found is None else next(
        (m.name for m in GAMES[found.kind].methods if m.on == "payment"), None)
    if method is None:
        return False
    params = {"payment": payment_id, "outcome": outcome, "amount": amount}
    await conn.execute(
        "INSERT INTO game_notices (campaign, method, user_id, order_key, params)"
        " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING",
        campaign, method, user, f"pay:{payment_id}:{outcome}", jsontext.compact(params))
    return True


def _retry(reply: Answer) -> bool:
    """Whether an owner's answer asks to be sent again: `unavailable` (starting, or not
    reachable); anything else, a refusal included, is the game's word on the notice."""
    try:
        answer = json.loads(reply)
    except ValueError:
        return True
    error = answer.get("error") if isinstance(answer, dict) else None
    return isinstance(error, dict) and error.get("code") == "unavailable"


async def deliver(pool: asyncpg.Pool, send: Send, limit: int = 500) -> int:
    """Send the oldest undelivered notices to their owners; how many were taken (an
    owner that is starting or unreachable answers `unavailable`: those wait for the next
    round)."""
    rows = await pool.fetch(
        "SELECT id, campaign, method, user_id, order_key, facts, params FROM game_notices"
        " WHERE sent_at IS NULL ORDER BY id LIMIT $1", limit)
    if not rows:
        return 0
    commands = [{"method": r["method"], "campaign": r["campaign"], "user": r["user_id"],
                 "key": f"{r['method']}:{r['order_key']}",
                 # A notice about a payment carries its own params (see `payment`).
                 "params": json.loads(r["params"]) if r["params"] is not None else {
                     "order": r["order_key"], **(
                         {} if r["facts"] is None else {"facts": json.loads(r["facts"])})}}
                for r in rows]
    replies = await send(commands)
    taken = [r["id"] for r, reply in zip(rows, replies, strict=True) if not _retry(reply)]
    if len(taken) < len(rows):
        log.warning("%d game notices not taken yet; retrying", len(rows) - len(taken))
    if taken:
        await pool.execute("UPDATE game_notices SET sent_at = now() WHERE id = ANY($1)",
                           taken)
    return len(taken)
