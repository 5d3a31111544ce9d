"""Session-wide real services shared by integration and acceptance tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.services import Services, prepare, services, wipe


@pytest.fixture(scope="session")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with services(tmp_path_factory.mktemp("services")) as found:
        yield found


@pytest.fixture(scope="session")
async def migrated(svc: Services) -> Services:
    await prepare(svc)
    return svc


@pytest.fixture
async def clean(migrated: Services) -> AsyncIterator[Services]:
    """Empty tables and Redis keys before a test."""
    await wipe(migrated)
    yield migrated
