"""BASELINE, not part of Fission: a group-buy and a bargain the way typical mall back
ends do them.

yudao-mall and CRMEB style: every join is one Postgres transaction that locks the group
row (`SELECT ... FOR UPDATE`), checks status, membership and count, inserts the member
and its paid order (the money is taken at the join; an open inserts the leader's too),
updates the group (completed when full), and decrements the campaign's stock with a
conditional UPDATE on one campaign row (the contended row) before committing; the reply
is sent after the commit, so it is as durable as Fission's. Every bargain help is one
transaction too: lock the bargain row, check it is open and the helper has not helped
(a helpers table keyed by bargain and user), draw a random cut (never below the floor;
the helper who reaches it takes the remainder), insert the help, update the price, read
the helpers back for the answer, commit. Every lottery draw is one transaction as well:
lock the campaign's prize rows (`SELECT ... FOR UPDATE`, so every draw of a campaign waits
for the one before it to commit), count the user's draw of the day on their row (refused
`no_draws_left` past the daily limit), pick a prize by weight among those still in stock,
decrement its stock, insert the draw, commit. Run as several processes on one port
(`SO_REUSEPORT`), as such a back end would use every core.

    python -m bench.mall_baseline --dsn URL --secret S --port P
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import jwt
from aiohttp import web

from bench import stock
from bench.serving import run_forever

SCHEMA = """
DROP TABLE IF EXISTS mall_orders, mall_members, mall_groups, mall_campaigns;
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
-- The order a join pays for, made in the join's transaction (the money is taken at the
-- join, as yudao's and CRMEB's combination orders are), so a member always has one.
CREATE TABLE mall_orders (
    id bigserial PRIMARY KEY, group_id bigint NOT NULL REFERENCES mall_groups (id),
    user_id text NOT NULL, amount bigint NOT NULL, status text NOT NULL DEFAULT 'paid',
    created_at timestamptz NOT NULL DEFAULT now());
-- A user's orders, as a mall's "my orders" page reads them: an index each insert keeps.
CREATE INDEX mall_orders_user ON mall_orders (user_id);
"""
BARGAIN_SCHEMA = """
DROP TABLE IF EXISTS mall_bargain_helps, mall_bargains, mall_bargain_campaigns;
CREATE TABLE mall_bargain_campaigns (
    id text PRIMARY KEY, list_price bigint NOT NULL, floor_price bigint NOT NULL,
    helpers_to_floor int NOT NULL, time_limit_seconds int NOT NULL);
CREATE TABLE mall_bargains (
    id bigserial PRIMARY KEY, campaign text NOT NULL REFERENCES mall_bargain_campaigns (id),
    initiator text NOT NULL, list_price bigint NOT NULL, floor_price bigint NOT NULL,
    price bigint NOT NULL, helpers_to_floor int NOT NULL, helped int NOT NULL DEFAULT 0,
    status text NOT NULL, expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE mall_bargain_helps (
    bargain_id bigint NOT NULL REFERENCES mall_bargains (id), user_id text NOT NULL,
    n int NOT NULL, cut bigint NOT NULL, helped_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bargain_id, user_id));
"""
LOTTERY_SCHEMA = """
DROP TABLE IF EXISTS mall_lottery_draws, mall_lottery_users, mall_lottery_prizes,
    mall_lottery_campaigns;
CREATE TABLE mall_lottery_campaigns (
    id text PRIMARY KEY, free_draws_per_day int NOT NULL, time_zone text NOT NULL,
    reset_minutes int NOT NULL DEFAULT 0);
CREATE TABLE mall_lottery_prizes (
    campaign text NOT NULL REFERENCES mall_lottery_campaigns (id), id text NOT NULL,
    position int NOT NULL, title text NOT NULL, kind text NOT NULL, weight int NOT NULL,
    stock bigint CHECK (stock >= 0), initial_stock bigint,  -- NULL: unlimited (thanks)
    PRIMARY KEY (campaign, id));
CREATE TABLE mall_lottery_users (
    campaign text NOT NULL REFERENCES mall_lottery_campaigns (id), user_id text NOT NULL,
    draws bigint NOT NULL, day date NOT NULL, used int NOT NULL,
    PRIMARY KEY (campaign, user_id));
CREATE TABLE mall_lottery_draws (
    id bigserial PRIMARY KEY, campaign text NOT NULL REFERENCES mall_lottery_campaigns (id),
    user_id text NOT NULL, n bigint NOT NULL, prize text NOT NULL, day date NOT NULL,
    drawn_at timestamptz NOT NULL DEFAULT now());
-- A user's draws, as a mall's "my prizes" page reads them: an index each insert keeps.
CREATE INDEX mall_lottery_draws_user ON mall_lottery_draws (campaign, user_id);
"""
POOL_SIZE = 10  # per process, HikariCP's default


async def setup(conn: asyncpg.Connection, campaign: str, size: int, stock: int) -> None:
    """(Re)create the baseline's own `mall_*` tables with one campaign."""
    await conn.execute(SCHEMA)
    await conn.execute("INSERT INTO mall_campaigns VALUES ($1, $2, $2, $3, 6000)",
                       campaign, stock, size)


async def check(conn: asyncpg.Connection, campaign: str) -> dict[str, int]:
    """Over-full groups, stock mismatch (taken stock vs member rows) and orders mismatch
    (members without exactly one paid order of their group, plus orders of no member)
    in the baseline."""
    overfull = await conn.fetchval(
        "SELECT count(*) FROM mall_groups g WHERE (SELECT count(*) FROM mall_members m"
        " WHERE m.group_id = g.id) > g.size")
    row = await conn.fetchrow("SELECT stock, initial_stock FROM mall_campaigns WHERE id = $1",
                              campaign)
    members = await conn.fetchval("SELECT count(*) FROM mall_members")
    taken = int(row["initial_stock"] - row["stock"])
    orders_mismatch = await conn.fetchval(
        "SELECT count(*) FROM mall_members m FULL JOIN (SELECT group_id, user_id,"
        " count(*) AS n FROM mall_orders WHERE status = 'paid' GROUP BY 1, 2) o"
        " ON o.group_id = m.group_id AND o.user_id = m.user_id"
        " WHERE m.user_id IS NULL OR o.user_id IS NULL OR o.n <> 1")
    orders = await conn.fetchval("SELECT count(*) FROM mall_orders")
    return {"overfull": int(overfull), "stock_mismatch": abs(taken - int(members)),
            "oversold": max(0, -int(row["stock"])), "members": int(members),
            "orders": int(orders), "orders_mismatch": int(orders_mismatch)}


async def setup_bargain(conn: asyncpg.Connection, campaign: str, list_price: int,
                        floor_price: int, helpers_to_floor: int) -> None:
    """(Re)create the baseline's own `mall_bargain*` tables with one bargain campaign."""
    await conn.execute(BARGAIN_SCHEMA)
    await conn.execute("INSERT INTO mall_bargain_campaigns VALUES ($1, $2, $3, $4, 3600)",
                       campaign, list_price, floor_price, helpers_to_floor)


async def check_bargains(conn: asyncpg.Connection, campaign: str, acked: str
                         ) -> dict[str, int]:
    """The bargain invariants in the baseline's tables; `acked` names a table of the helps
    clients saw acknowledged (bargain, helper, cut).

    below_floor: helps after which the price (the list price less the cuts so far, in
    helper order) was under the floor, plus bargains priced under it; price_mismatch:
    bargains whose price is not the list price less the sum of their cuts; helped_twice:
    (bargain, helper) pairs with more than one help; floor_missed: bargains at their
    floor whose price is not the floor, or with another number of helps than it takes;
    lost_acks: acknowledged helps not in the helpers table with the same cut.
    """
    row = await conn.fetchrow(
        """
        WITH helps AS (
            SELECT h.bargain_id, h.user_id, h.cut, b.list_price, b.floor_price,
                   b.list_price - sum(h.cut) OVER (PARTITION BY h.bargain_id ORDER BY h.n)
                       AS price_after
            FROM mall_bargain_helps h JOIN mall_bargains b ON b.id = h.bargain_id
            WHERE b.campaign = $1),
        per AS (
            SELECT bargain_id, sum(cut) AS cuts, count(*) AS helps,
                   count(DISTINCT user_id) AS helpers
            FROM helps GROUP BY bargain_id)
        SELECT
          (SELECT count(*) FROM helps WHERE price_after < floor_price OR cut < 1)
            + (SELECT count(*) FROM mall_bargains WHERE campaign = $1
               AND price < floor_price) AS below_floor,
          (SELECT count(*) FROM mall_bargains b LEFT JOIN per p ON p.bargain_id = b.id
           WHERE b.campaign = $1 AND b.price <> b.list_price - coalesce(p.cuts, 0))
            AS price_mismatch,
          (SELECT coalesce(sum(helps - helpers), 0) FROM per) AS helped_twice,
          (SELECT count(*) FROM mall_bargains b LEFT JOIN per p ON p.bargain_id = b.id
           WHERE b.campaign = $1 AND b.status = 'floor_reached'
             AND (b.price <> b.floor_price OR coalesce(p.helps, 0) <> b.helpers_to_floor))
            AS floor_missed,
          (SELECT count(*) FROM mall_bargains WHERE campaign = $1) AS bargains,
          (SELECT count(*) FROM helps) AS helps
        """, campaign)
    lost = await conn.fetchval(
        f"SELECT count(*) FROM {acked} a LEFT JOIN mall_bargain_helps h"
        " ON h.bargain_id::text = a.bargain AND h.user_id = a.helper AND h.cut = a.cut"
        " WHERE h.bargain_id IS NULL")
    acked_n = await conn.fetchval(f"SELECT count(*) FROM {acked}")
    found = {k: int(v) for k, v in row.items()}
    return {**found, "acked": int(acked_n), "lost_acks": int(lost)}


async def setup_lottery(conn: asyncpg.Connection, campaign: str, free_draws_per_day: int,
                        prizes: Sequence[Mapping[str, Any]], time_zone: str) -> None:
    """(Re)create the baseline's own `mall_lottery*` tables with one lottery campaign and
    its prize table (Fission's config rows: id, title, kind, weight, stock; thanks without
    stock, so unlimited)."""
    await conn.execute(LOTTERY_SCHEMA)
    await conn.execute("INSERT INTO mall_lottery_campaigns (id, free_draws_per_day, time_zone)"
                       " VALUES ($1, $2, $3)",
                       campaign, free_draws_per_day, time_zone)
    await conn.executemany(
        "INSERT INTO mall_lottery_prizes VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        [(campaign, p["id"], n, p["title"], p["kind"], p["weight"], p.get("stock"))
         for n, p in enumerate(prizes)])


async def check_lottery(conn: asyncpg.Connection, campaign: str, acked: str
                        ) -> dict[str, Any]:
    """The lottery invariants in the baseline's tables; `acked` names a table of the draws
    clients saw acknowledged (draw, user, prize).

    oversold: prizes whose stock went below 0 plus the draws of a prize beyond its initial
    stock; stock_mismatch: |initial stock - stock - draws of it| summed over the prizes
    with stock; over_limit: (user, day) with more draws than the daily limit; lost_acks:
    acknowledged draws not in the draws table with the same user and prize. `won`: draws
    per prize, `stock`: each prize's initial stock (None: unlimited)."""
    prizes = await conn.fetch(
        "SELECT id, stock, initial_stock FROM mall_lottery_prizes WHERE campaign = $1"
        " ORDER BY position", campaign)
    won = {r["prize"]: int(r["n"]) for r in await conn.fetch(
        "SELECT prize, count(*) AS n FROM mall_lottery_draws WHERE campaign = $1"
        " GROUP BY prize", campaign)}
    oversold, mismatch = stock.faults((p["initial_stock"], p["stock"], won.get(p["id"], 0))
                                      for p in prizes if p["initial_stock"] is not None)
    over_limit = await conn.fetchval(
        "SELECT count(*) FROM (SELECT 1 FROM mall_lottery_draws d"
        " JOIN mall_lottery_campaigns c ON c.id = d.campaign WHERE d.campaign = $1"
        " GROUP BY d.user_id, d.day, c.free_draws_per_day"
        " HAVING count(*) > c.free_draws_per_day) AS t", campaign)
    lost = await conn.fetchval(
        f"SELECT count(*) FROM {acked} a LEFT JOIN mall_lottery_draws d"
        " ON d.id::text = a.draw AND d.user_id = a.user_id AND d.prize = a.prize"
        " AND d.campaign = $1 WHERE d.id IS NULL", campaign)
    acked_n = await conn.fetchval(f"SELECT count(*) FROM {acked}")
    return {"oversold": int(oversold), "stock_mismatch": int(mismatch),
            "over_limit": int(over_limit), "lost_acks": int(lost), "acked": int(acked_n),
            "draws": sum(won.values()), "won": won,
            "stock": {p["id"]: p["initial_stock"] for p in prizes}}


def pick_prize(slots: Sequence[tuple[int, int | None]], roll: float) -> int:
    """The index of the prize a draw wins: `slots` are the prize table's (weight, stock
    left; None for unlimited) in order, `roll` uniform in [0, 1). Prizes out of stock
    or of weight 0 are left out and the others keep their relative weights (the weight of
    a prize that ran out is shared by the rest, as a mall's `in stock` filter does;
    Fission moves it to thanks). ValueError when nothing can be won."""
    open_slots = [(n, weight) for n, (weight, stock) in enumerate(slots)
                  if weight > 0 and (stock is None or stock > 0)]
    if not open_slots:
        raise ValueError("no prize is in stock")
    point = roll * sum(weight for _, weight in open_slots)
    for n, weight in open_slots:
        if point < weight:
            return n
        point -= weight
    return open_slots[-1][0]  # a roll within rounding of 1.0


def draw_cut(remaining: int, left: int) -> int:
    """A helper's cut when `remaining` fen are left to the floor and `left` helpers (this
    one included) are still needed: the last takes the remainder; before it, 1 fen up to
    twice the fair share, leaving at least 1 fen for each helper after it (the rule
    Fission's bargain uses, drawn from the process's random stream)."""
    if left <= 1:
        return remaining
    most = remaining - (left - 1)
    return random.randint(1, max(1, min(most, 2 * remaining // left)))


def _error(code: str, status: int) -> web.Response:
    return web.json_response({"error": {"code": code, "message": code.replace("_", " ")}},
                             status=status)


def _group(row: Any, members: list[str]) -> dict[str, Any]:
    return {"group": {"id": str(row["id"]), "campaign": row["campaign"],
                      "status": row["status"], "size": row["size"], "members": members,
                      "price": row["price"]}}


def _bargain(row: Any, helpers: list[Any]) -> dict[str, Any]:
    """The contract's `B`, from a `mall_bargains` row and its helps in order."""
    return {"id": str(row["id"]), "campaign": row["campaign"], "status": row["status"],
            "initiator": row["initiator"], "list_price": row["list_price"],
            "floor_price": row["floor_price"], "price": row["price"],
            "helpers": [{"user": h["user_id"], "cut": h["cut"],
                         "at": h["helped_at"].isoformat()} for h in helpers],
            "helpers_to_floor": row["helpers_to_floor"],
            "helpers_left": row["helpers_to_floor"] - row["helped"],
            "expires_at": row["expires_at"].isoformat()}


def _draw(row: Any, campaign: str, user: str, n: int, prize: Any) -> dict[str, Any]:
    """The contract's draw `D`, from the inserted `mall_lottery_draws` row."""
    return {"id": str(row["id"]), "campaign": campaign, "user": user, "n": n,
            "prize": {"id": prize["id"], "title": prize["title"], "kind": prize["kind"]},
            "at": row["drawn_at"].isoformat()}


# One round trip both counts the draw and refuses it past the limit: the user's row is
# bumped only while today's count is under it (a new day starts again at 1).
_COUNT_DRAW = """
INSERT INTO mall_lottery_users AS u (campaign, user_id, draws, day, used)
VALUES ($1, $2, 1, $3, 1)
ON CONFLICT (campaign, user_id) DO UPDATE SET draws = u.draws + 1,
    used = CASE WHEN u.day = EXCLUDED.day THEN u.used + 1 ELSE 1 END, day = EXCLUDED.day
WHERE u.day <> EXCLUDED.day OR u.used < $4
RETURNING draws, used
"""

# The paid order of a join (or an open), in its transaction: the money was taken with it.
_ORDER = "INSERT INTO mall_orders (group_id, user_id, amount) VALUES ($1, $2, $3)"

_BARGAIN_COLUMNS = ("id, campaign, initiator, list_price, floor_price, price,"
                    " helpers_to_floor, helped, status, expires_at")


class Mall:
    """The group-buy's and the bargain's endpoints over one pool."""

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
            await conn.execute(_ORDER, row["id"], user, row["price"])
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
            await conn.execute(_ORDER, group_id, user, group["price"])
            members = [r["user_id"] for r in await conn.fetch(
                "SELECT user_id FROM mall_members WHERE group_id = $1 ORDER BY joined_at",
                group_id)]
        return web.json_response(_group(row, members))


    async def bargain_start(self, request: web.Request) -> web.Response:
        user = self.user(request)
        if user is None:
            return _error("unauthorized", 401)
        body = await request.json()
        row = await self.pool.fetchrow(
            "INSERT INTO mall_bargains (campaign, initiator, list_price, floor_price, price,"
            " helpers_to_floor, status, expires_at)"
            " SELECT id, $2, list_price, floor_price, list_price, helpers_to_floor, 'open',"
            " now() + time_limit_seconds * interval '1 second'"
            f" FROM mall_bargain_campaigns WHERE id = $1 RETURNING {_BARGAIN_COLUMNS}",
            body.get("campaign"), user)
        if row is None:
            return _error("not_found", 404)
        return web.json_response({"bargain": _bargain(row, [])}, status=201)

    async def bargain_help(self, request: web.Request) -> web.Response:
        user = self.user(request)
        if user is None:
            return _error("unauthorized", 401)
        body = await request.json()
        try:
            bargain_id = int(body.get("bargain"))
        except (TypeError, ValueError):
            return _error("invalid_request", 400)
        async with self.pool.acquire() as conn, conn.transaction():
            bargain = await conn.fetchrow(
                f"SELECT {_BARGAIN_COLUMNS} FROM mall_bargains WHERE id = $1 FOR UPDATE",
                bargain_id)
            if bargain is None:
                return _error("not_found", 404)
            if bargain["initiator"] == user:
                return _error("own_bargain", 409)
            if bargain["status"] != "open" or datetime.now(UTC) >= bargain["expires_at"]:
                return _error("bargain_closed", 409)
            if await conn.fetchval("SELECT 1 FROM mall_bargain_helps WHERE bargain_id = $1"
                                   " AND user_id = $2", bargain_id, user):
                return _error("already_helped", 409)
            left = bargain["helpers_to_floor"] - bargain["helped"]
            cut = draw_cut(bargain["price"] - bargain["floor_price"], left)
            await conn.execute(
                "INSERT INTO mall_bargain_helps (bargain_id, user_id, n, cut)"
                " VALUES ($1, $2, $3, $4)", bargain_id, user, bargain["helped"] + 1, cut)
            row = await conn.fetchrow(
                "UPDATE mall_bargains SET price = price - $2, helped = helped + 1,"
                " status = CASE WHEN helped + 1 >= helpers_to_floor THEN 'floor_reached'"
                " ELSE 'open' END, updated_at = now()"
                f" WHERE id = $1 RETURNING {_BARGAIN_COLUMNS}", bargain_id, cut)
            helpers = await conn.fetch(
                "SELECT user_id, cut, helped_at FROM mall_bargain_helps WHERE bargain_id = $1"
                " ORDER BY n", bargain_id)
        return web.json_response({"bargain": _bargain(row, helpers), "cut": cut})

    async def lottery_draw(self, request: web.Request) -> web.Response:
        """`POST /api/lotteries/{campaign}/draws` → 201 {"draw": D, "draws_left": n}."""
        user = self.user(request)
        if user is None:
            return _error("unauthorized", 401)
        campaign = request.match_info["campaign"]
        async with self.pool.acquire() as conn, conn.transaction():
            # Every prize row of the campaign, locked: the stock check, the pick and the
            # decrement see one state, and the next draw waits for this one's commit.
            prizes = await conn.fetch(
                "SELECT p.id, p.title, p.kind, p.weight, p.stock, c.free_draws_per_day,"
                " ((now() AT TIME ZONE c.time_zone)"
                "  - c.reset_minutes * interval '1 minute')::date AS day"
                " FROM mall_lottery_prizes p JOIN mall_lottery_campaigns c ON c.id = p.campaign"
                " WHERE p.campaign = $1 ORDER BY p.position FOR UPDATE OF p", campaign)
            if not prizes:
                return _error("not_found", 404)
            free, day = prizes[0]["free_draws_per_day"], prizes[0]["day"]
            counted = (await conn.fetchrow(_COUNT_DRAW, campaign, user, day, free)
                       if free >= 1 else None)
            if counted is None:
                return _error("no_draws_left", 409)
            prize = prizes[pick_prize([(p["weight"], p["stock"]) for p in prizes],
                                      random.random())]
            if prize["stock"] is not None:
                left = await conn.fetchval(
                    "UPDATE mall_lottery_prizes SET stock = stock - 1 WHERE campaign = $1"
                    " AND id = $2 AND stock > 0 RETURNING stock", campaign, prize["id"])
                if left is None:  # cannot happen under the lock; never sell what is gone
                    raise RuntimeError(f"prize {prize['id']} ran out under its lock")
            row = await conn.fetchrow(
                "INSERT INTO mall_lottery_draws (campaign, user_id, n, prize, day)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id, drawn_at",
                campaign, user, counted["draws"], prize["id"], day)
        return web.json_response({"draw": _draw(row, campaign, user, counted["draws"], prize),
                                  "draws_left": free - counted["used"]}, status=201)


async def serve(dsn: str, secret: str, port: int) -> None:
    pool = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
    mall = Mall(pool, secret)
    app = web.Application()
    app.router.add_post("/open", mall.open)
    app.router.add_post("/join", mall.join)
    app.router.add_post("/bargain/start", mall.bargain_start)
    app.router.add_post("/bargain/help", mall.bargain_help)
    app.router.add_post("/api/lotteries/{campaign}/draws", mall.lottery_draw)
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
