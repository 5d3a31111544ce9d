"""Fan-out: each gateway subscribes in Redis to the topics its sockets watch, no others.

Frames arrive already serialised exactly as clients receive them, so the hub parses only
the seq and topic once per gateway and hands the same bytes to every subscriber. A topic
is subscribed when its first local watcher arrives, and the watcher's catch-up waits for
Redis to confirm it (so no event falls between the snapshot and the live stream). A topic
nobody watches any more is unsubscribed by a sweep a little later, so watchers that come
and go do not churn Redis, and a gateway never parses the events of topics it does not
serve (with a pattern subscription, every gateway parsed every event of the deployment).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict
from typing import Protocol

import redis.asyncio as aioredis

from server import wire
from storage import redis_keys

log = logging.getLogger("fission.hub")

SWEEP_EVERY = 30.0  # seconds between unsubscribes of topics nobody here watches


class Subscriber(Protocol):
    def deliver(self, topic: str, seq: int, frame: bytes) -> None:
        """Take one event as a whole WebSocket frame, header included (must not block)."""


class Hub:
    """Local topic -> subscribers, fed by one Redis subscription per watched topic."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._topics: dict[str, set[Subscriber]] = defaultdict(set)
        # Topics subscribed in Redis (or asked to be): resolved once Redis confirms.
        self._subscribed: dict[str, asyncio.Future[None]] = {}
        self._commands: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._pubsub = self._client.pubsub()
        # A channel of its own keeps the connection subscribed (and `listen` running)
        # while no topic is watched.
        await self._pubsub.subscribe(redis_keys.hub_channel())
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._send()),
                       asyncio.create_task(self._sweep())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._pubsub.aclose()

    def add(self, topic: str, subscriber: Subscriber) -> None:
        self._topics[topic].add(subscriber)
        if topic not in self._subscribed:
            self._subscribed[topic] = asyncio.get_running_loop().create_future()
            self._commands.put_nowait(("subscribe", topic))

    async def subscribed(self, topic: str, timeout: float = 10.0) -> None:
        """Return once Redis delivers `topic`'s events here (after `add`); TimeoutError
        when Redis does not confirm in time."""
        confirmed = self._subscribed.get(topic)
        if confirmed is not None:
            await asyncio.wait_for(asyncio.shield(confirmed), timeout)

    def remove(self, topic: str, subscriber: Subscriber) -> None:
        subscribers = self._topics.get(topic)
        if subscribers is not None:
            subscribers.discard(subscriber)
            if not subscribers:
                del self._topics[topic]

    def channels(self) -> int:
        """Topics this gateway is subscribed to in Redis."""
        return len(self._subscribed)

    # --- background ---------------------------------------------------------------------

    async def _send(self) -> None:
        """Subscribe and unsubscribe in the order asked (one connection, one writer)."""
        while True:
            action, topic = await self._commands.get()
            try:
                if action == "subscribe":
                    await self._pubsub.subscribe(redis_keys.channel(topic))
                else:
                    await self._pubsub.unsubscribe(redis_keys.channel(topic))
            except Exception:
                # The reader notices the lost connection and resubscribes everything.
                log.warning("could not %s %s", action, topic, exc_info=True)
            finally:
                self._commands.task_done()

    async def sweep(self) -> int:
        """Unsubscribe the topics nobody here watches; returns once Redis was told."""
        idle = [t for t in self._subscribed if t not in self._topics]
        for topic in idle:
            del self._subscribed[topic]
            self._commands.put_nowait(("unsubscribe", topic))
        await self._commands.join()
        return len(idle)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY)  # a housekeeping period, not a synchronisation
            await self.sweep()

    async def _run(self) -> None:
        while True:
            try:
                async for message in self._pubsub.listen():
                    kind = message.get("type")
                    if kind == "message":
                        self._dispatch(message["channel"], message["data"])
                    elif kind == "subscribe":
                        self._confirm(message["channel"])
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live subscription lost; resubscribing")
                await asyncio.sleep(0.5)  # back off before reconnecting to Redis
                with contextlib.suppress(Exception):
                    await self._pubsub.subscribe(
                        redis_keys.hub_channel(),
                        *(redis_keys.channel(t) for t in self._subscribed))

    def _confirm(self, channel: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        if name == redis_keys.hub_channel():
            return
        confirmed = self._subscribed.get(redis_keys.topic_of_channel(name))
        if confirmed is not None and not confirmed.done():
            confirmed.set_result(None)

    def _dispatch(self, channel: bytes | str, raw: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        subscribers = self._topics.get(redis_keys.topic_of_channel(name))
        if not subscribers:
            return  # watchers left; the sweep unsubscribes soon
        frame = raw.encode() if isinstance(raw, str) else raw
        try:
            head = json.loads(frame)
            topic, seq = head["topic"], int(head["seq"])
        except (ValueError, KeyError, TypeError):
            log.warning("malformed live frame dropped")
            return
        # Framed once here: every watcher's socket writes these very bytes.
        framed = wire.text_frame(frame)
        for subscriber in list(subscribers):
            subscriber.deliver(topic, seq, framed)
