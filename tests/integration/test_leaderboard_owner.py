"""Leaderboards on the generic owner, against real Postgres and Redis: 10,000 random score
events across 1,000 users ranked exactly as a sort in the test (ties, regions, periods),
the same ranks after a restart with Redis wiped and after every event is sent twice,
periods closed once on a moved clock with late events in their own period, and the
pipeline's notices (facts, refunds, redelivery) end to end."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import defaultdict
from typing import Any, cast

import asyncpg
import pytest
import redis.asyncio as aioredis

from actors.pipeline_worker import PipelineWorker
from games.core import RankedGame
from games.leaderboard import GAME, periods
from games.leaderboard.campaign import BoardCampaign
from storage import redis_keys
from storage.config import Config
from storage.live import Live
from storage.ranks import RankCache
from storage.regions import Regions, region_of
from tests.integration.conftest import T0, Clock, Factory, make_config
from tests.support.services import Services

pytestmark = pytest.mark.integration

DAY = 86_400_000
REGIONS = ("YN", "SH", "BJ", "GD", "ZJ")
# The game's ranked reads (games.core.RankedGame, what the gateway checks for): GAME is
# typed as the plain Game protocol, which does not name them.
RANKED = cast(RankedGame, GAME)


def board(cid: str, *, metric: str = "sales", period: str = "weekly",
          scope: str = "everyone", ranks: int = 10, **extra: Any) -> dict[str, Any]:
    """One leaderboard campaign table, running 2020-2099."""
    return {"id": cid, "kind": "leaderboard", "title": f"Test {cid}",
            "starts_at": "2020-01-01T00:00:00+00:00", "ends_at": "2099-01-01T00:00:00+00:00",
            "metric": metric, "period": period, "scope": scope, "ranks": ranks, **extra}


BOARDS = [board("sales-week", scope="region"), board("comm-day", metric="commission",
                                                      period="daily"),
          board("orders-month", metric="orders", period="monthly"),
          board("members-all", metric="members", period="all", scope="region")]


def score(cid: str, order: str, buyer: str, facts: dict[str, Any], key: str | None = None
          ) -> dict[str, Any]:
    return {"method": "leaderboard.score", "campaign": cid, "user": buyer,
            "key": key or f"leaderboard.score:{order}",
            "params": {"order": order, "facts": facts}}


def unscore(cid: str, order: str, buyer: str, key: str | None = None) -> dict[str, Any]:
    return {"method": "leaderboard.unscore", "campaign": cid, "user": buyer,
            "key": key or f"leaderboard.unscore:{order}", "params": {"order": order}}


def read(cid: str, method: str, user: str = "viewer", **params: Any) -> dict[str, Any]:
    """A read the owner answers (champions)."""
    return {"method": f"leaderboard.{method}", "campaign": cid, "user": user, "key": None,
            "params": params}


class Ranks:
    """Ranked reads as the gateway answers them: the game names the ranking, the rank
    cache in Redis answers."""

    def __init__(self, svc: Services, config: Config) -> None:
        self.client = aioredis.from_url(svc.redis_url)
        self.cache = RankCache(self.client)
        self.config = config

    async def ask(self, cid: str, method: str, user: str = "viewer", now: int = T0,
                  **params: Any) -> dict[str, Any]:
        campaign = self.config.campaign(cid)
        query = RANKED.rank_read(campaign, f"leaderboard.{method}", user, params, now)
        first, entries, me = await self.cache.read(cid, query)
        return RANKED.rank_answer(campaign, query, first, entries, me, now)

    async def close(self) -> None:
        await self.client.aclose()


class Model:
    """The boards' ranks worked out independently: a tally per (period, group, user) and
    the index of the event that last changed it; ranks by sorting."""

    def __init__(self, campaign: BoardCampaign) -> None:
        self.board = campaign
        self.tally: dict[tuple[str, str, str], tuple[int, int]] = {}
        self.members: dict[tuple[str, str, str, str], int] = defaultdict(int)
        self.orders: dict[str, tuple[str, str, dict[str, Any], bool]] = {}
        self.clock = 0

    def _groups(self, user: str, regions: dict[str, str]) -> list[str]:
        if self.board.scope == "region" and user in regions:
            return ["all", regions[user]]
        return ["all"]

    def _add(self, period: str, group: str, user: str, delta: int) -> None:
        score, _ = self.tally.get((period, group, user), (0, 0))
        self.tally[(period, group, user)] = (score + delta, self.clock)

    def apply(self, kind: str, order: str, buyer: str, facts: dict[str, Any]) -> None:
        self.clock += 1
        if kind == "score":
            if order in self.orders:
                return
            self.orders[order] = (buyer, periods.period_of(self.board, facts["at"]), facts,
                                  False)
            sign = 1
        else:
            if order not in self.orders or self.orders[order][3]:
                return
            buyer, _, facts, _ = self.orders[order]
            self.orders[order] = (*self.orders[order][:3], True)
            sign = -1
        period = self.orders[order][1]
        metric, referrer, regions = self.board.metric, facts["referrer"], facts["regions"]
        if metric == "commission":
            for user, _, amount in facts["earned"]:
                for g in self._groups(user, regions):
                    self._add(period, g, user, sign * amount)
            return
        if referrer is None:
            return
        for g in self._groups(referrer, regions):
            if metric == "sales":
                self._add(period, g, referrer, sign * facts["amount"])
            elif metric == "orders":
                self._add(period, g, referrer, sign)
            else:
                key = (period, g, referrer, buyer)
                before = self.members[key]
                self.members[key] += sign
                if (before, self.members[key]) in ((0, 1), (1, 0)):
                    self._add(period, g, referrer, sign)

    def ranks(self) -> dict[tuple[str, str], list[tuple[str, int]]]:
        found: dict[tuple[str, str], list[tuple[str, int, int]]] = defaultdict(list)
        for (period, group, user), (score, at) in self.tally.items():
            if score > 0:
                found[(period, group)].append((user, score, at))
        return {key: [(u, s) for u, s, _ in sorted(rows, key=lambda r: (-r[1], r[2], r[0]))]
                for key, rows in found.items()}


async def postgres_ranks(conn: asyncpg.Connection, cid: str
                         ) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """The ranks Postgres holds: the entry rows in rank order."""
    found: dict[tuple[str, str], list[tuple[str, int]]] = defaultdict(list)
    for r in await conn.fetch(
            "SELECT period, region, user_id, score FROM leaderboards WHERE campaign = $1"
            " AND status = 'entry' AND score > 0 ORDER BY period, region, score DESC, reached,"
            " user_id", cid):
        found[(r["period"], r["region"])].append((r["user_id"], r["score"]))
    return dict(found)


def random_events(rng: random.Random, n: int, users: int
                  ) -> tuple[list[tuple[str, str, str, dict[str, Any]]], dict[str, str]]:
    """`n` pipeline events: paid orders (at times spread over three weeks) and refunds."""
    names = [f"u{i}" for i in range(users)]
    regions = {u: rng.choice(REGIONS) for u in names if rng.random() < 0.8}
    referrer = {u: rng.choice(names) for u in names if rng.random() < 0.9}
    events: list[tuple[str, str, str, dict[str, Any]]] = []
    paid: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(n):
        if paid and rng.random() < 0.15:
            order, buyer, facts = rng.choice(paid)
            events.append(("unscore", order, buyer, facts))
            continue
        buyer = rng.choice(names)
        # Few distinct amounts: many equal scores, so ties are common.
        amount = rng.choice((100, 200, 500, 1000, 1990))
        first = referrer.get(buyer)
        second = referrer.get(first) if first is not None else None
        earned = [[u, level, amount * bps // 10_000] for level, (u, bps) in enumerate(
            ((first, 1000), (second, 300)), start=1) if u is not None and u != buyer]
        involved = {buyer, first, second}
        facts = {"amount": amount, "at": T0 + rng.randrange(-10 * DAY, 10 * DAY),
                 "referrer": first if first != buyer else None, "earned": earned,
                 "regions": {u: regions[u] for u in involved if u in regions}}
        order = f"o{i}"
        paid.append((order, buyer, facts))
        events.append(("score", order, buyer, facts))
    return events, regions


async def cached_ranks(ranks: Ranks, cid: str, keys: list[tuple[str, str]]
                       ) -> dict[tuple[str, str], list[tuple[str, int]]]:
    """The top 100 of each (period, group) as `leaderboard.get` answers it."""
    found = {}
    for p, g in keys:
        entries = (await ranks.ask(cid, "get", period=p, region=g, limit=100))["entries"]
        assert [e["rank"] for e in entries] == list(range(1, len(entries) + 1))
        found[(p, g)] = [(e["user"], e["score"]) for e in entries]
    return found


async def test_ten_thousand_events_rank_as_a_sort_through_restarts_and_replays(
        clean: Services, shard_factory: Factory) -> None:
    rng = random.Random(14)
    config = make_config(clean, *BOARDS)
    campaigns = {c.id: c for c in config.campaigns}
    assert all(isinstance(c, BoardCampaign) for c in campaigns.values())
    clock = Clock()
    shard = await shard_factory(config, clock)
    events, _ = random_events(rng, 10_000, 1_000)
    models = {cid: Model(c) for cid, c in campaigns.items()}  # type: ignore[arg-type]
    commands: list[dict[str, Any]] = []
    for kind, order, buyer, facts in events:
        for cid, model in models.items():
            model.apply(kind, order, buyer, facts)
            commands.append(score(cid, order, buyer, facts) if kind == "score"
                            else unscore(cid, order, buyer))
    first: list[dict[str, Any]] = []
    for at in range(0, len(commands), 500):
        first += await shard.submit(commands[at:at + 500])
    assert all(a["ok"] for a in first)
    expected = {cid: model.ranks() for cid, model in models.items()}
    assert sum(len(r) for ranks in expected.values() for r in ranks.values()) > 5_000
    ties = sum(1 for ranks in expected.values() for rows in ranks.values()
               for a, b in itertools.pairwise(rows) if a[1] == b[1])
    assert ties > 1_000  # the test exercises ties, not just distinct scores
    assert {g for ranks in expected.values() for _, g in ranks} == {"all", *REGIONS}
    conn = await asyncpg.connect(clean.database_url)
    cache = Ranks(clean, config)
    try:
        async def check() -> None:
            for cid, ranks in expected.items():
                assert await postgres_ranks(conn, cid) == ranks
                keys = sorted(ranks)
                assert await cached_ranks(cache, cid, keys) == {k: ranks[k][:100]
                                                                for k in keys}
                # Every user's own standing in a sample of the groups, and ±k around them.
                sample = rng.sample(keys, min(len(keys), 6))
                for (p, g) in sample:
                    for rank, (user, score) in enumerate(ranks[(p, g)], start=1):
                        got = await cache.ask(cid, "get", user, period=p, region=g, limit=1)
                        assert got["me"] == {"rank": rank, "score": score}, user
                (p, g) = rng.choice(sample)
                rank = rng.randrange(1, len(ranks[(p, g)]) + 1)
                user = ranks[(p, g)][rank - 1][0]
                around = await cache.ask(cid, "around", user, period=p, region=g, k=3)
                low = max(1, rank - 3)
                assert [(e["rank"], e["user"]) for e in around["entries"]] == [
                    (n, ranks[(p, g)][n - 1][0]) for n in range(low, min(
                        len(ranks[(p, g)]), rank + 3) + 1)]

        await check()
        # A restart with Redis wiped: the same ranks, rebuilt from Postgres.
        await shard.stop()
        client = aioredis.from_url(clean.redis_url)
        try:
            keys = [k async for k in client.scan_iter(match=f"{redis_keys.PREFIX}:*",
                                                     count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
        empty = await cache.ask("sales-week", "get", period=periods.period_of(
            campaigns["sales-week"], T0))  # type: ignore[arg-type]
        assert empty["entries"] == []  # the cache is gone: nothing to read before a start
        shard = await shard_factory(config, clock)
        await check()
        # A cache behind the stream (a write lost) is rebuilt at start too.
        await shard.stop()
        await cache.client.set(redis_keys.ranks_version("comm-day"), 1)
        await cache.client.delete(*await cache.client.keys(
            redis_keys.ranking("comm-day", ("*",))))
        shard = await shard_factory(config, clock)
        await check()
        # Every event sent twice: by its key (answered as first), and under a key the
        # owner no longer remembers (the game's own once per order): the same scores.
        again: list[dict[str, Any]] = []
        for at in range(0, len(commands), 500):
            again += await shard.submit(commands[at:at + 500])
        assert again == first
        fresh = [{**c, "key": f"{c['key']}:again"} for c in commands]
        for at in range(0, len(fresh), 500):
            replies = await shard.submit(fresh[at:at + 500])
            assert all(r["ok"] and r["result"]["count"] == 0 for r in replies)
        await check()
    finally:
        await cache.close()
        await conn.close()


async def test_a_period_closes_once_on_a_moved_clock_and_late_events_keep_their_period(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, board("wk", ranks=2))
    [campaign] = config.campaigns
    assert isinstance(campaign, BoardCampaign)
    week = periods.period_of(campaign, T0)
    start, end = periods.bounds(campaign, week)
    following = periods.following(campaign, week)
    clock = Clock()
    shard = await shard_factory(config, clock)
    await shard.expire_due()  # the board opens (and skips the empty weeks since 2020)

    def facts(amount: int, referrer: str, at: int) -> dict[str, Any]:
        return {"amount": amount, "at": at, "referrer": referrer, "earned": [],
                "regions": {}}

    await shard.submit([score("wk", "o1", "b1", facts(300, "alice", T0)),
                        score("wk", "o2", "b2", facts(200, "bob", T0)),
                        score("wk", "o3", "b3", facts(100, "carol", T0))])
    clock.ms = end - 1
    await shard.expire_due()
    [none] = await shard.submit([read("wk", "champions")])
    assert none["result"]["champions"] == []
    clock.ms = end
    await shard.expire_due()
    [got] = await shard.submit([read("wk", "champions")])
    [won] = got["result"]["champions"]
    assert won["period"] == week and won["champion"] == {"user": "alice", "score": 300}
    assert [e["user"] for e in won["entries"]] == ["alice", "bob"]  # ranks = 2
    # The current period is the new one, empty; the old one can still be read.
    cache = Ranks(clean, config)
    try:
        now = await cache.ask("wk", "get", now=end)
        assert now["period"] == following and now["entries"] == []
        # A late event (made before the end, arriving after it) lands in its own period.
        await shard.submit([score("wk", "o4", "b4", facts(500, "dave", end - 1))])
        old = await cache.ask("wk", "get", period=week, now=end)
        new = await cache.ask("wk", "get", period=following, now=end)
    finally:
        await cache.close()
    assert old["entries"][0] == {"rank": 1, "user": "dave", "score": 500}
    assert old["final"] is True and new["entries"] == []
    # Archived once: not again on the same deadline, nor after a restart.
    await shard.expire_due()
    await shard.stop()
    shard = await shard_factory(config, clock)
    await shard.expire_due()
    [after] = await shard.submit([read("wk", "champions")])
    assert after["result"]["champions"] == got["result"]["champions"]
    conn = await asyncpg.connect(clean.database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM events WHERE stream = 'leaderboard:wk'"
                                   " AND type = 'period_closed' AND data->>'period' = $1",
                                   week) == 1
    finally:
        await conn.close()
    # The champion event went out on the board's topic, then the new period's board.
    live = Live(aioredis.from_url(clean.redis_url), 100, 3600)
    try:
        frames = [f["data"] for f in await live.history("leaderboard:wk")]
    finally:
        await live.client.aclose()
    kinds = [(f["type"], f["period"]) for f in frames]
    assert kinds.count(("champions", week)) == 1
    assert kinds.index(("champions", week)) < kinds.index(("board", following))
    assert start < T0 < end


async def test_the_top_is_pushed_coalesced_and_users_hear_of_their_rank(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, board("live", ranks=3))
    clock = Clock()
    shard = await shard_factory(config, clock)
    await shard.expire_due()
    for n in range(50):  # fifty scores inside one window
        clock.ms = T0 + n
        await shard.submit([score("live", f"o{n}", f"b{n}", {
            "amount": 100 + n, "at": T0, "referrer": f"s{n % 4}", "earned": [],
            "regions": {}})])
    clock.ms = T0 + 600
    await shard.expire_due()
    live = Live(aioredis.from_url(clean.redis_url), 100, 3600)
    try:
        frames = [f["data"] for f in await live.history("leaderboard:live")]
        mine = [f["data"] for f in await live.history("user:s3")]
    finally:
        await live.client.aclose()
    # Empty boards as it opens (and skips the weeks since 2020), then one for all fifty.
    boards = [f for f in frames if f["type"] == "board" and f["entries"]]
    assert len(boards) == 1
    assert [e["user"] for e in boards[0]["entries"]] == ["s1", "s0", "s3"]  # 1625, 1612, 1500
    assert [m["rank"] for m in mine if m["type"] == "rank_changed"] == [3]


async def test_the_pipeline_feeds_boards_once_and_refunds_take_scores_back(
        clean: Services, shard_factory: Factory) -> None:
    config = make_config(clean, board("pipe", scope="region"),
                         board("pipe-comm", metric="commission", period="all"))
    clock = Clock()
    clock.ms = int(time.time() * 1000)  # orders are made at Postgres's now()
    shard = await shard_factory(config, clock)
    owners = [shard]

    async def send(commands: list[dict[str, Any]]) -> list[str]:
        replies: list[str] = await owners[-1].submit_json(commands)
        return replies

    worker = PipelineWorker(config, clean.database_url, send=send)
    await worker.start()
    conn = await asyncpg.connect(clean.database_url)
    pool = await asyncpg.create_pool(clean.database_url, min_size=1, max_size=2)
    cache = Ranks(clean, config)
    try:
        # alice brought bob and carol; root brought alice. alice acts from Yunnan.
        for user, referrer in (("alice", "root"), ("bob", "alice"), ("carol", "alice")):
            assert json.loads(await worker.bind(user, referrer))["ok"]
        await Regions(pool).note("alice", "YN")
        for n, (buyer, amount) in enumerate((("bob", 1000), ("carol", 500), ("bob", 250))):
            await conn.execute(
                "INSERT INTO outbox (stream, version, type, data) VALUES ($1, 1, 'deal', $2)",
                f"test:d{n}", json.dumps({"campaign": "pipe", "kind": "test", "at": 0,
                                          "lines": [{"user": buyer, "sku": "S", "amount":
                                                     amount, "instance": f"d{n}",
                                                     "line": buyer}]}))
        await worker.drain()
        await worker.deliver_notices()
        everyone = await cache.ask("pipe", "get", "alice", now=clock.ms)
        yn = await cache.ask("pipe", "get", "alice", now=clock.ms, region="YN")
        comm = await cache.ask("pipe-comm", "get", now=clock.ms)
        assert everyone["entries"] == [{"rank": 1, "user": "alice", "score": 1750}]
        assert yn["entries"] == everyone["entries"] and yn["region"] == "YN"
        assert everyone["me"] == {"rank": 1, "score": 1750}
        # A regional board's default region is the caller's own.
        home = await cache.ask("pipe", "get", "alice", now=clock.ms, home_region="YN")
        assert home["region"] == "YN"
        earned = {e["user"]: e["score"] for e in comm["entries"]}
        assert set(earned) == {"alice", "root"} and all(v > 0 for v in earned.values())
        # Replayed: the outbox again (no order twice, so no notice), every notice again
        # after the owner forgot its answers (the board takes each order once).
        await conn.execute("UPDATE outbox SET processed_at = NULL")
        await worker.drain()
        await shard.stop()
        await conn.execute("DELETE FROM command_results")
        shard = await shard_factory(config, clock)
        owners.append(shard)
        await conn.execute("UPDATE game_notices SET sent_at = NULL")
        await worker.deliver_notices()
        same = await cache.ask("pipe", "get", "alice", now=clock.ms)
        assert same["entries"] == everyone["entries"]
        # A refund takes its order's score back.
        order = await conn.fetchval("SELECT id FROM orders WHERE user_id = 'carol'")
        assert json.loads(await worker.refund("carol", order))["ok"]
        await worker.deliver_notices()
        less = await cache.ask("pipe", "get", "alice", now=clock.ms)
        assert less["entries"] == [{"rank": 1, "user": "alice", "score": 1250}]
        # A piece of bob's 1000-fen order: the sales board takes back exactly the 300 fen,
        # the commission board exactly what the piece reversed (floor(100 × 300 / 1000)
        # of alice's 100, floor(30 × 300 / 1000) of root's 30).
        before = {e["user"]: e["score"] for e in (await cache.ask(
            "pipe-comm", "get", now=clock.ms))["entries"]}
        first = await conn.fetchval("SELECT min(id) FROM orders WHERE user_id = 'bob'")
        assert json.loads(await worker.refund("bob", first, 300))["ok"]
        await worker.deliver_notices()
        piece = await cache.ask("pipe", "get", "alice", now=clock.ms)
        assert piece["entries"] == [{"rank": 1, "user": "alice", "score": 950}]
        after = {e["user"]: e["score"] for e in (await cache.ask(
            "pipe-comm", "get", now=clock.ms))["entries"]}
        assert (before["alice"] - after["alice"], before["root"] - after["root"]) == (30, 9)
        # Every notice again, the owner's answers forgotten: nothing more is taken back.
        await conn.execute("DELETE FROM command_results")
        await shard.stop()
        shard = await shard_factory(config, clock)
        owners.append(shard)
        await conn.execute("UPDATE game_notices SET sent_at = NULL")
        await worker.deliver_notices()
        assert (await cache.ask("pipe", "get", "alice", now=clock.ms))["entries"] == \
            piece["entries"]
        # The rest: the order's whole score is gone, nothing more.
        assert json.loads(await worker.refund("bob", first))["ok"]
        await worker.deliver_notices()
        rest = await cache.ask("pipe", "get", "alice", now=clock.ms)
        assert rest["entries"] == [{"rank": 1, "user": "alice", "score": 250}]
        whole = {e["user"]: e["score"] for e in (await cache.ask(
            "pipe-comm", "get", now=clock.ms))["entries"]}
        assert (before["alice"] - whole["alice"], before["root"] - whole["root"]) == (100, 30)
    finally:
        await cache.close()
        await pool.close()
        await conn.close()
        await worker.stop()


def _sold(board_id: str, n: int) -> dict[str, Any]:
    """Order n's score on `board_id`: seller s{n} sold 100 × (n + 1) fen."""
    return score(board_id, f"o{n}", f"b{n}", {"amount": 100 * (n + 1), "at": T0,
                                              "referrer": f"s{n}", "earned": [],
                                              "regions": {}})


@pytest.mark.parametrize("redis_did", ["lost", "restored"])
async def test_a_cache_redis_changed_behind_the_owner_is_rebuilt_on_the_next_commit(
        clean: Services, shard_factory: Factory, redis_did: str) -> None:
    config = make_config(clean, board(redis_did, ranks=50))
    shard = await shard_factory(config, Clock())
    await shard.expire_due()
    await shard.submit([_sold(redis_did, n) for n in range(10)])
    cache = Ranks(clean, config)
    try:
        keys = await cache.client.keys(f"{redis_keys.PREFIX}:rank*")
        assert keys
        snapshot: dict[bytes | str, bytes] = {}
        for key in keys:
            dumped = await cache.client.dump(key)
            assert dumped is not None
            snapshot[key] = dumped
        await shard.submit([_sold(redis_did, n) for n in range(10, 20)])
        # Lost: as a Redis restarted without persistence. Restored: as one brought back
        # from the snapshot taken before those ten, every key as it was, version included.
        await cache.client.delete(*await cache.client.keys(f"{redis_keys.PREFIX}:rank*"))
        if redis_did == "restored":
            for key, value in snapshot.items():
                await cache.client.restore(key, 0, value)
        await shard.submit([_sold(redis_did, 20)])
        got = await cache.ask(redis_did, "get", limit=50)
    finally:
        await cache.close()
    assert [(e["user"], e["score"]) for e in got["entries"]] == [
        (f"s{n}", 100 * (n + 1)) for n in range(20, -1, -1)]


async def test_a_users_region_is_recorded_once_per_change_not_per_call(
        clean: Services) -> None:
    pool = await asyncpg.create_pool(clean.database_url, min_size=1, max_size=2)
    try:
        now = [0.0]
        regions = Regions(pool, ttl=60, clock=lambda: now[0])
        await regions.note("rg-ann", "YN")
        assert await region_of(pool, "rg-ann") == "YN"
        # Another gateway's write meanwhile: the same claim again within the minute is not
        # written (cached)...
        await pool.execute("UPDATE user_regions SET region = 'XX' WHERE user_id = 'rg-ann'")
        now[0] = 59.0
        await regions.note("rg-ann", "YN")
        assert await region_of(pool, "rg-ann") == "XX"
        # ...after it, the claim this gateway sees is recorded again.
        now[0] = 61.0
        await regions.note("rg-ann", "YN")
        assert await region_of(pool, "rg-ann") == "YN"
        await pool.execute("UPDATE user_regions SET region = 'XX' WHERE user_id = 'rg-ann'")
        # ...a new claim is, and a token without one changes nothing.
        await regions.note("rg-ann", "SH")
        await regions.note("rg-ann", None)
        assert await region_of(pool, "rg-ann") == "SH"
        assert await region_of(pool, "rg-nobody") is None
        # The cache is bounded: the oldest user is forgotten, and written again.
        small = Regions(pool, cached=1)
        await small.note("rg-a", "YN")
        await small.note("rg-b", "YN")
        await pool.execute("UPDATE user_regions SET region = 'XX' WHERE user_id = 'rg-a'")
        await small.note("rg-a", "YN")
        assert await region_of(pool, "rg-a") == "YN"
    finally:
        await pool.close()
