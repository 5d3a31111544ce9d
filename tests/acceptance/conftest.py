"""One deployment for the acceptance suite: Ray head + two gateways on shared services."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import configs
from tests.support.services import Services
from tests.support.stack import (
    Gateway,
    Stack,
    ray_head,
    start_gateway,
    stop_group,
    wait_healthy,
    write_config,
)

CAMPAIGNS = [
    configs.campaign("race", size=5, stock=100, led=1, joined=1),
    configs.campaign("storm", size=5, stock=100_000, led=1, joined=1),
    configs.campaign("live", size=5, stock=1000, led=50, joined=50),
    configs.campaign("guard", size=3, stock=1000, led=50, joined=50),
    configs.campaign("brief", size=3, stock=100, led=5, joined=5, time_limit=2),
    configs.campaign("pair", size=2, stock=1000, led=50, joined=50),
    configs.campaign("hp", size=3, stock=1000, led=5, joined=5),  # the homepage's browser test
    # The homepage's board: referred sales this week in region HP, which no other test's
    # sellers act from (test_homepage.py).
    {"id": "hpsales", "kind": "leaderboard", "title": "Test sales", "metric": "sales",
     "period": "weekly", "scope": "region", "regions": ["HP"], "ranks": 10,
     "starts_at": "2020-01-01T00:00:00+00:00", "ends_at": "2099-01-01T00:00:00+00:00"},
    configs.campaign("later", size=2, stock=10, starts_at="2098-01-01T00:00:00+00:00"),
    configs.campaign("soak", size=5, stock=10_000_000, led=1_000_000, joined=1_000_000),
    configs.bargain("cut", helpers=5, stock=100, started=10, before_floor=True),
    configs.bargain("crowd", helpers=100, stock=10, list_price=100_000, floor_price=100),
    configs.bargain("cutstorm", helpers=100, stock=1000, started=100,
                    list_price=1_000_000, floor_price=100),
    configs.lottery("luck", free=2, prizes=[
        {"id": "coupon", "title": "Coupon", "kind": "coupon", "coupon": "TEN", "weight": 1,
         "stock": 100_000},
        {"id": "thanks", "title": "Thanks", "kind": "thanks", "weight": 0}]),
    configs.lottery("lsoon", starts_at="2098-01-01T00:00:00+00:00"),
    # A regional board of referred sales this week (test_leaderboards.py).
    {"id": "lb", "kind": "leaderboard", "title": "Test board", "metric": "sales",
     "period": "weekly", "scope": "region", "ranks": 5,
     "starts_at": "2020-01-01T00:00:00+00:00", "ends_at": "2099-01-01T00:00:00+00:00"},
]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with ray_head(tmp_path_factory.mktemp("ray")) as head:
        yield head.address


@pytest.fixture(scope="session")
async def stack(migrated: Services, ray_address: str,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    from tests.support.services import wipe

    await wipe(migrated)
    tmp: Path = tmp_path_factory.mktemp("stack")
    doc = configs.document(
        CAMPAIGNS, shards=2, namespace=f"t{uuid.uuid4().hex[:8]}",
        database_url=migrated.database_url, redis_url=migrated.redis_url,
        ray_address=ray_address, data_dir=str(tmp / "data"),
        server={"frames_per_second": 50, "frame_burst": 100, "send_queue": 64,
                "max_frame_bytes": 4096},
    )
    path = write_config(tmp, doc)
    found = Stack(path, doc, ray_address=ray_address)
    # The first gateway creates the actors; the second finds them by name.
    first = start_gateway(path, tmp)
    try:
        await wait_healthy(first)
        found.gateways.append(first)
        second = start_gateway(path, tmp)
        await wait_healthy(second)
        found.gateways.append(second)
        yield found
    finally:
        for gateway in [first, *found.gateways[1:]]:
            stop_group(gateway.proc, 10)


@contextlib.asynccontextmanager
async def extra_gateway(stack: Stack, tmp: Path, server: dict[str, Any]
                        ) -> AsyncIterator[Gateway]:
    """Another gateway on the stack's actors and services, with a `[server]` table of its
    own (`{}`: the defaults a fresh `config.toml` has). The server table is the gateway's
    alone: the actors keep the config they were created with."""
    doc = {**stack.doc, "server": server}
    gateway = start_gateway(write_config(tmp, doc), tmp)
    try:
        await wait_healthy(gateway)
        yield gateway
    finally:
        stop_group(gateway.proc, 10)
