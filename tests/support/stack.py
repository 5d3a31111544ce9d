"""A real deployment for acceptance tests: a Ray head, gateway processes, shared services.

The Ray head runs as `ray start --head --block` in its own process group, so the tests
stop exactly the cluster they started (never `ray stop`, which ends every Ray process of
the user). Gateways are real `fission serve` processes.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from tests.support import configs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# `ray start` with token auth needs a token; one per run, shared by the head and its
# drivers through the environment, so a fresh machine (no ~/.ray/auth_token) works too.
RAY_TOKEN = os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32)


def ray_env() -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    env["RAY_AUTH_MODE"] = "token"
    env["RAY_AUTH_TOKEN"] = RAY_TOKEN
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_worker_niceness"] = "0"  # actors at normal priority (Ray's default is 15)
    return env


@dataclass(frozen=True)
class RayHead:
    address: str
    pid: int  # leader of the head's process group (raylet and workers descend from it)


@contextmanager
def ray_head(tmp: Path, object_store_mb: int | None = None, *,
             temp_dir: str | None = None) -> Iterator[RayHead]:
    """Start a Ray head owned by the caller; yields its address and process.

    `temp_dir` is the head's Ray temp folder, removed afterwards (a fresh short one by
    default; `ray start` records its address there, in `ray_current_cluster`).
    """
    port = free_port()
    # Unix socket paths must stay short: a short temp dir, not pytest's long one.
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="fray-", dir="/tmp")
    extra = [] if object_store_mb is None else [
        "--object-store-memory", str(object_store_mb * 1024 * 1024)]
    log_path = tmp / "ray-head.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["ray", "start", "--head", "--block", "--port", str(port),
             "--node-ip-address", "127.0.0.1", "--num-cpus", "8", "--include-dashboard",
             "false", "--disable-usage-stats", "--temp-dir", temp_dir, *extra],
            stdout=log, stderr=subprocess.STDOUT, env=ray_env(), start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while b"Ray runtime started" not in log_path.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ray head did not start:\n"
                                   + log_path.read_text(errors="replace")[-3000:])
            time.sleep(0.2)  # waiting for another process's start-up line
        yield RayHead(f"127.0.0.1:{port}", proc.pid)
    finally:
        stop_group(proc, 15)
        shutil.rmtree(temp_dir, ignore_errors=True)  # sessions, sockets, spilled objects


def stop_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group `proc` leads, SIGKILL what is left after `grace` s."""
    if proc.poll() is not None:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children may outlive their leader
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Gateway:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Stack:
    config_path: Path
    doc: dict[str, Any]
    gateways: list[Gateway] = field(default_factory=list)
    ray_address: str = ""


def start_gateway(config_path: Path, tmp: Path, env: dict[str, str] | None = None) -> Gateway:
    """Start `fission serve` on a free port (returns at once; see `wait_healthy`).

    `env` replaces the environment entirely when given; by default the gateway inherits
    this process's environment plus what a Ray head's drivers need.
    """
    port = free_port()
    log_path = tmp / f"gateway-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.cli", "serve", "--config", str(config_path),
         "--port", str(port)],
        stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
        env=ray_env() if env is None else env, start_new_session=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    return Gateway(port, proc, log_path)


class Served(Protocol):
    """A server process started by a test or the bench."""

    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str: ...

    def log_text(self) -> str: ...


async def wait_healthy(gateway: Served, timeout: float = 90.0) -> None:
    """Poll /healthz until it answers 200 (the server's own readiness signal)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            if gateway.proc.poll() is not None:
                raise RuntimeError(f"gateway exited:\n{gateway.log_text()[-4000:]}")
            with suppress(aiohttp.ClientError):
                async with session.get(gateway.url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway not healthy:\n{gateway.log_text()[-4000:]}")
            await asyncio.sleep(0.2)  # polling readiness of another process


def write_config(tmp: Path, doc: dict[str, Any]) -> Path:
    path = tmp / "config.toml"
    path.write_text(configs.to_toml(doc))
    return path
