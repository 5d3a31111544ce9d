"""Read queries the gateway may run directly (never writes)."""

from __future__ import annotations

from typing import Any

import asyncpg

from games.campaign import iso


def _group(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "campaign": row["campaign"],
        "status": row["status"],
        "size": row["size"],
        "joined": len(row["members"]),
        "members": list(row["members"]),
        "virtual_members": row["virtual_members"],
        "price": row["price"],
        "created_at": iso(int(row["created_at"].timestamp() * 1000)),
        "expires_at": iso(int(row["expires_at"].timestamp() * 1000)),
        "seq": row["version"],
    }


async def get_group(pool: asyncpg.Pool, campaign: str, group: str) -> dict[str, Any] | None:
    """The contract's group object from the read model, or None."""
    row = await pool.fetchrow("SELECT * FROM groups WHERE campaign = $1 AND id = $2",
                              campaign, group)
    return None if row is None else _group(row)


async def list_open_groups(pool: asyncpg.Pool, campaign: str, limit: int) -> list[dict[str, Any]]:
    """Open groups of a campaign, those closest to their deadline first (to join one)."""
    rows = await pool.fetch(
        "SELECT * FROM groups WHERE campaign = $1 AND status = 'open'"
        " ORDER BY expires_at LIMIT $2", campaign, limit,
    )
    return [_group(r) for r in rows]


async def list_orders(pool: asyncpg.Pool, user: str, limit: int) -> list[dict[str, Any]]:
    """A user's orders, newest first."""
    rows = await pool.fetch(
        "SELECT id, campaign, group_id, sku, amount, status, payment_ref, created_at"
        " FROM orders WHERE user_id = $1 ORDER BY id DESC LIMIT $2", user, limit,
    )
    return [
        {"id": r["id"], "campaign": r["campaign"], "group": r["group_id"], "sku": r["sku"],
         "amount": r["amount"], "status": r["status"], "payment_ref": r["payment_ref"],
         "created_at": iso(int(r["created_at"].timestamp() * 1000))}
        for r in rows
    ]


async def outbox_lag(pool: asyncpg.Pool) -> tuple[int, float]:
    """Pending outbox rows and the age in seconds of the oldest one."""
    row = await pool.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age"
        " FROM outbox WHERE processed_at IS NULL"
    )
    return int(row["n"]), float(row["age"])
