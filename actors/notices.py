"""What the pipeline tells games about the shop's orders (games.core.Method `on`).

A game's method declared `on="order_paid"` (or `"order_refunded"`) is sent, for each
paid (refunded) order, to every campaign of that game running when the order was made:
a lottery grants an extra draw per paid order and takes it back on refund. The pipeline
writes the notice in the transaction that paid or refunded the order, and delivers it to
the campaign's owner after that commits, at least once (`deliver`): the key is the
order's, so an owner answers a repeat as it answered the first, and the game takes each
order once whatever the key's retention.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from actors.answers import Answer
from games.registry import GAMES
from storage.config import Config

log = logging.getLogger("fission.notices")

PAID = "order_paid"
REFUNDED = "order_refunded"

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


async def write(conn: asyncpg.Connection, config: Config, event: str,
                orders: Sequence[tuple[int, str, int, datetime]]) -> int:
    """Notices of `event` for `orders` (id, user, amount in fen, when it was made), in the
    caller's transaction; how many. A 0-fen order (a product won in a game) is no paid
    order: it tells nobody."""
    rows = [(campaign, method, user, order_key(order_id))
            for order_id, user, amount, at in orders if amount > 0
            for campaign, method in listeners(config, event, at)]
    if rows:
        await conn.executemany(
            "INSERT INTO game_notices (campaign, method, user_id, order_key)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", rows)
    return len(rows)


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
        "SELECT id, campaign, method, user_id, order_key FROM game_notices"
        " WHERE sent_at IS NULL ORDER BY id LIMIT $1", limit)
    if not rows:
        return 0
    commands = [{"method": r["method"], "campaign": r["campaign"], "user": r["user_id"],
                 "key": f"{r['method']}:{r['order_key']}",
                 "params": {"order": r["order_key"]}} for r in rows]
    replies = await send(commands)
    taken = [r["id"] for r, reply in zip(rows, replies, strict=True) if not _retry(reply)]
    if len(taken) < len(rows):
        log.warning("%d game notices not taken yet; retrying", len(rows) - len(taken))
    if taken:
        await pool.execute("UPDATE game_notices SET sent_at = now() WHERE id = ANY($1)",
                           taken)
    return len(taken)
