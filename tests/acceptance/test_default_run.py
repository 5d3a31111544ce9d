"""The default run: nothing configured, everything embedded, data kept in one folder."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import psutil
import pytest

from tests.support import configs
from tests.support.client import WS, get, post
from tests.support.stack import Gateway, start_gateway, stop_group, wait_healthy, write_config

pytestmark = pytest.mark.acceptance


def _embedded_env() -> dict[str, str]:
    # Strip every override (and the test heads' Ray token) so the server runs as on a
    # fresh machine, on its embedded default.
    return {k: v for k, v in os.environ.items()
            if not k.startswith("FISSION_") and k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN")}


def _running_under(folder: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(folder) in cmdline and "pytest" not in cmdline and "server.cli" not in cmdline:
            found.append(cmdline)
    return found


def _start(path: Path, tmp: Path) -> Gateway:
    return start_gateway(path, tmp, env=_embedded_env())


async def test_serve_embedded_stops_cleanly_and_comes_back_on_the_same_data(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    doc = configs.document([configs.campaign("solo", size=2, stock=5)], shards=1,
                           namespace="default-run", data_dir=str(data))
    path = write_config(tmp_path, doc)
    first = _start(path, tmp_path)
    try:
        await wait_healthy(first, timeout=120)
        async with aiohttp.ClientSession() as session:
            status, body = await post(session, first.url + "/api/groupbuys/solo/groups", "dr-a")
            assert status == 201
        group = body["group"]
        ws = await WS.connect(first.ws_url, "dr-a")
        await ws.send({"op": "subscribe", "topic": f"groupbuy:solo:{group['id']}"})
        await ws.until(lambda f: f.get("op") == "snapshot")
        first.proc.send_signal(signal.SIGTERM)
        # Graceful stop: connected sockets are told to reconnect elsewhere (1012).
        with pytest.raises(Exception) as closed:
            while True:
                await ws.recv(timeout=30)
        assert getattr(getattr(closed.value, "rcvd", None), "code", None) == 1012
        assert first.proc.wait(60) == 0
    finally:
        stop_group(first.proc, 10)
    assert (data / "pg" / "PG_VERSION").exists() and (data / "redis.db").exists()
    assert _running_under(data) == []  # embedded Postgres and Redis stopped with it

    second = _start(path, tmp_path)
    try:
        await wait_healthy(second, timeout=120)
        async with aiohttp.ClientSession() as session:
            status, again = await get(
                session, f"{second.url}/api/groupbuys/solo/groups/{group['id']}", "dr-a")
            assert status == 200 and again["group"] == group
            status, joined = await post(
                session, f"{second.url}/api/groupbuys/solo/groups/{group['id']}/join", "dr-b")
            assert status == 200 and joined["group"]["status"] == "completed"
    finally:
        second.proc.send_signal(signal.SIGTERM)
        try:
            second.proc.wait(60)
        finally:
            stop_group(second.proc, 10)
    assert _running_under(data) == []
