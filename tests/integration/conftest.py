"""Helpers for the integration tests: a hand-moved clock and plain asyncio shard owners."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import pytest

from actors.owner import Owner
from storage import db
from storage.clock import MovableClock
from storage.config import Config, parse
from tests.support import configs
from tests.support.services import Services, prepare


@pytest.fixture(scope="session")
async def database(migrated: Services) -> Services:
    """The integration tests' database, apart from the acceptance suite's: that suite's
    deployment lives on through the session, and its pipeline would otherwise drain the
    outbox these tests write, with its own config."""
    own = Services(db.with_database(migrated.database_url, "fission_integration"),
                   migrated.redis_url, migrated.external)
    await prepare(own)
    return own


T0 = 1_900_000_000_000  # a fixed "now" inside the test campaigns, epoch ms


class Clock(MovableClock):
    """The one clock a test moves by hand (`ms`, `set`, `advance`), from T0: it drives the
    owners and the pipeline worker alike."""

    def __init__(self, start: datetime | int = T0) -> None:
        super().__init__(start)


def make_config(svc: Services, *campaigns: dict[str, Any]) -> Config:
    """A one-shard config of `campaigns`. These tests drive owners directly, with no
    payment provider in front of them: a group-buy (a bargain) takes no payment here
    unless its table says `pay_to_join` (`pay_to_buy`): the payment step has its own
    tests."""
    tables = [{"pay_to_join": False, **c} if c.get("kind") == "groupbuy"
              else {"pay_to_buy": False, **c} if c.get("kind") == "bargain" else c
              for c in campaigns]
    doc = configs.document(tables, shards=1, database_url=svc.database_url,
                           redis_url=svc.redis_url)
    return parse(doc, {}, "test")


Factory = Callable[..., Any]


@pytest.fixture
async def shard_factory(clean: Services) -> AsyncIterator[Factory]:
    started: list[Owner] = []

    async def start(config: Config, clock: Clock) -> Owner:
        shard = Owner(config, clean.database_url, clean.redis_url, 0, clock=clock)
        await shard.start()
        started.append(shard)
        return shard

    yield start
    for shard in started:
        await shard.stop()


def cmd(method: str, user: str, campaign: str = "c1", group: str | None = None,
        key: str | None = None) -> dict[str, Any]:
    params = {} if group is None else {"group": group}
    return {"method": f"groupbuy.{method}", "campaign": campaign, "user": user,
            "key": key, "params": params}
