"""The real stack for a benchmark: Postgres, Redis, a Ray head, one `fission serve`.

Everything started here runs in its own process group and is stopped by that group only
(never `ray stop`, which would end every Ray process on the machine). Postgres and Redis
are the configured ones (`FISSION_DATABASE_URL`, `FISSION_REDIS_URL`) or embedded ones in
a temporary directory; the benchmark always works in its own database, `fission_bench`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from actors.routing import shard_of
from storage import db
from storage.embedded import Embedded, start_postgres, start_redis
from storage.migrate import DATA_TABLES, migrate
from tests.support import configs
from tests.support import stack as support_stack
from tests.support.stack import free_port, stop_group

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-secret-0123456789abcdef0123456789"
BENCH_DATABASE = "fission_bench"
STORM_CAMPAIGN = "bench-storm"
FAN_CAMPAIGN = "bench-fan"
STORM_SIZE = 5
FAN_SIZE = 50
DEAL_SIZE = 2  # the deal scenario: a leader and one friend, so every round is a deal


def _one_per_shard(prefix: str, shards: int) -> tuple[str, ...]:
    """Campaign ids `prefix-a`, `prefix-b`, ... the first of which lands on each shard."""
    found: dict[int, str] = {}
    for letter in "abcdefghijklmnopqrstuvwxyz":
        cid = f"{prefix}-{letter}"
        found.setdefault(shard_of(cid, shards), cid)
        if len(found) == shards:
            break
    return tuple(found[n] for n in sorted(found))


SHARDS = 2
DEAL_CAMPAIGNS = _one_per_shard("bench-deal", SHARDS)
ALL_CAMPAIGNS = (STORM_CAMPAIGN, FAN_CAMPAIGN, *DEAL_CAMPAIGNS)  # the group-buy campaigns
# The bargain scenario's one contended campaign, on the shard the storm is not on (so it
# carries none of the storms' state): its owner takes every help of the run.
BARGAIN_CAMPAIGN = next(c for c in _one_per_shard("bench-bargain", SHARDS)
                        if shard_of(c, SHARDS) != shard_of(STORM_CAMPAIGN, SHARDS))
HELPERS_TO_FLOOR = 100  # distinct helpers bring a bargain exactly to its floor
BARGAIN_LIST_PRICE = 10000  # fen
BARGAIN_FLOOR_PRICE = 1000  # fen
LIMITLESS = 10_000_000  # stock and per-user limits far above what a run uses

# The lottery scenario's one campaign. It runs on a Fission deployment of its own (its own
# Ray namespace and database, the same Ray head, Postgres server and Redis; see
# Stack.start_lottery): every paid order tells every running lottery (a draw per order),
# so in the main deployment each group-buy order of the other scenarios would also be a
# notice and a grant command to the lottery's owner, a load those scenarios never had.
LOTTERY_CAMPAIGN = "bench-lottery"
LOTTERY_DATABASE = "fission_bench_lottery"
# The most free draws a day the config takes (games.lottery.campaign.MAX_DRAWS): a user of
# the closed loop draws again at once, a few hundred times in a run.
LOTTERY_FREE_DRAWS = 1000
LOTTERY_ZONE = "Asia/Shanghai"  # the campaign's default zone; its days start at 00:00
# Weights out of 1000: the product (2%) sells out after ~2,500 draws, within the mall's
# first levels too (it makes a few thousand draws in a run; at 1% it had not by the end),
# the small coupon (9%) after ~22,000, in Fission's first levels; the big coupon and thanks
# never run out. No per-user cap: the mall's draw checks the daily count only.
LOTTERY_PRIZES: tuple[dict[str, Any], ...] = (
    {"id": "teapot", "title": "Clay teapot", "kind": "product", "sku": "BENCH-TEAPOT",
     "weight": 20, "stock": 50},
    {"id": "coupon-5", "title": "5 yuan off", "kind": "coupon", "coupon": "BENCH-FIVE",
     "weight": 90, "stock": 2000},
    {"id": "coupon-1", "title": "1 yuan off", "kind": "coupon", "coupon": "BENCH-ONE",
     "weight": 300, "stock": LIMITLESS},
    {"id": "thanks", "title": "谢谢参与", "kind": "thanks", "weight": 590},
)


# The held-seat scenario's one group-buy campaign, on a deployment of its own too (its own
# Ray namespace and database): its `[pipeline] sandbox_pays` is "on_request", so an open
# only holds the leader's seat until its hold lapses, unpaid (the main deployment's
# sandbox pays within the join). Stock and groups led are far above the holds made.
HOLDS_CAMPAIGN = "bench-holds"
HOLDS_DATABASE = "fission_bench_holds"
HOLDS_GROUP_SIZE = 2  # never reached: no leader pays, so no group opens to others
HOLDS_TIME_LIMIT = 3600  # s: a group's deadline far after its leader's hold ends

# The leaderboard scenario's deployment (its own Ray namespace and database, like the
# lottery's): a board of referred sales over all time, for everyone, shown on homepage
# sockets, and size-2 group-buys (one per shard) whose buyers are all bound to one of
# BOARD_SELLERS sellers, so every deal moves the board. A deployment of its own because
# every paid order of a shop is a notice to each running board: in the main deployment
# each order of the other scenarios (the storms' tens of thousands) would be one more
# notice written by the pipeline and one more command for the board's owner, a load the
# figures recorded for those scenarios never had.
BOARD = "bench-board"
BOARDS_DATABASE = "fission_bench_boards"
BOARD_RANKS = 10  # the homepage's top 10
# No more sellers than ranks: every score change shows on the board, so every deal's
# lag can be measured on it.
BOARD_SELLERS = tuple(f"bseller-{n}" for n in range(BOARD_RANKS))
BOARD_DEAL_CAMPAIGNS = _one_per_shard("bench-bdeal", SHARDS)

# The pipeline mix (the deal scenario's third run): size-2 group-buys (one per shard)
# paced at the pipeline target's rate while buyers refund orders in pieces and a
# marketer refunds settled ones, on a deployment of its own (its own Ray namespace and
# database, like the lottery's) whose return window ends within the run (MIX_WINDOW_*:
# commissions settle, and grades are judged, while deals flow) and whose distributors
# have grades (MIX_GRADES). A deployment of its own so the main deployment's figures keep
# their 30-day window: nothing there settles during the other scenarios.
MIX_DATABASE = "fission_bench_mix"
MIX_CAMPAIGNS = _one_per_shard("bench-mix", SHARDS)
MIX_PRICE = 6000  # fen: configs.campaign's group price
# Grades lowest first (the highest level-1 plus level-2 rates fit in an order). Silver
# after three settled level-1 orders (a team leader, whose friend buys every round,
# reaches it seconds into settlement, in the smoke run too); gold asks for the volume
# and direct buyers only a sharer (who brought several leaders in) reaches in a full run.
MIX_GRADES: tuple[dict[str, Any], ...] = (
    {"id": "normal", "title": "普通", "level1_bps": 1000, "level2_bps": 300},
    {"id": "silver", "title": "银牌", "level1_bps": 1500, "level2_bps": 400,
     "min_settled_sales_month_fen": 3 * MIX_PRICE},
    {"id": "gold", "title": "金牌", "level1_bps": 2000, "level2_bps": 500,
     "min_settled_sales_month_fen": 300 * MIX_PRICE, "min_direct_buyers": 4,
     "match": "all"},
)


def ray_env() -> dict[str, str]:
    """What a local-only Ray head and its drivers need, with this checkout importable."""
    env = support_stack.ray_env()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclass
class Process(support_stack.Gateway):
    """A server process this benchmark started (leader of its own process group)."""

    name: str = "server"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_text()[-chars:]


def spawn(name: str, args: list[str], tmp: Path, port: int,
          env: dict[str, str] | None = None) -> Process:
    """Start `python args...` in its own session, logging to `tmp/name.log`."""
    log_path = tmp / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                                env=env or ray_env(), start_new_session=True, cwd=ROOT)
    return Process(port, proc, log_path, name)


async def wait_http(process: Process, timeout: float = 90.0) -> None:
    """Poll `/healthz` until it answers 200 (the process's own readiness signal)."""
    await support_stack.wait_healthy(process, timeout)


@contextmanager
def services(tmp: Path) -> Iterator[tuple[str, str]]:
    """(database URL of `fission_bench`, Redis URL): configured or embedded in `tmp`."""
    database_url = os.environ.get("FISSION_DATABASE_URL")
    redis_url = os.environ.get("FISSION_REDIS_URL")
    embedded = Embedded()
    try:
        if not database_url:
            database_url = start_postgres(tmp / "svc", embedded, database=BENCH_DATABASE)
        if not redis_url:
            redis_url = start_redis(tmp / "svc", embedded)
        yield db.with_database(database_url, BENCH_DATABASE), redis_url
    finally:
        embedded.stop()


async def prepare_database(database_url: str) -> None:
    """Create and migrate the bench database; empty Fission's tables (the bench owns it)."""
    await db.ensure_database(database_url)
    conn = await db.connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY")
    finally:
        await conn.close()


# The gateway's settings in every bench deployment.
# The config caps both rates at 10 000: far above what one bench socket sends. Every load
# socket comes from 127.0.0.1 (no cap per address), and idle sockets are held through the
# run without a frame.
SERVER = {"frames_per_second": 10000, "frame_burst": 10000, "send_queue": 4096,
          "max_sockets_per_ip": 0, "max_sockets_per_user": 10000,
          "idle_timeout_seconds": 3600}


def config_document(database_url: str, redis_url: str, ray_address: str, namespace: str,
                    data_dir: Path) -> dict[str, Any]:
    """The gateway's config: the bench campaigns, stock and limits out of the way.

    The bargain campaign's stock and limits are raised too (bargains started per user,
    helps per user a day and per campaign): a run measures contention, not refusals.
    """
    campaigns = [
        configs.campaign(cid, size=size, stock=LIMITLESS, led=LIMITLESS, joined=LIMITLESS)
        for cid, size in ((STORM_CAMPAIGN, STORM_SIZE), (FAN_CAMPAIGN, FAN_SIZE),
                          *((cid, DEAL_SIZE) for cid in DEAL_CAMPAIGNS))
    ]
    campaigns.append(configs.bargain(
        BARGAIN_CAMPAIGN, helpers=HELPERS_TO_FLOOR, stock=LIMITLESS,
        list_price=BARGAIN_LIST_PRICE, floor_price=BARGAIN_FLOOR_PRICE, started=LIMITLESS,
        per_day=LIMITLESS, per_campaign=LIMITLESS))
    doc = configs.document(
        campaigns, shards=SHARDS, namespace=namespace, database_url=database_url,
        redis_url=redis_url, ray_address=ray_address, data_dir=str(data_dir),
        server=dict(SERVER))
    doc["auth"]["secret"] = SECRET
    return doc


def lottery_config_document(database_url: str, redis_url: str, ray_address: str,
                            namespace: str, data_dir: Path) -> dict[str, Any]:
    """The lottery deployment's config: the bench lottery alone, the same server settings
    and shard count as the main deployment's."""
    campaign = configs.lottery(LOTTERY_CAMPAIGN, free=LOTTERY_FREE_DRAWS,
                               prizes=[dict(p) for p in LOTTERY_PRIZES],
                               time_zone=LOTTERY_ZONE)
    doc = configs.document(
        [campaign], shards=SHARDS, namespace=namespace, database_url=database_url,
        redis_url=redis_url, ray_address=ray_address, data_dir=str(data_dir),
        server=dict(SERVER))
    doc["auth"]["secret"] = SECRET
    return doc


def holds_config_document(database_url: str, redis_url: str, ray_address: str,
                          namespace: str, data_dir: Path, hold_seconds: int
                          ) -> dict[str, Any]:
    """The held-seat deployment's config: the holds campaign alone, paid for at the join
    and held `hold_seconds` (long enough that every hold is pending at once), the sandbox
    paying only on request (never, in the scenario); the main deployment's server
    settings and shard count."""
    campaign = configs.campaign(HOLDS_CAMPAIGN, size=HOLDS_GROUP_SIZE, stock=LIMITLESS,
                                time_limit=HOLDS_TIME_LIMIT, led=LIMITLESS,
                                joined=LIMITLESS, pay=True, pay_within=hold_seconds)
    doc = configs.document(
        [campaign], shards=SHARDS, namespace=namespace, database_url=database_url,
        redis_url=redis_url, ray_address=ray_address, data_dir=str(data_dir),
        server=dict(SERVER))
    doc["auth"]["secret"] = SECRET
    doc["pipeline"] = {**doc["pipeline"], "sandbox_pays": "on_request"}
    return doc


def boards_config_document(database_url: str, redis_url: str, ray_address: str,
                           namespace: str, data_dir: Path) -> dict[str, Any]:
    """The boards deployment's config: its deal campaigns and the board (see BOARD), the
    main deployment's server settings and shard count."""
    campaigns = [configs.campaign(cid, size=DEAL_SIZE, stock=LIMITLESS, led=LIMITLESS,
                                  joined=LIMITLESS) for cid in BOARD_DEAL_CAMPAIGNS]
    campaigns.append({"id": BOARD, "kind": "leaderboard", "title": "带货总榜",
                      "metric": "sales", "period": "all", "scope": "everyone",
                      "ranks": BOARD_RANKS, "starts_at": "2020-01-01T00:00:00+00:00",
                      "ends_at": "2099-01-01T00:00:00+00:00"})
    doc = configs.document(
        campaigns, shards=SHARDS, namespace=namespace, database_url=database_url,
        redis_url=redis_url, ray_address=ray_address, data_dir=str(data_dir),
        server=dict(SERVER))
    doc["auth"]["secret"] = SECRET
    return doc


def mix_config_document(database_url: str, redis_url: str, ray_address: str,
                        namespace: str, data_dir: Path, window_seconds: int
                        ) -> dict[str, Any]:
    """The pipeline mix's config: its deal campaigns, the grades, a return window of
    `window_seconds` (see MIX_CAMPAIGNS); the main deployment's server settings and
    shard count."""
    campaigns = [configs.campaign(cid, size=DEAL_SIZE, stock=LIMITLESS, led=LIMITLESS,
                                  joined=LIMITLESS) for cid in MIX_CAMPAIGNS]
    doc = configs.document(
        campaigns, shards=SHARDS, namespace=namespace, database_url=database_url,
        redis_url=redis_url, ray_address=ray_address, data_dir=str(data_dir),
        server=dict(SERVER))
    doc["auth"]["secret"] = SECRET
    doc["commission"] = {"return_window_seconds": window_seconds,
                         "grades": [dict(g) for g in MIX_GRADES]}
    return doc


@dataclass
class Stack:
    """What `python -m bench` runs against; `close()` stops what it started."""

    tmp: Path
    database_url: str
    redis_url: str
    gateways: list[Process] = field(default_factory=list)
    others: list[Process] = field(default_factory=list)
    lottery_gateways: list[Process] = field(default_factory=list)
    holds_gateways: list[Process] = field(default_factory=list)
    boards_gateways: list[Process] = field(default_factory=list)
    mix_gateways: list[Process] = field(default_factory=list)

    @property
    def lottery_database_url(self) -> str:
        """The lottery deployment's database, on the same Postgres server."""
        return db.with_database(self.database_url, LOTTERY_DATABASE)

    @property
    def holds_database_url(self) -> str:
        """The held-seat deployment's database, on the same Postgres server."""
        return db.with_database(self.database_url, HOLDS_DATABASE)

    @property
    def mix_database_url(self) -> str:
        """The pipeline mix's database, on the same Postgres server."""
        return db.with_database(self.database_url, MIX_DATABASE)

    @property
    def boards_database_url(self) -> str:
        """The boards deployment's database, on the same Postgres server."""
        return db.with_database(self.database_url, BOARDS_DATABASE)

    def start_gateways(self, ray_address: str, count: int) -> list[Process]:
        """`count` `fission serve` processes with the bench config, each on a free port.

        They share the Ray head, Postgres and Redis, as gateways behind a load balancer
        do (returns at once; wait for each to be healthy).
        """
        doc = config_document(self.database_url, self.redis_url, ray_address,
                              f"bench{os.getpid()}", self.tmp / "data")
        path = self.tmp / "bench.toml"
        path.write_text(configs.to_toml(doc))
        for n in range(count):
            port = free_port()
            self.gateways.append(spawn(f"gateway{n}", [
                "-m", "server.cli", "serve", "--config", str(path), "--port", str(port)],
                self.tmp, port))
        return self.gateways

    def _start_side(self, name: str, doc: dict[str, Any], into: list[Process]) -> Process:
        """One `fission serve` of a deployment of its own (its own Ray namespace, so its
        own shard and pipeline actors, and its own database: create that with
        `prepare_database` first), its config `doc`; kept in `into`. Returns at once."""
        path = self.tmp / f"bench-{name}.toml"
        path.write_text(configs.to_toml(doc))
        port = free_port()
        gateway = spawn(f"{name}-gateway{len(into)}", [
            "-m", "server.cli", "serve", "--config", str(path), "--port", str(port)],
            self.tmp, port)
        into.append(gateway)
        return gateway

    @staticmethod
    def _stop_side(gateways: list[Process]) -> None:
        """Stop a side deployment's gateways (its detached actors idle on until the Ray
        head stops with the run)."""
        for process in gateways:
            stop_group(process.proc, 10)
        gateways.clear()

    def start_lottery(self, ray_address: str) -> Process:
        """The lottery deployment's gateway (see LOTTERY_CAMPAIGN)."""
        return self._start_side("lottery", lottery_config_document(
            self.lottery_database_url, self.redis_url, ray_address,
            f"bench{os.getpid()}lottery", self.tmp / "data-lottery"), self.lottery_gateways)

    def start_holds(self, ray_address: str, hold_seconds: int) -> Process:
        """The held-seat deployment's gateway (see HOLDS_CAMPAIGN)."""
        return self._start_side("holds", holds_config_document(
            self.holds_database_url, self.redis_url, ray_address, f"bench{os.getpid()}holds",
            self.tmp / "data-holds", hold_seconds), self.holds_gateways)

    def start_boards(self, ray_address: str) -> Process:
        """The boards deployment's gateway (see BOARD)."""
        return self._start_side("boards", boards_config_document(
            self.boards_database_url, self.redis_url, ray_address,
            f"bench{os.getpid()}boards", self.tmp / "data-boards"), self.boards_gateways)

    def start_mix(self, ray_address: str, window_seconds: int) -> Process:
        """The pipeline mix's gateway (see MIX_CAMPAIGNS)."""
        return self._start_side("mix", mix_config_document(
            self.mix_database_url, self.redis_url, ray_address, f"bench{os.getpid()}mix",
            self.tmp / "data-mix", window_seconds), self.mix_gateways)

    def stop_mix(self) -> None:
        """Stop the pipeline mix's gateways."""
        self._stop_side(self.mix_gateways)

    def stop_boards(self) -> None:
        """Stop the boards deployment's gateways."""
        self._stop_side(self.boards_gateways)

    def stop_holds(self) -> None:
        """Stop the held-seat deployment's gateways."""
        self._stop_side(self.holds_gateways)

    def stop_lottery(self) -> None:
        """Stop the lottery deployment's gateways."""
        self._stop_side(self.lottery_gateways)

    def start(self, name: str, args: list[str]) -> Process:
        """Another server process (baseline or raw), given `--port` as its last argument."""
        port = free_port()
        process = spawn(name, [*args, "--port", str(port)], self.tmp, port)
        self.others.append(process)
        return process

    def stop(self, process: Process) -> None:
        stop_group(process.proc, 10)
        if process in self.others:
            self.others.remove(process)

    def close(self) -> None:
        for process in [*self.others, *self.gateways, *self.lottery_gateways,
                        *self.holds_gateways, *self.boards_gateways, *self.mix_gateways]:
            stop_group(process.proc, 10)
        self.others.clear()
        self.gateways.clear()
        self.lottery_gateways.clear()
        self.holds_gateways.clear()
        self.boards_gateways.clear()
        self.mix_gateways.clear()


async def pg(database_url: str) -> asyncpg.Connection:
    """A plain connection to the bench database."""
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    return conn
