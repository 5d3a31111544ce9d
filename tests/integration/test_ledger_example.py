"""The ledger's worked example (issue 15): a scripted story through the real pipeline
worker and a real shard owner, on real Postgres and Redis, every fen written out by hand.

Each row of a table is one step of the story and what it must leave behind: the ledger
lines that step wrote (as `(step, account, fen)`, the step being the last part of the
transaction's name: `post`, `settle`, `reverse-1`, `clawback-3`, `hold`, `pay`) and every
user's balances afterwards as `GET /api/commissions` reads them (`storage.reads.
commissions`: pending, available, withdrawing, debt). The expected fen are computed by
hand in the comments; the code under test computes them on its own.

One order costs PRICE = 12345 fen (a price whose commissions do not divide evenly, so the
floors show): at the default rates level 1 is 12345 × 1000 // 10000 = 1234 (1234.5
floored) and level 2 12345 × 300 // 10000 = 370 (370.35 floored).

The story is in three parts, one config each (a config holds one binding mode):
- part A: permanent bindings, self-purchase off, grades, withdrawal fees, a review
  threshold and the tax flag: grades at both levels, a refund in two pieces, settlement,
  an after-sales refund into debt and its recovery, withdrawals either side of review;
- part B: expiring bindings (7 days) with self-purchase on;
- part C: latest-share-wins bindings (30 minutes' protection), self-purchase off.
The ledger audit (tests.support.ledger, autouse) checks each part's whole ledger at the end.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from actors.owner import Owner
from actors.pipeline_worker import PipelineWorker
from storage import reads
from storage.config import Config, parse
from tests.integration.conftest import Clock, Factory, cmd
from tests.integration.test_commissions import (  # noqa: F401 (fixtures)
    WorkerFactory,
    answer,
    conn,
    sound_ledger,
    worker_factory,
)
from tests.support import configs
from tests.support.services import Services

pytestmark = pytest.mark.integration

PRICE = 12345  # fen, one order
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
SHANGHAI = ZoneInfo("Asia/Shanghai")

# Balances of one user: (pending, available, withdrawing, debt), fen.
Balance = tuple[int, int, int, int]
Lines = list[tuple[str, str, int]]


@dataclass
class Story:
    """What the steps of one part share: the pipeline, a shard, the clock, the orders."""

    worker: PipelineWorker
    shard: Owner
    clock: Clock
    conn: asyncpg.Connection
    orders: dict[str, int] = field(default_factory=dict)  # name -> order id
    withdrawals: dict[str, int] = field(default_factory=dict)  # key -> withdrawal id
    leaders: int = 0

    async def buy(self, name: str, buyer: str) -> None:
        """`buyer` completes a pair with a fresh leader (`l1`, `l2`, ...): two orders;
        `name` names the buyer's."""
        self.leaders += 1
        leader = f"l{self.leaders}"
        [opened] = await self.shard.submit([cmd("open", leader)])
        assert opened["ok"], opened
        [joined] = await self.shard.submit([cmd("join", buyer,
                                                group=opened["result"]["group"]["id"])])
        assert joined["ok"], joined
        await self.worker.drain()
        self.orders[name] = await self.conn.fetchval(
            "SELECT max(id) FROM orders WHERE user_id = $1", buyer)

    async def bind(self, user: str, referrer: str) -> str:
        """Bind; "ok" or the refusal's error code."""
        found = answer(await self.worker.bind(user, referrer))
        return "ok" if found["ok"] else str(found["error"]["code"])

    async def settle(self, order: str) -> int:
        """Settle at the end of `order`'s 30-day window: how many commissions settled."""
        created: datetime = await self.conn.fetchval(
            "SELECT created_at FROM orders WHERE id = $1", self.orders[order])
        return await self.worker.settle_once(created + 30 * DAY)

    async def withdraw(self, user: str, key: str, amount: int) -> dict[str, Any]:
        found = answer(await self.worker.withdraw(user, key, amount))
        assert found["ok"], found
        withdrawal: dict[str, Any] = found["result"]["withdrawal"]
        self.withdrawals[key] = withdrawal["id"]
        return withdrawal


Step = Callable[[Story], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    """One step of the story: what it does, the lines it writes, the balances after it
    (users not named hold nothing)."""

    what: str
    do: Step
    lines: Lines
    balances: dict[str, Balance]


def step_kind(txn: str) -> str:
    """`commission:7:reverse-1` -> `reverse-1`; `withdrawal:2:hold` -> `hold`."""
    return txn.rsplit(":", 1)[-1]


async def run(story: Story, table: list[Row], pool: asyncpg.Pool) -> None:
    """Play `table`'s rows in order, checking after each the lines it wrote (as a
    multiset) and every user's balances as the commissions read shows them."""
    for number, row in enumerate(table, 1):
        where = f"row {number} ({row.what})"
        mark = await story.conn.fetchval("SELECT coalesce(max(id), 0) FROM ledger_entries")
        await row.do(story)
        written = await story.conn.fetch(
            "SELECT txn, account, amount FROM ledger_entries WHERE id > $1", mark)
        assert Counter((step_kind(r["txn"]), r["account"], r["amount"]) for r in written
                       ) == Counter(row.lines), where
        users = {r["account"].split(":")[1] for r in await story.conn.fetch(
            "SELECT DISTINCT account FROM ledger_entries WHERE account LIKE 'user:%'")}
        for user in sorted(users | set(row.balances)):
            balance = (await reads.commissions(pool, user, 1))["balance"]
            got = (balance["pending"], balance["available"], balance["withdrawing"],
                   balance["debt"])
            assert got == row.balances.get(user, (0, 0, 0, 0)), f"{where}: {user}"


def config_of(clean: Services, commission: dict[str, Any]) -> Config:
    # A campaign a buyer may join again and again, each deal a pair with a fresh leader.
    table = configs.campaign("c1", size=2, stock=100, joined=20, pay=False)
    table["product"] |= {"list_price": 19900, "group_price": PRICE}
    doc = configs.document([table], shards=1, database_url=clean.database_url,
                           redis_url=clean.redis_url)
    doc["commission"] = commission
    return parse(doc, {}, "test")


@pytest.fixture
async def pool(clean: Services) -> AsyncIterator[asyncpg.Pool]:
    found = await asyncpg.create_pool(clean.database_url, min_size=1, max_size=2)
    yield found
    await found.close()


@pytest.fixture
def story_of(shard_factory: Factory, worker_factory: WorkerFactory,  # noqa: F811
             conn: asyncpg.Connection) -> Callable[[Config], Awaitable[Story]]:  # noqa: F811
    async def start(config: Config) -> Story:
        clock = Clock()  # one clock for the owner and the pipeline, moved by the story
        worker = await worker_factory(config, clock)
        return Story(worker, await shard_factory(config, clock), clock, conn)

    return start


# --- part A: grades, two pieces, settlement, debt, withdrawals, tax ---------------------

GRADES: list[dict[str, Any]] = [
    {"id": "normal", "title": "普通"},  # the config's rates: 1000 and 300 bps
    # One settled sale this month and one direct buyer: silver, 20% and 5%.
    {"id": "silver", "title": "银牌", "level1_bps": 2000, "level2_bps": 500,
     "min_settled_sales_month_fen": 1, "min_direct_buyers": 1, "match": "all"},
    {"id": "gold", "title": "金牌", "level1_bps": 3000, "level2_bps": 600,
     "min_settled_sales_month_fen": 1_000_000_000},
]
PART_A = {"grades": GRADES, "self_purchase": False, "binding_mode": "permanent",
          "withdrawal_fee_bps": 60, "withdrawal_min_fee_fen": 10,
          "withdrawal_review_fen": 1000, "tax_threshold_fen": 2400}


async def bind_chain(s: Story) -> None:
    # zed brought alice in, alice brought bob; permanent: carol can never take bob over,
    # not even a year on.
    assert await s.bind("alice", "zed") == "ok"
    assert await s.bind("bob", "alice") == "ok"
    s.clock.advance(365 * DAY)
    assert await s.bind("bob", "carol") == "already_bound"
    s.clock.advance(-365 * DAY)


async def bob_buys_first(s: Story) -> None:
    await s.buy("first", "bob")


async def bob_refunds_5000(s: Story) -> None:
    assert answer(await s.worker.refund("bob", s.orders["first"], 5000, "p1"))["ok"]


async def bob_refunds_3000_more(s: Story) -> None:
    assert answer(await s.worker.refund("bob", s.orders["first"], 3000, "p2"))["ok"]


async def settle_first(s: Story) -> None:
    assert await s.settle("first") == 2
    grades = await s.conn.fetch("SELECT user_id, grade FROM distributor_grades")
    assert [tuple(r) for r in grades] == [("alice", "silver")]


async def alice_withdraws_300(s: Story) -> None:
    paid = await s.withdraw("alice", "w1", 300)
    # 300 × 60 bps = 1.8, rounded up to 2, below the 10 fen minimum: the fee is 10.
    assert (paid["status"], paid["amount"], paid["fee"], paid["net"]) == ("paid", 300, 10, 290)


async def boss_refunds_the_rest(s: Story) -> None:
    done = answer(await s.worker.refund_after_sales("boss", s.orders["first"], None, "a1",
                                                    "damaged"))
    assert done["result"]["order"]["status"] == "refunded", done


async def bob_buys_second(s: Story) -> None:
    await s.buy("second", "bob")
    rates = await s.conn.fetch("SELECT beneficiary, level, rate_bps FROM commissions"
                               " WHERE order_id = $1 ORDER BY level", s.orders["second"])
    assert [tuple(r) for r in rates] == [("alice", 1, 2000), ("zed", 2, 300)]


async def settle_second(s: Story) -> None:
    created: datetime = await s.conn.fetchval(
        "SELECT created_at FROM orders WHERE id = $1", s.orders["second"])
    assert await s.settle("second") == 2
    # Income is what was kept: the first order came back whole, so its commissions count
    # 1234 - 1234 = 0 and 370 - 370 = 0 (the 435 and 131 that settled were clawed back).
    # alice's 0 + 2469 = 2469 >= 2400: flagged, once; zed's 0 + 370 = 370 is not.
    year = (created + 30 * DAY).astimezone(SHANGHAI).year
    flags = await s.conn.fetch("SELECT user_id, year, income FROM tax_flags")
    assert [tuple(r) for r in flags] == [("alice", year, 2469)]


async def alice_withdraws_1999(s: Story) -> None:
    held = await s.withdraw("alice", "w2", 1999)
    # 1999 >= 1000: reviewed. 1999 × 60 bps = 11.994, rounded up: 12, above the minimum.
    assert (held["status"], held["fee"], held["net"]) == ("reviewing", 12, 1987)


async def boss_approves(s: Story) -> None:
    approved = answer(await s.worker.review("boss", s.withdrawals["w2"], True, "ok"))
    assert approved["result"]["withdrawal"]["status"] == "paid", approved


PART_A_TABLE = [
    Row("bindings, permanent", bind_chain, [], {}),
    # 12345 × 1000 // 10000 = 1234 to alice; 12345 × 300 // 10000 = 370 to zed; the shop
    # pays 1234 + 370 = 1604. Self-purchase off: bob earns nothing on his own order, and
    # the unbound leader l1 nothing on theirs.
    Row("bob buys, both levels at normal", bob_buys_first,
        [("post", "shop:commission", -1604), ("post", "user:alice:pending", 1234),
         ("post", "user:zed:pending", 370)],
        {"alice": (1234, 0, 0, 0), "zed": (370, 0, 0, 0)}),
    # floor(1234 × 5000 / 12345) = floor(499.79) = 499; floor(370 × 5000 / 12345) =
    # floor(149.86) = 149. Left: 1234 - 499 = 735, 370 - 149 = 221.
    Row("refund piece 1: 5000", bob_refunds_5000,
        [("reverse-1", "user:alice:pending", -499), ("reverse-1", "shop:commission", 499),
         ("reverse-1", "user:zed:pending", -149), ("reverse-1", "shop:commission", 149)],
        {"alice": (735, 0, 0, 0), "zed": (221, 0, 0, 0)}),
    # Refunded 8000 in all: floor(1234 × 8000 / 12345) = floor(799.68) = 799, so this
    # piece takes 799 - 499 = 300; floor(370 × 8000 / 12345) = floor(239.77) = 239, so
    # 239 - 149 = 90. Left: 435 and 131.
    Row("refund piece 2: 3000", bob_refunds_3000_more,
        [("reverse-2", "user:alice:pending", -300), ("reverse-2", "shop:commission", 300),
         ("reverse-2", "user:zed:pending", -90), ("reverse-2", "shop:commission", 90)],
        {"alice": (435, 0, 0, 0), "zed": (131, 0, 0, 0)}),
    # The window ends: the rests settle, 435 and 131; alice rises to silver.
    Row("settlement; alice to silver", settle_first,
        [("settle", "user:alice:pending", -435), ("settle", "user:alice:available", 435),
         ("settle", "user:zed:pending", -131), ("settle", "user:zed:available", 131)],
        {"alice": (0, 435, 0, 0), "zed": (0, 131, 0, 0)}),
    # 300 < 1000: paid at once. Fee max(10, ceil(300 × 60 / 10000) = 2) = 10; 290 paid
    # out. alice: 435 - 300 = 135.
    Row("withdrawal below review, minimum fee", alice_withdraws_300,
        [("hold", "user:alice:available", -300), ("hold", "user:alice:withdrawing", 300),
         ("pay", "user:alice:withdrawing", -290), ("pay", "shop:payouts", 290),
         ("pay", "user:alice:withdrawing", -10), ("pay", "shop:withdrawal_fees", 10)],
        {"alice": (0, 135, 0, 0), "zed": (0, 131, 0, 0)}),
    # After sales, the rest (12345 - 8000 = 4345): refunded whole, so each commission
    # goes back whole: alice's last 1234 - 799 = 435, of which available holds 135 and
    # 435 - 135 = 300 becomes debt; zed's 370 - 239 = 131, all from available.
    Row("after-sales refund of the rest: a debt", boss_refunds_the_rest,
        [("clawback-3", "shop:commission", 435), ("clawback-3", "user:alice:available", -135),
         ("clawback-3", "user:alice:debt", -300),
         ("clawback-3", "shop:commission", 131), ("clawback-3", "user:zed:available", -131)],
        {"alice": (0, 0, 0, 300)}),
    # alice is silver now: 12345 × 2000 // 10000 = 2469. zed is still normal (grades
    # are the earner's own): 12345 × 300 // 10000 = 370. 2469 + 370 = 2839.
    Row("bob buys again: silver from the next order only", bob_buys_second,
        [("post", "shop:commission", -2839), ("post", "user:alice:pending", 2469),
         ("post", "user:zed:pending", 370)],
        {"alice": (2469, 0, 0, 300), "zed": (370, 0, 0, 0)}),
    # alice's 2469 pays her 300 debt first, 2469 - 300 = 2169 to available; zed 370.
    Row("settlement recovers the debt; tax flag", settle_second,
        [("settle", "user:alice:pending", -2469), ("settle", "user:alice:debt", 300),
         ("settle", "user:alice:available", 2169),
         ("settle", "user:zed:pending", -370), ("settle", "user:zed:available", 370)],
        {"alice": (0, 2169, 0, 0), "zed": (0, 370, 0, 0)}),
    # 1999 held for review: 2169 - 1999 = 170 available.
    Row("withdrawal above review", alice_withdraws_1999,
        [("hold", "user:alice:available", -1999), ("hold", "user:alice:withdrawing", 1999)],
        {"alice": (0, 170, 1999, 0), "zed": (0, 370, 0, 0)}),
    # Approved: 1999 - 12 = 1987 paid out, 12 to the shop's fees.
    Row("review approves: fee above the minimum", boss_approves,
        [("pay", "user:alice:withdrawing", -1987), ("pay", "shop:payouts", 1987),
         ("pay", "user:alice:withdrawing", -12), ("pay", "shop:withdrawal_fees", 12)],
        {"alice": (0, 170, 0, 0), "zed": (0, 370, 0, 0)}),
]


async def test_part_a_grades_refund_pieces_debt_withdrawals_and_tax(
        clean: Services, story_of: Callable[[Config], Awaitable[Story]],
        pool: asyncpg.Pool, conn: asyncpg.Connection) -> None:  # noqa: F811
    await run(await story_of(config_of(clean, PART_A)), PART_A_TABLE, pool)
    # The shop's side of it all: commission paid 1604 + 2839 = 4443, back 499 + 149 +
    # 300 + 90 + 435 + 131 = 1604 (the first order whole), so -2839; payouts 290 + 1987;
    # fees 10 + 12.
    shop = await conn.fetch("SELECT account, sum(amount) AS fen FROM ledger_entries"
                            " WHERE account LIKE 'shop:%' GROUP BY account ORDER BY account")
    assert [tuple(r) for r in shop] == [("shop:commission", -2839), ("shop:payouts", 2277),
                                        ("shop:withdrawal_fees", 22)]


# --- part B: expiring bindings, self-purchase on --------------------------------------

async def bob_buys_bound_to_alice(s: Story) -> None:
    assert await s.bind("bob", "alice") == "ok"
    await s.buy("first", "bob")


async def carol_takes_bob_after_seven_days(s: Story) -> None:
    start = s.clock.now()
    s.clock.set(start + 6 * DAY)  # still alice's alone
    assert await s.bind("bob", "carol") == "already_bound"
    s.clock.set(start + 7 * DAY)  # valid 7 days: free to move
    assert await s.bind("bob", "carol") == "ok"
    await s.buy("second", "bob")


PART_B_TABLE = [
    # Self-purchase: bob is his own level 1 (1234) and alice, who brought him, level 2
    # (370); the unbound leader l1 earns level 1 on their own order (1234) and nobody
    # level 2. Shop: 1234 + 370 + 1234 = 2838.
    Row("expiring: bob bound to alice buys, self-purchase on", bob_buys_bound_to_alice,
        [("post", "shop:commission", -2838), ("post", "user:bob:pending", 1234),
         ("post", "user:alice:pending", 370), ("post", "user:l1:pending", 1234)],
        {"bob": (1234, 0, 0, 0), "alice": (370, 0, 0, 0), "l1": (1234, 0, 0, 0)}),
    # Day 6 carol is refused; day 7 she takes bob: his next order pays carol level 2
    # (370), bob himself 1234 again, l2 1234. Alice keeps what she earned.
    Row("expiring: moved after 7 days", carol_takes_bob_after_seven_days,
        [("post", "shop:commission", -2838), ("post", "user:bob:pending", 1234),
         ("post", "user:carol:pending", 370), ("post", "user:l2:pending", 1234)],
        {"bob": (2468, 0, 0, 0), "alice": (370, 0, 0, 0), "carol": (370, 0, 0, 0),
         "l1": (1234, 0, 0, 0), "l2": (1234, 0, 0, 0)}),
]


async def test_part_b_expiring_bindings_with_self_purchase(
        clean: Services, story_of: Callable[[Config], Awaitable[Story]],
        pool: asyncpg.Pool) -> None:
    config = config_of(clean, {"self_purchase": True, "binding_mode": "expiring",
                               "binding_valid_days": 7})
    await run(await story_of(config), PART_B_TABLE, pool)


# --- part C: latest share wins, self-purchase off --------------------------------------

async def carol_refused_inside_protection(s: Story) -> None:
    assert await s.bind("bob", "alice") == "ok"
    s.clock.advance(29 * MINUTE)  # inside alice's 30 minutes
    assert await s.bind("bob", "carol") == "already_bound"
    await s.buy("first", "bob")


async def carol_wins_after_protection(s: Story) -> None:
    s.clock.advance(2 * MINUTE)  # 31 minutes after alice's binding
    assert await s.bind("bob", "carol") == "ok"
    await s.buy("second", "bob")


PART_C_TABLE = [
    # Nobody brought alice in: level 1 only, 1234; self-purchase off, l1 earns nothing.
    Row("latest: protected binding earns alice", carol_refused_inside_protection,
        [("post", "shop:commission", -1234), ("post", "user:alice:pending", 1234)],
        {"alice": (1234, 0, 0, 0)}),
    # Past the protection, carol's share wins: the next order's 1234 is carol's.
    Row("latest: carol's share wins after protection", carol_wins_after_protection,
        [("post", "shop:commission", -1234), ("post", "user:carol:pending", 1234)],
        {"alice": (1234, 0, 0, 0), "carol": (1234, 0, 0, 0)}),
]


async def test_part_c_latest_share_wins_after_protection(
        clean: Services, story_of: Callable[[Config], Awaitable[Story]],
        pool: asyncpg.Pool) -> None:
    config = config_of(clean, {"binding_mode": "latest", "binding_protect_minutes": 30})
    await run(await story_of(config), PART_C_TABLE, pool)

