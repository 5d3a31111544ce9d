"""Session-wide real services shared by integration and acceptance tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

# Ray reads these when first imported: loopback only, token auth for `ray start` heads.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import pytest

from tests.support.stack import RAY_TOKEN

os.environ.setdefault("RAY_AUTH_TOKEN", RAY_TOKEN)  # in-process drivers reach test heads

from tests.support.services import Services, prepare, services, wipe


@pytest.fixture(scope="session")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with services(tmp_path_factory.mktemp("services")) as found:
        yield found


@pytest.fixture(scope="session")
async def migrated(svc: Services) -> Services:
    await prepare(svc)
    return svc


@pytest.fixture(scope="session")
async def database(migrated: Services) -> Services:
    """The services a suite's tests write to (a suite may override it with its own)."""
    return migrated


@pytest.fixture
async def clean(database: Services) -> AsyncIterator[Services]:
    """Empty tables and Redis keys before a test."""
    await wipe(database)
    yield database
