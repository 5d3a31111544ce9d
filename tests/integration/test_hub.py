"""The hub subscribes in Redis to watched topics only, and only delivers what it should."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from server.hub import Hub
from storage import redis_keys
from storage.live import Live, LiveEvent
from tests.support.services import Services


class Watcher:
    """A subscriber that records frames and signals the one it waits for."""

    def __init__(self) -> None:
        self.frames: list[tuple[str, int]] = []
        self.arrived = asyncio.Event()
        self.until: tuple[str, int] | None = None

    def deliver(self, topic: str, seq: int, frame: bytes) -> None:
        self.frames.append((topic, seq))
        if (topic, seq) == self.until:
            self.arrived.set()

    async def wait_for(self, topic: str, seq: int) -> None:
        self.until = (topic, seq)
        if (topic, seq) not in self.frames:
            await asyncio.wait_for(self.arrived.wait(), 10)
        self.arrived.clear()


@pytest.fixture
async def redis_client(clean: Services) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(clean.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def hub(redis_client: aioredis.Redis) -> AsyncIterator[Hub]:
    started = Hub(redis_client)
    await started.start()
    yield started
    await started.stop()


async def test_only_watched_topics_are_subscribed_and_delivered(
        hub: Hub, redis_client: aioredis.Redis) -> None:
    watched, other = "groupbuy:c:g1", "groupbuy:c:g2"
    watcher = Watcher()
    hub.add(watched, watcher)
    await hub.subscribed(watched)
    counts = dict(await redis_client.pubsub_numsub(redis_keys.channel(watched),
                                                    redis_keys.channel(other)))
    assert counts == {redis_keys.channel(watched).encode(): 1,
                      redis_keys.channel(other).encode(): 0}
    live = Live(redis_client, 50, 60)
    await live.publish([LiveEvent(other, 1, {"type": "x"}), LiveEvent(watched, 1, {"type": "y"}),
                        LiveEvent(other, 2, {"type": "x"}), LiveEvent(watched, 2, {"type": "y"})])
    await watcher.wait_for(watched, 2)
    assert watcher.frames == [(watched, 1), (watched, 2)]


async def test_a_topic_left_and_watched_again_delivers_again(hub: Hub,
                                                             redis_client: aioredis.Redis) -> None:
    topic = "groupbuy:c:g3"
    first, second = Watcher(), Watcher()
    hub.add(topic, first)
    await hub.subscribed(topic)
    hub.remove(topic, first)
    await hub.sweep()  # nobody watches: unsubscribed in Redis
    assert hub.channels() == 0
    hub.add(topic, second)
    await hub.subscribed(topic)
    await Live(redis_client, 50, 60).publish([LiveEvent(topic, 1, {"type": "y"})])
    await second.wait_for(topic, 1)
    assert first.frames == [] and second.frames == [(topic, 1)]
