"""BASELINE, not part of Fission: a group-buy the way typical mall back ends do it.

yudao-mall and CRMEB style: every join is one Postgres transaction that locks the group
row (`SELECT ... FOR UPDATE`), checks status, membership and count, inserts the member,
updates the group (completed when full), and decrements the campaign's stock with a
conditional UPDATE on one campaign row (the contended row) before committing; the reply
is sent after the commit, so it is as durable as Fission's. Run as several processes on
one port (`SO_REUSEPORT`), as such a back end would use every core.

    python -m bench.mall_baseline --dsn URL --secret S --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

import asyncpg
import jwt
from aiohttp import web

from bench.serving import run_forever

SCHEMA = """
DROP TABLE IF EXISTS mall_members, mall_groups, mall_campaigns;
CREATE TABLE mall_campaigns (
    id text PRIMARY KEY, stock bigint NOT NULL CHECK (stock >= 0),
    initial_stock bigint NOT NULL, group_size int NOT NULL, price bigint NOT NULL);
CREATE TABLE mall_groups (
    id bigserial PRIMARY KEY, campaign text NOT NULL REFERENCES mall_campaigns (id),
    leader text NOT NULL, size int NOT NULL, member_count int NOT NULL,
    status text NOT NULL, price bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE mall_members (
    group_id bigint NOT NULL REFERENCES mall_groups (id), user_id text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (group_id, user_id));
"""
POOL_SIZE = 10  # per process, HikariCP's default


async def setup(conn: asyncpg.Connection, campaign: str, size: int, stock: int) -> None:
    """(Re)create the baseline's own `mall_*` tables with one campaign."""
    await conn.execute(SCHEMA)
    await conn.execute("INSERT INTO mall_campaigns VALUES ($1, $2, $2, $3, 6000)",
                       campaign, stock, size)


async def check(conn: asyncpg.Connection, campaign: str) -> dict[str, int]:
    """Over-full groups and stock mismatch (taken stock vs member rows) in the baseline."""
    overfull = await conn.fetchval(
        "SELECT count(*) FROM mall_groups g WHERE (SELECT count(*) FROM mall_members m"
        " WHERE m.group_id = g.id) > g.size")
    row = await conn.fetchrow("SELECT stock, initial_stock FROM mall_campaigns WHERE id = $1",
                              campaign)
    members = await conn.fetchval("SELECT count(*) FROM mall_members")
    taken = int(row["initial_stock"] - row["stock"])
    return {"overfull": int(overfull), "stock_mismatch": abs(taken - int(members)),
            "oversold": max(0, -int(row["stock"])), "members": int(members)}


def _error(code: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": code.replace("_", " ")}},
                             status=status)


def _group(row: Any, members: list[str]) -> dict[str, Any]:
    return {"group": {"id": str(row["id"]), "campaign": row["campaign"],
                      "status": row["status"], "size": row["size"], "members": members,
                      "price": row["price"]}}


class Mall:
    """The two endpoints over one pool."""

    def __init__(self, pool: asyncpg.Pool, secret: str) -> None:
        self.pool = pool
        self.secret = secret

    def user(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        try:
            claims = jwt.decode(token, self.secret, algorithms=["HS256"])
        except jwt.PyJWTError:
            return None
        return str(claims["sub"]) if scheme.lower() == "bearer" else None

    async def open(self, request: web.Request) -> web.Response:
        user = self.user(request)
        if user is None:
            return _error("unauthorized", 401)
        body = await request.json()
        async with self.pool.acquire() as conn, conn.transaction():
            campaign = await conn.fetchrow(
                "UPDATE mall_campaigns SET stock = stock - 1 WHERE id = $1 AND stock > 0"
                " RETURNING id, group_size, price", body.get("campaign"))
            if campaign is None:
                return _error("out_of_stock", 409)
            row = await conn.fetchrow(
                "INSERT INTO mall_groups (campaign, leader, size, member_count, status, price)"
                " VALUES ($1, $2, $3, 1, 'open', $4) RETURNING id, campaign, size, status, price",
                campaign["id"], user, campaign["group_size"], campaign["price"])
            await conn.execute("INSERT INTO mall_members (group_id, user_id) VALUES ($1, $2)",
                               row["id"], user)
        return web.json_response(_group(row, [user]), status=201)

    async def join(self, request: web.Request) -> web.Response:
        user = self.user(request)
        if user is None:
            return _error("unauthorized", 401)
        body = await request.json()
        try:
            group_id = int(body.get("group"))
        except (TypeError, ValueError):
            return _error("invalid_request", 400)
        async with self.pool.acquire() as conn, conn.transaction():
            group = await conn.fetchrow(
                "SELECT id, campaign, size, member_count, status, price FROM mall_groups"
                " WHERE id = $1 FOR UPDATE", group_id)
            if group is None:
                return _error("not_found", 404)
            if group["status"] != "open" or group["member_count"] >= group["size"]:
                return _error("group_full", 409)
            if await conn.fetchval("SELECT 1 FROM mall_members WHERE group_id = $1"
                                   " AND user_id = $2", group_id, user):
                return _error("already_member", 409)
            await conn.execute("INSERT INTO mall_members (group_id, user_id) VALUES ($1, $2)",
                               group_id, user)
            count = group["member_count"] + 1
            status = "completed" if count >= group["size"] else "open"
            row = await conn.fetchrow(
                "UPDATE mall_groups SET member_count = $2, status = $3, updated_at = now()"
                " WHERE id = $1 RETURNING id, campaign, size, status, price",
                group_id, count, status)
            stocked = await conn.fetchval(
                "UPDATE mall_campaigns SET stock = stock - 1 WHERE id = $1 AND stock > 0"
                " RETURNING stock", group["campaign"])
            if stocked is None:
                raise web.HTTPConflict(text=json.dumps({"error": {"code": "out_of_stock"}}))
            members = [r["user_id"] for r in await conn.fetch(
                "SELECT user_id FROM mall_members WHERE group_id = $1 ORDER BY joined_at",
                group_id)]
        return web.json_response(_group(row, members))


async def serve(dsn: str, secret: str, port: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    mall = Mall(pool, secret)
    app = web.Application()
    app.router.add_post("/open", mall.open)
    app.router.add_post("/join", mall.join)
    try:
        # Two processes share the port, as a mall would run its workers on 2 cores.
        await run_forever(app, port, reuse_port=True)
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.dsn, args.secret, args.port))


if __name__ == "__main__":
    main()
