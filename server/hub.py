"""Fan-out: each gateway subscribes in Redis to the topics its sockets watch, no others.

Frames arrive already serialised exactly as clients receive them, so the hub parses only
the seq and topic once per gateway and hands the same bytes to every subscriber. A topic
is subscribed when its first local watcher arrives, and the watcher's catch-up waits for
Redis to confirm it (so no event falls between the snapshot and the live stream). A topic
nobody watches any more is unsubscribed by a sweep a little later, so watchers that come
and go do not churn Redis, and a gateway never parses the events of topics it does not
serve (with a pattern subscription, every gateway parsed every event of the deployment).

When the Redis connection is lost (a Redis restart), redis-py reconnects and subscribes
again to what it had; the hub then subscribes the topics asked for while Redis was away,
and hands each resubscribed topic's history to its watchers: events published between
the loss and the new subscription reach them from there (watchers drop the seqs they
have, and catch up when a seq is missing), later ones arrive live.
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
RECONNECT_DELAY = 0.5  # seconds between attempts to reach Redis again
REPLAY_BATCH = 100  # topics whose history one round trip reads after a reconnect


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
        # Topics Redis subscribed again after a reconnect: their history is replayed.
        self._replays: asyncio.Queue[str] = asyncio.Queue()
        self._connected = False  # the hub channel was confirmed once: later ones reconnect
        self._lost = False  # the subscription is down (logged once per outage)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._pubsub = self._client.pubsub()
        # A channel of its own keeps the connection subscribed (and `listen` running)
        # while no topic is watched.
        await self._pubsub.subscribe(redis_keys.hub_channel())
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._send()),
                       asyncio.create_task(self._sweep()), asyncio.create_task(self._replay())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # `aclose` is untyped in older redis-py and typed in newer: the ignore holds for both.
        await self._pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]

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
                elif action == "unsubscribe":
                    await self._pubsub.unsubscribe(redis_keys.channel(topic))
                else:
                    await self._subscribe_unconfirmed()
            except Exception:
                # Redis is away: once it is back, the reconnect subscribes what is missing.
                log.warning("could not %s %s", action, topic or "topics", exc_info=True)
            finally:
                self._commands.task_done()

    async def _subscribe_unconfirmed(self) -> None:
        """Subscribe the topics Redis never confirmed (asked while it was away): redis-py
        resubscribes on reconnect only what it had subscribed before."""
        pending = [redis_keys.channel(t) for t, confirmed in self._subscribed.items()
                   if not confirmed.done()]
        if pending:
            await self._pubsub.subscribe(*pending)

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
                # `listen` reconnects (redis-py subscribes its channels again on connect)
                # or raises once its retries are spent; then try again after a pause.
                async for message in self._pubsub.listen():
                    kind = message.get("type")
                    if kind == "message":
                        self._dispatch(message["channel"], message["data"])
                    elif kind == "subscribe":
                        self._confirm(message["channel"])
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self._lost:
                    log.warning("live subscription lost; reconnecting to Redis", exc_info=True)
                self._lost = True
                await asyncio.sleep(RECONNECT_DELAY)  # back off before reconnecting

    def _confirm(self, channel: bytes | str) -> None:
        """Redis confirmed a subscription: a first one releases the watchers' catch-up;
        one after a reconnect means events may have been missed meanwhile."""
        name = channel.decode() if isinstance(channel, bytes) else channel
        if name == redis_keys.hub_channel():
            if self._connected:  # subscribed again: the connection was lost
                log.warning("live subscription restored")
                self._commands.put_nowait(("resubscribe", ""))
            self._connected = True
            self._lost = False
            return
        topic = redis_keys.topic_of_channel(name)
        confirmed = self._subscribed.get(topic)
        if confirmed is None:
            # Swept while Redis was away (its unsubscribe failed), then resubscribed by
            # the reconnect: nobody here watches it.
            self._commands.put_nowait(("unsubscribe", topic))
            return
        if not confirmed.done():
            confirmed.set_result(None)
        else:
            self._replays.put_nowait(topic)

    async def _replay(self) -> None:
        """Hand resubscribed topics' history to their watchers (they skip what they have)."""
        while True:
            topics = [await self._replays.get()]
            while len(topics) < REPLAY_BATCH and not self._replays.empty():
                topics.append(self._replays.get_nowait())
            topics = [t for t in dict.fromkeys(topics) if self._topics.get(t)]
            if not topics:
                continue
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for topic in topics:
                        pipe.lrange(redis_keys.history(topic), 0, -1)
                    histories = await pipe.execute()
            except Exception:
                # Redis went away again: the next reconnect replays these topics again.
                log.warning("could not read the history of %d topics", len(topics),
                            exc_info=True)
                continue
            for topic, frames in zip(topics, histories, strict=True):
                for frame in frames:
                    self._dispatch(redis_keys.channel(topic), frame)

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
