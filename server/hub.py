"""Fan-out: one Redis pattern subscription per gateway, delivering to local sockets.

Frames arrive already serialised exactly as clients receive them, so the hub parses only
the seq and topic once per gateway and hands the same bytes to every subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from typing import Protocol

import redis.asyncio as aioredis

from storage import redis_keys

log = logging.getLogger("fission.hub")


class Subscriber(Protocol):
    def deliver(self, topic: str, seq: int, frame: bytes) -> None:
        """Take one event frame (must not block)."""


class Hub:
    """Local topic -> subscribers, fed by a single pattern subscription."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._topics: dict[str, set[Subscriber]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    async def start(self) -> None:
        self._pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.psubscribe(redis_keys.EVENT_CHANNEL_PATTERN)
        self._task = asyncio.create_task(self._run())
        self.ready.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._pubsub.aclose()

    def add(self, topic: str, subscriber: Subscriber) -> None:
        self._topics[topic].add(subscriber)

    def remove(self, topic: str, subscriber: Subscriber) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._topics[topic]

    async def _run(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    self._dispatch(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live subscription lost; resubscribing")
                await asyncio.sleep(0.5)  # back off before reconnecting to Redis
                with contextlib.suppress(Exception):
                    await self._pubsub.psubscribe(redis_keys.EVENT_CHANNEL_PATTERN)

    def _dispatch(self, channel: bytes | str, raw: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        subscribers = self._topics.get(redis_keys.topic_of_channel(name))
        if not subscribers:
            return  # every gateway sees every event: most have no reader here
        frame = raw.encode() if isinstance(raw, str) else raw
        try:
            head = json.loads(frame)
            topic, seq = head["topic"], int(head["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed live frame dropped")
            return
        for subscriber in list(subscribers):
            subscriber.deliver(topic, seq, frame)
