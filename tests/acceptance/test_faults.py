"""Faults: Redis or Postgres restarted mid-storm, a gateway killed, a foreign Ray around.

Each storm test runs a deployment of its own (`fission serve` gateways in a namespace of
their own on the session's Ray head, a database of their own) and owns the service it
breaks (a Redis server, a Postgres cluster), whatever FISSION_DATABASE_URL or
FISSION_REDIS_URL say: the session's shared services are never restarted. The foreign-Ray
tests start the embedded default beside a Ray head of their own, under a private
RAY_TMPDIR, so the machine's real /tmp/ray is never read or written.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import psutil
import pytest
import redis.asyncio as aioredis

from server.hub import Hub
from storage.live import Live, LiveEvent
from tests.support import configs
from tests.support.client import auth, get, post
from tests.support.faults import (
    PostgresServer,
    Recorder,
    RedisServer,
    Watcher,
    fault_env,
    kill_group,
    kill_tree,
    named_actors,
    own_database,
    remove_namespace,
    stored_groups,
    throwaway_ray_head,
)
from tests.support.services import Services, prepare
from tests.support.stack import (
    Gateway,
    start_gateway,
    stop_group,
    wait_healthy,
    write_config,
)

pytestmark = pytest.mark.acceptance

PACE = 0.03  # seconds between joiners of a storm (they overlap: each takes a few ms)
RETRY_PAUSE = 0.2  # a client's pause before retrying an `unavailable` with its key
ANSWER_WITHIN = 45.0  # seconds a storm's client keeps retrying before the test fails


def _document(tmp: Path, campaign: dict[str, Any], database_url: str, redis_url: str,
              ray_address: str) -> dict[str, Any]:
    return configs.document([campaign], shards=1, namespace=f"f{uuid.uuid4().hex[:8]}",
                            database_url=database_url, redis_url=redis_url,
                            ray_address=ray_address, data_dir=str(tmp / "data"))


@contextlib.asynccontextmanager
async def _gateways(tmp: Path, doc: dict[str, Any], env: dict[str, str],
                    count: int) -> AsyncIterator[list[Gateway]]:
    """`count` gateways of one deployment, started together (the actors are created once:
    get_if_exists); at the end, stopped, and the deployment's actors removed from the
    shared Ray head."""
    path = write_config(tmp, doc)
    started = [start_gateway(path, tmp, env=env) for _ in range(count)]
    try:
        await asyncio.gather(*(wait_healthy(g) for g in started))
        yield started
    finally:
        for gateway in started:
            stop_group(gateway.proc, 10)
        await asyncio.to_thread(remove_namespace, doc["ray"]["address"],
                                doc["ray"]["namespace"])


async def _health(session: aiohttp.ClientSession, gateway: Gateway) -> int:
    with contextlib.suppress(aiohttp.ClientError):
        async with session.get(gateway.url + "/healthz") as resp:
            return resp.status
    return 0


async def _until_health(session: aiohttp.ClientSession, gateways: list[Gateway],
                        status: int, timeout: float) -> None:
    """Poll every gateway's /healthz until each answers `status`."""
    deadline = time.monotonic() + timeout
    while True:
        seen = await asyncio.gather(*(_health(session, g) for g in gateways))
        if all(s == status for s in seen):
            return
        assert time.monotonic() < deadline, f"/healthz {seen}, waiting for {status}"
        await asyncio.sleep(0.2)  # polling another process's view of its services


async def _open(session: aiohttp.ClientSession, gateway: Gateway, campaign: str,
                leaders: list[str]) -> list[dict[str, Any]]:
    opened = await asyncio.gather(*(
        post(session, f"{gateway.url}/api/groupbuys/{campaign}/groups", u) for u in leaders))
    assert all(status == 201 for status, _ in opened), opened
    return [body["group"] for _, body in opened]


async def _until_answered(session: aiohttp.ClientSession, url: str, user: str, key: str,
                          statuses: Counter[int]) -> tuple[int, dict[str, Any]]:
    """POST with an idempotency key, retrying while the answer is `unavailable` (what a
    client does); every status seen is counted."""
    deadline = time.monotonic() + ANSWER_WITHIN
    while True:
        try:
            status, body = await post(session, url, user, key=key)
        except aiohttp.ClientError:
            status, body = 0, {}  # the connection itself failed: retry as for a 503
        statuses[status] += 1
        if status not in (0, 503):
            return status, body
        assert time.monotonic() < deadline, f"{user} never got an answer"
        await asyncio.sleep(RETRY_PAUSE)  # client back-off


def _topic(campaign: str, gid: str) -> str:
    return f"groupbuy:{campaign}:{gid}"


async def _current(session: aiohttp.ClientSession, gateway: Gateway, campaign: str,
                   gids: list[str]) -> dict[str, dict[str, Any]]:
    """Each group as the API reads it now."""
    found = {}
    for gid in gids:
        status, body = await get(session, f"{gateway.url}/api/groupbuys/{campaign}/groups/{gid}",
                                 "f-reader")
        assert status == 200, body
        found[gid] = body["group"]
    return found


def _assert_in_step(watchers: list[Watcher], campaign: str,
                    groups: dict[str, dict[str, Any]]) -> None:
    """Every watcher holds every group exactly as the API has it, with no seq skipped or
    repeated on the way."""
    for watcher in watchers:
        assert watcher.errors == []
        for gid, group in groups.items():
            view = watcher.views[_topic(campaign, gid)]
            assert view.problems == [], view.problems
            assert view.seq == group["seq"] and view.group == group, (view, group)


# --- Redis -------------------------------------------------------------------------------

# Redis stays down this long: beyond redis-py's own retries (about 2-4 s), so the gateways'
# subscriptions really drop and the owner's publishes really fail, as in a real restart.
REDIS_OUTAGE = 8.0


async def test_redis_restart_mid_storm_loses_nothing_and_live_events_resume(
        migrated: Services, ray_address: str, tmp_path: Path) -> None:
    campaign = "rfault"
    database_url = await own_database(migrated, "fission_fault_redis")
    own_redis = RedisServer(tmp_path / "redis")
    own_redis.start()
    try:
        doc = _document(tmp_path, configs.campaign(campaign, size=11, stock=100_000),
                        database_url, own_redis.url, ray_address)
        async with _gateways(tmp_path, doc, fault_env(database_url, own_redis.url),
                             2) as gw, aiohttp.ClientSession() as session:
            await _redis_storm(session, gw, own_redis, database_url, campaign)
    finally:
        own_redis.stop()


async def _redis_storm(session: aiohttp.ClientSession, gw: list[Gateway],
                       own_redis: RedisServer, database_url: str, campaign: str) -> None:
    opened = await _open(session, gw[0], campaign, [f"rl{i}" for i in range(8)])
    gids = [g["id"] for g in opened]
    # Quiet groups get no command once the outage is a second old: nothing after it would
    # show their watchers a gap, so only events published late (once Redis is back) bring
    # them up to date. Busy groups get commands throughout and after.
    quiet, busy = gids[:4], gids[4:]
    topics = [_topic(campaign, gid) for gid in gids]
    # Two watchers on each gateway, each watching every group.
    watchers = [await Watcher.connect(gw[i % 2].ws_url, f"rw{i}") for i in range(4)]
    for watcher in watchers:
        for topic in topics:
            await watcher.subscribe(topic)
    for watcher in watchers:
        await watcher.until(dict.fromkeys(topics, 1), timeout=15)
    statuses: Counter[int] = Counter()
    acked: dict[str, str] = {}
    turn = itertools.count()  # joins alternate between the gateways

    async def join(user: str, gid: str) -> None:
        url = f"{gw[next(turn) % 2].url}/api/groupbuys/{campaign}/groups/{gid}/join"
        status, body = await _until_answered(session, url, user, f"k-{user}", statuses)
        assert status == 200, body
        acked[user] = gid

    async def launch(phase: str, rounds: int, among: list[str],
                     pace: float) -> list[asyncio.Task[None]]:
        started = []
        for n in range(rounds):
            for gid in among:
                user = f"r{phase}{n}-{gids.index(gid)}"
                started.append(asyncio.create_task(join(user, gid)))
                await asyncio.sleep(pace)  # pacing the storm
        return started

    before = await launch("a", 2, gids, PACE)
    own_redis.kill()
    killed_at = time.monotonic()
    early = await launch("b", 3, gids, PACE)
    await _until_health(session, gw, 503, timeout=20)  # both gateways see it is gone
    pace = max(PACE, (killed_at + REDIS_OUTAGE - time.monotonic()) / (2 * len(busy)))
    launching = asyncio.create_task(launch("c", 2, busy, pace))
    # A client subscribing late in the outage is served once Redis is back (its
    # subscription waits up to 10 s for Redis to confirm: this one waits about 4).
    await asyncio.sleep(max(0.0, killed_at + REDIS_OUTAGE - 3 - time.monotonic()))  # pacing
    late = await Watcher.connect(gw[0].ws_url, "rw-late")
    for topic in topics:
        await late.subscribe(topic)
    during = await launching
    await asyncio.gather(*before, *early, *during)  # acknowledged while Redis is down
    assert len(acked) == 5 * len(gids) + 2 * len(busy)
    await asyncio.sleep(max(0.0, killed_at + REDIS_OUTAGE - time.monotonic()))  # pacing
    await asyncio.to_thread(own_redis.start)  # the same port again
    after = await launch("d", 2, busy, PACE)
    await asyncio.gather(*after)
    assert set(statuses) <= {200, 503}, statuses
    await _until_health(session, gw, 200, timeout=20)  # both gateways reconnected
    watchers.append(late)

    # Every watcher catches up from its own seq (the quiet groups' with no later event
    # to show them a gap).
    now = await _current(session, gw[1], campaign, gids)
    for watcher in watchers:
        await watcher.until({_topic(campaign, g): now[g]["seq"] for g in gids}, timeout=20)
    _assert_in_step(watchers, campaign, now)

    # Live events flow again: one more join into each group fills the busy ones (joined,
    # completed, deal), and every watcher gets them as events, through either gateway.
    snapshots = {t: [w.views[t].snapshots for w in watchers] for t in topics}
    last = await asyncio.gather(*(
        post(session, f"{gw[i % 2].url}/api/groupbuys/{campaign}/groups/{gid}/join",
             f"rz{i}") for i, gid in enumerate(gids)))
    assert all(status == 200 for status, _ in last), last
    done = await _current(session, gw[0], campaign, gids)
    assert all(done[g]["status"] == "completed" for g in busy), done
    assert all(done[g]["seq"] == now[g]["seq"] + 1 for g in quiet), done
    for watcher in watchers:
        await watcher.until({_topic(campaign, g): done[g]["seq"] for g in gids}, timeout=15)
    _assert_in_step(watchers, campaign, done)
    assert {t: [w.views[t].snapshots for w in watchers] for t in topics} == snapshots
    for watcher in watchers:
        await watcher.close()

    stored = await stored_groups(database_url, campaign)
    for user, gid in acked.items():
        assert user in stored[gid]["members"], f"acknowledged join of {user} lost"


async def test_hub_hands_on_what_was_published_while_redis_was_away(tmp_path: Path) -> None:
    # One gateway's hub, in process, on a Redis of its own: what its watchers get when
    # Redis restarts under them, whichever of the hub and a publisher reconnects first.
    own_redis = RedisServer(tmp_path / "redis")
    own_redis.start()
    hub_client = aioredis.from_url(own_redis.url)
    publisher = aioredis.from_url(own_redis.url)
    hub = Hub(hub_client)
    await hub.start()
    try:
        live = Live(publisher, 50, 60)
        watched, asked_late = "groupbuy:h:g1", "groupbuy:h:g2"
        watcher, late = Recorder(), Recorder()
        hub.add(watched, watcher)
        await hub.subscribed(watched)
        await live.publish([LiveEvent(watched, 1, {"type": "x"})])
        await watcher.until({1}, timeout=10)
        own_redis.kill()
        hub.add(asked_late, late)  # a socket subscribes while Redis is away
        await asyncio.to_thread(own_redis.start)
        # Published at once: most likely before the hub has subscribed again, so these
        # reach it only through the topic's history.
        await live.publish([LiveEvent(watched, 2, {"type": "x"}),
                            LiveEvent(watched, 3, {"type": "x"})])
        await live.publish([LiveEvent(watched, 3, {"type": "x"})])  # a retried call
        await watcher.until({2, 3}, timeout=15)
        await hub.subscribed(asked_late, timeout=15)
        await live.publish([LiveEvent(asked_late, 1, {"type": "x"})])
        await late.until({1}, timeout=10)
        # History holds each seq once; the watcher may be handed one twice (live, then
        # from history) and skips what it has, as a socket does.
        assert [f["seq"] for f in await live.history(watched)] == [1, 2, 3]
        assert set(watcher.seqs) == {1, 2, 3} and late.seqs == [1]
    finally:
        await hub.stop()
        await hub_client.aclose()
        await publisher.aclose()
        own_redis.stop()


# --- Postgres ----------------------------------------------------------------------------

async def test_postgres_restart_mid_storm_answers_unavailable_then_recovers(
        migrated: Services, ray_address: str, tmp_path: Path) -> None:
    campaign, size, groups_n = "pfault", 5, 30
    own_pg = PostgresServer(tmp_path)
    try:
        database_url = own_pg.start("fission")
        await prepare(Services(database_url, migrated.redis_url, external=False))
        doc = _document(tmp_path, configs.campaign(campaign, size=size, stock=100_000),
                        database_url, migrated.redis_url, ray_address)
        async with _gateways(tmp_path, doc, fault_env(database_url, migrated.redis_url),
                             1) as gw, aiohttp.ClientSession() as session:
            await _postgres_storm(session, gw[0], own_pg, database_url, campaign, size,
                                  groups_n)
    finally:
        own_pg.stop()


async def _postgres_storm(session: aiohttp.ClientSession, gateway: Gateway,
                          own_pg: PostgresServer, database_url: str, campaign: str,
                          size: int, groups_n: int) -> None:
    opened = await _open(session, gateway, campaign, [f"pl{i}" for i in range(groups_n)])
    gids = [g["id"] for g in opened]
    plan = [(f"pj{g}-{n}", gid) for n in range(size - 1) for g, gid in enumerate(gids)]
    crash_at, hold_at = len(plan) // 4, 3 * len(plan) // 4
    statuses: Counter[int] = Counter()
    read_statuses: dict[str, tuple[int, str]] = {}
    acked: dict[str, str] = {}

    async def join(user: str, gid: str) -> None:
        url = f"{gateway.url}/api/groupbuys/{campaign}/groups/{gid}/join"
        status, body = await _until_answered(session, url, user, f"k-{user}", statuses)
        assert status == 200, body
        acked[user] = gid

    async def restart_postgres() -> None:
        # Down until the owner has answered `unavailable` a few times (it lost its
        # database mid-commit, and Ray restarted it into a rebuild that cannot connect).
        deadline = time.monotonic() + 20
        while statuses[503] < 5:
            assert time.monotonic() < deadline, f"no `unavailable` while down: {statuses}"
            await asyncio.sleep(0.05)  # polling the storm's progress
        # Reads of the read model, the orders and the ledger say `unavailable` too.
        for path in (f"/api/groupbuys/{campaign}/groups/{gids[0]}", "/api/orders",
                     "/api/commissions", "/api/referrals"):
            async with session.get(gateway.url + path, headers=auth("p-reader")) as resp:
                read_statuses[path] = (resp.status, (await resp.json())["error"]["code"])
        await asyncio.to_thread(own_pg.restart)

    tasks: list[asyncio.Task[None]] = []
    restarter: asyncio.Task[None] | None = None
    for index, (user, gid) in enumerate(plan):
        if index == crash_at:
            await asyncio.to_thread(own_pg.crash)
            restarter = asyncio.create_task(restart_postgres())
        if index == hold_at:
            assert restarter is not None
            await restarter  # the last quarter of the storm runs against the new Postgres
        tasks.append(asyncio.create_task(join(user, gid)))
        await asyncio.sleep(PACE)  # pacing the storm
    await asyncio.gather(*tasks)
    # Meanwhile: `unavailable` (503), never an internal error; afterwards every client's
    # retry with its key was answered, and every group filled.
    assert set(statuses) <= {200, 503} and statuses[503] >= 5, statuses
    assert set(read_statuses.values()) == {(503, "unavailable")}, read_statuses
    assert len(acked) == len(plan)

    stored = await stored_groups(database_url, campaign)
    for user, gid in acked.items():
        assert user in stored[gid]["members"], f"acknowledged join of {user} lost"
    assert all(g["status"] == "completed" and len(g["members"]) == size
               for g in stored.values())
    # The same key again is the same answer (the rebuilt owner remembers it).
    user, gid = next(iter(acked.items()))
    status, again = await post(
        session, f"{gateway.url}/api/groupbuys/{campaign}/groups/{gid}/join", user,
        key=f"k-{user}")
    assert status == 200 and user in again["group"]["members"]
    # New commands succeed, and the pipeline turned every deal into orders.
    status, body = await post(session, f"{gateway.url}/api/groupbuys/{campaign}/groups",
                              "p-after")
    assert status == 201, body
    await _until_orders(database_url, groups_n * size, timeout=30)


async def _until_orders(database_url: str, expected: int, timeout: float) -> None:
    """Poll until the pipeline has drained the outbox into `expected` orders of completed
    deals (a seat paid makes its order at once; it is confirmed when its deal is done)."""
    deadline = time.monotonic() + timeout
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            pending = await conn.fetchval(
                "SELECT count(*) FROM outbox WHERE processed_at IS NULL")
            orders = await conn.fetchval(
                "SELECT count(*) FROM orders WHERE confirmed_at IS NOT NULL")
            if pending == 0 and orders == expected:
                return
            assert time.monotonic() < deadline, (pending, orders, expected)
            await asyncio.sleep(0.2)  # polling the pipeline actor's progress
    finally:
        await conn.close()


# --- a gateway killed ----------------------------------------------------------------------

async def test_clients_of_a_killed_gateway_resume_on_the_other_with_after(
        migrated: Services, ray_address: str, tmp_path: Path) -> None:
    campaign, groups_n = "gfault", 4
    database_url = await own_database(migrated, "fission_fault_gateway")
    doc = _document(tmp_path, configs.campaign(campaign, size=10, stock=1000),
                    database_url, migrated.redis_url, ray_address)
    async with _gateways(tmp_path, doc, fault_env(database_url, migrated.redis_url),
                         2) as gw, aiohttp.ClientSession() as session:
        doomed, other = gw
        opened = await _open(session, other, campaign, [f"gl{i}" for i in range(groups_n)])
        gids = [g["id"] for g in opened]
        topics = [_topic(campaign, gid) for gid in gids]
        watchers = [await Watcher.connect(doomed.ws_url, f"gw{i}") for i in range(4)]
        for watcher in watchers:
            for topic in topics:
                await watcher.subscribe(topic)
        for watcher in watchers:
            await watcher.until(dict.fromkeys(topics, 1), timeout=15)

        async def joins(round_: int, count: int) -> dict[str, dict[str, Any]]:
            """`count` joins into each group through the surviving gateway."""
            answers = await asyncio.gather(*(
                post(session, f"{other.url}/api/groupbuys/{campaign}/groups/{gid}/join",
                     f"gj{round_}-{g}-{n}")
                for n in range(count) for g, gid in enumerate(gids)))
            assert all(status == 200 for status, _ in answers), answers
            return await _current(session, other, campaign, gids)

        now = await joins(0, 2)
        for watcher in watchers:
            await watcher.until({_topic(campaign, g): now[g]["seq"] for g in gids}, 15)
        kill_group(doomed.proc.pid)  # SIGKILL: no close frame, no goodbye
        for watcher in watchers:
            await asyncio.wait_for(watcher.closed.wait(), 15)
        missed = await joins(1, 3)  # while its clients are away
        assert doomed.proc.wait(10) == -signal.SIGKILL
        # Each client reconnects to the other gateway and resumes after its last seq.
        back = [await Watcher.connect(other.ws_url, f"gw{i}", w.views)
                for i, w in enumerate(watchers)]
        for watcher in back:
            for topic in topics:
                await watcher.subscribe(topic)
        for watcher in back:
            await watcher.until({_topic(campaign, g): missed[g]["seq"] for g in gids}, 15)
        _assert_in_step(back, campaign, missed)
        live = await joins(2, 2)  # then live ones
        for watcher in back:
            await watcher.until({_topic(campaign, g): live[g]["seq"] for g in gids}, 15)
        _assert_in_step(back, campaign, live)
        for watcher in back:
            for topic in topics:
                view = watcher.views[topic]
                # The snapshot of the first subscribe, then nothing but events: the
                # missed ones exactly once each (resume), then the live ones.
                assert view.snapshots == 1 and view.events == live[
                    topic.rsplit(":", 1)[1]]["seq"] - 1, view
            await watcher.close()


# --- a foreign Ray on the machine ---------------------------------------------------------

@pytest.fixture
def ray_tmpdir() -> Iterator[str]:
    """A private stand-in for the machine's /tmp: the Ray temp folder (/tmp/ray) and its
    `ray_current_cluster` of every process given RAY_TMPDIR=it, so the machine's real
    /tmp/ray (other Ray users') is never read or touched."""
    folder = tempfile.mkdtemp(prefix="fxr-", dir="/tmp")  # short: Ray's socket paths
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _embedded_env(ray_tmpdir: str, ray_address: str | None = None) -> dict[str, str]:
    """`fission serve` on its embedded default (no FISSION_* override), on a machine whose
    last `ray start` is recorded under `ray_tmpdir`; RAY_ADDRESS names one when given."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FISSION_") and k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = ray_tmpdir
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return env


# Ray's own processes named `ray::...` (agents, workers waiting for a task): any other is
# a worker hosting an actor, named after its class.
RAY_OWN = frozenset({"ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::IDLE"})


def _actor_workers(pid: int) -> list[str]:
    """The actor workers (`ray::<actor class>`) descending from process `pid`."""
    found = []
    for child in psutil.Process(pid).children(recursive=True):
        with contextlib.suppress(psutil.Error, IndexError):
            name = child.cmdline()[0]
            if name.startswith("ray::") and name not in RAY_OWN:
                found.append(name)
    return found


async def _serve_embedded_on_its_own_ray(tmp: Path, env: dict[str, str],
                                         foreign: int | None = None) -> None:
    """Start the embedded default, check it runs its actors on a Ray cluster it started
    itself (none under the `foreign` head's process, when given), and stop it cleanly."""
    doc = configs.document([configs.campaign("solo", size=2, stock=5)], shards=1,
                           namespace="embedded-own", data_dir=str(tmp / "data"))
    gateway = start_gateway(write_config(tmp, doc), tmp, env=env)
    try:
        await wait_healthy(gateway, timeout=120)
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, gateway.url + "/api/groupbuys/solo/groups",
                                      "fr-a")
        assert status == 201, body
        # Its own cluster: the GCS server and the actors' workers are its descendants.
        under = psutil.Process(gateway.proc.pid).children(recursive=True)
        assert "gcs_server" in [p.name() for p in under], under
        assert len(_actor_workers(gateway.proc.pid)) >= 2  # a shard and the pipeline
        if foreign is not None:
            assert _actor_workers(foreign) == []
        gateway.proc.send_signal(signal.SIGTERM)
        assert gateway.proc.wait(60) == 0, gateway.log_text()[-3000:]
        # ... and it stops with it: nothing of that cluster outlives the server.
        _, alive = psutil.wait_procs(under, timeout=20)
        assert alive == [], alive
    finally:
        stop_group(gateway.proc, 10)


def _recorded(ray_tmpdir: str) -> str:
    """The address the last `ray start` under `ray_tmpdir` recorded for drivers to find."""
    return Path(ray_tmpdir, "ray", "ray_current_cluster").read_text().strip()


async def test_embedded_default_ignores_a_killed_ray_left_recorded(
        tmp_path: Path, ray_tmpdir: str) -> None:
    # An earlier `ray start` (the bench's, say) killed: its address stays recorded.
    with throwaway_ray_head(tmp_path, temp_dir=f"{ray_tmpdir}/ray") as head:
        kill_tree(head.pid)
        assert _recorded(ray_tmpdir) == head.address
        await _serve_embedded_on_its_own_ray(tmp_path, _embedded_env(ray_tmpdir))


async def test_embedded_default_never_puts_its_actors_on_a_live_foreign_ray(
        tmp_path: Path, ray_tmpdir: str) -> None:
    # A live cluster that is not ours, recorded as the last `ray start` and named by
    # RAY_ADDRESS, with the token that would let a driver in.
    with throwaway_ray_head(tmp_path, temp_dir=f"{ray_tmpdir}/ray") as head:
        assert _recorded(ray_tmpdir) == head.address
        await _serve_embedded_on_its_own_ray(
            tmp_path, _embedded_env(ray_tmpdir, head.address), foreign=head.pid)
        assert named_actors(head.address) == []  # its GCS never heard of our actors
