"""Live topics against real Redis: what one publish call writes to history, in order."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from storage import redis_keys
from storage.live import Live, LiveEvent, missed
from tests.support.services import Services

pytestmark = pytest.mark.integration


@pytest.fixture
async def live(clean: Services) -> AsyncIterator[Live]:
    client = aioredis.from_url(clean.redis_url)
    yield Live(client, history_size=300, ttl_seconds=60)
    await client.aclose()


async def test_frames_are_the_event_text_as_given(live: Live) -> None:
    # Text data is passed through byte for byte (no decode and re-encode on the way):
    # large integers, unicode, quotes and escapes arrive exactly as the publisher wrote them.
    text = '{"type":"member_joined","at":1900000000123,"note":"拼团 \\"ok\\" \\\\ /"}'
    await live.publish([LiveEvent("groupbuy:c:g", 7, text),
                        LiveEvent("groupbuy:c:g", 8, {"type": "group_completed", "n": 2})])
    raw = await live.client.lrange(redis_keys.history("groupbuy:c:g"), 0, -1)
    assert isinstance(raw[0], bytes)  # the client decodes nothing
    assert raw[0].decode() == f'{{"op":"event","topic":"groupbuy:c:g","seq":7,"data":{text}}}'
    assert json.loads(raw[1]) == {"op": "event", "topic": "groupbuy:c:g", "seq": 8,
                                  "data": {"type": "group_completed", "n": 2}}
    assert await live.last_seq("groupbuy:c:g") == 8


async def test_redis_numbers_events_without_a_seq_and_keeps_order(live: Live) -> None:
    # More events than one script call carries: chunks keep the order and the numbering.
    topics = ["user:a", "user:b"]
    events = [LiveEvent(topics[i % 2], 0, {"type": "tick", "i": i}) for i in range(450)]
    await live.publish(events)
    for parity, topic in enumerate(topics):
        frames = await live.history(topic)
        assert [f["seq"] for f in frames] == list(range(1, 226))
        assert [f["data"]["i"] for f in frames] == list(range(parity, 450, 2))
        assert await live.last_seq(topic) == 225


async def test_history_is_trimmed_to_its_size(clean: Services) -> None:
    client = aioredis.from_url(clean.redis_url)
    try:
        small = Live(client, history_size=5, ttl_seconds=60)
        await small.publish([LiveEvent("groupbuy:c:t", n, {"type": "x"}) for n in range(1, 9)])
        frames = await small.history("groupbuy:c:t")
        assert [f["seq"] for f in frames] == [4, 5, 6, 7, 8]
        assert missed(frames, 5, 8) == frames[2:]
        assert missed(frames, 2, 8) is None  # seq 3 is gone: a snapshot is due
    finally:
        await client.aclose()
