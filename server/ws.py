"""The `/ws` gateway: auth, subscribe with snapshot or resume, calls, ping.

Frames out go straight to the socket while it keeps up: no task, no copy per socket for
a live event (every watcher gets the hub's bytes), and a socket's frames of one loop tick
leave in one write at the end of the tick. Once the socket's buffer is full, a
connection queues frames (bounded) for its writer task, which waits for the socket to
drain: a client that stops reading fills its queue and is disconnected with a reason,
while every other connection keeps going. Frames in are size-checked, rate-limited and
validated; a bad frame gets an error reply and the connection stays usable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from server import wire
from server.auth import Identity
from server.errors import ApiError
from server.gateway import compact as _frame  # replies and errors, compact JSON
from server.gateway import encode
from storage.live import missed

if TYPE_CHECKING:
    from server.app import Server

log = logging.getLogger("fission.ws")

AUTH_TIMEOUT = 10.0
MAX_TOPICS = 100
MAX_CALLS_IN_FLIGHT = 64
CLOSE_UNAUTHORIZED = 4001
CLOSE_SLOW = 4008
CLOSE_POLICY = 1008
CLOSE_RESTART = 1012
CLOSE_LINGER = 10.0  # seconds a dropped client's last frames may take to flush
# Frames are written straight to a socket holding less than this unsent (asyncio's
# default high-water mark); above it they queue for the writer.
DIRECT_LIMIT = 64 * 1024


@dataclass
class _Sub:
    last: int = 0
    syncing: bool = True
    buffer: list[tuple[int, bytes]] = field(default_factory=list)


class _Bucket:
    """Token bucket: `rate` frames a second, up to `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def _error(ref: Any, code: str, message: str) -> str:
    return _frame({"op": "reply", "ref": ref, "ok": False,
                   "error": {"code": code, "message": message}})


class Corked:
    """Connections with frames waiting for the end of this loop tick; one callback a tick
    writes them all (not one per socket or frame)."""

    def __init__(self) -> None:
        self._connections: list[Connection] = []

    def add(self, connection: Connection) -> None:
        if not self._connections:
            asyncio.get_running_loop().call_soon(self._flush)
        self._connections.append(connection)

    def _flush(self) -> None:
        connections, self._connections = self._connections, []
        for connection in connections:
            connection.flush()


class Connection:
    """One client socket."""

    def __init__(self, server: Server, ws: web.WebSocketResponse,
                 request: web.Request) -> None:
        self.server = server
        self.ws = ws
        cfg = server.config.server
        # The queue and its writer task exist only once the socket fell behind: most
        # sockets never do, and thousands of idle ones should cost little.
        self.queue: asyncio.Queue[bytes] | None = None
        # True while frames wait in the queue or the writer holds one: new frames must
        # queue behind them, or they would overtake.
        self.backlog = False
        self.out: list[bytes] = []  # this loop tick's frames, written together by flush()
        self.transport: asyncio.Transport | None = request.transport  # type: ignore[assignment]
        self.protocol = request.protocol
        self.subs: dict[str, _Sub] = {}
        self.identity: Identity | None = None
        self.closed = False
        self.bucket = _Bucket(cfg.frames_per_second, cfg.frame_burst)
        self.strikes = 0
        self.calls: set[asyncio.Task[None]] = set()
        self.writer: asyncio.Task[None] | None = None
        self.closing: asyncio.Task[None] | None = None
        # Reading pauses while this much of the send queue is taken, until it drains.
        self.high_water = max(1, cfg.send_queue // 2)
        self.low_water = cfg.send_queue // 4
        self.room = asyncio.Event()
        self.room.set()

    # --- sending -----------------------------------------------------------------------

    def send(self, frame: str) -> None:
        """Send a JSON text frame (see `send_wire`)."""
        self.send_wire(wire.text_frame(frame.encode()))

    def send_wire(self, framed: bytes) -> None:
        """Send a whole WebSocket frame (header and payload) at the end of this loop tick,
        with the socket's other frames of the tick in one write (a completing join's
        three events to each watcher, say)."""
        if self.closed or self.ws.closed:
            return  # a frame after the close frame would break the protocol
        if not self.out:
            self.server.corked.add(self)
        self.out.append(framed)

    def flush(self) -> None:
        """Write this tick's frames now if the socket keeps up, else queue them; a full
        queue means the client stopped reading: disconnect it."""
        frames, self.out = self.out, []
        transport = self.transport
        if not frames or self.ws.closed or transport is None or transport.is_closing():
            return  # nothing left (flushed early), or the socket is closing
        if not self.backlog and transport.get_write_buffer_size() < DIRECT_LIMIT:
            transport.write(frames[0] if len(frames) == 1 else b"".join(frames))
            return
        queue = self.queue
        if queue is None:
            queue = self.queue = asyncio.Queue(maxsize=self.server.config.server.send_queue)
            self.writer = asyncio.get_running_loop().create_task(self._write(queue))
        for framed in frames:
            try:
                queue.put_nowait(framed)
            except asyncio.QueueFull:
                self.kill(CLOSE_SLOW, "slow_consumer", "send queue full: client is not reading")
                return
            self.backlog = True

    async def _write(self, queue: asyncio.Queue[bytes]) -> None:
        # aiohttp's protocol pauses writing above the transport's high-water mark; its
        # drain helper returns once the client has read enough (the asyncio contract).
        while True:
            framed = await queue.get()
            try:
                await self.protocol._drain_helper()
                transport = self.transport
                if transport is not None and not transport.is_closing():
                    transport.write(framed)
            except ConnectionError:
                return  # the client is gone: its reader sees the close and cleans up
            finally:
                queue.task_done()
            if queue.empty():
                self.backlog = False  # no await since the check: nothing queued behind
            if queue.qsize() <= self.low_water:
                self.room.set()

    def kill(self, code: int, reason: str, message: str) -> None:
        """Disconnect with `code` and a reason, without waiting on the client."""
        if self.closed:
            return
        self.closed = True
        self.server.metrics.ws_disconnects[reason] += 1
        for topic in list(self.subs):
            self.server.hub.remove(topic, self)  # a dropped socket costs the hub nothing
        self.closing = asyncio.get_running_loop().create_task(self._close(code, message))

    async def _close(self, code: int, message: str) -> None:
        if code != CLOSE_SLOW and self.queue is not None:
            # Let the reply that explains the close reach a client that is reading.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), 1.0)
        if self.writer is not None:
            self.writer.cancel()
        try:
            await asyncio.wait_for(self.ws.close(code=code, message=message.encode()), 1.0)
        except (TimeoutError, ConnectionError, RuntimeError):
            pass
        transport = self.transport
        if transport is not None and not transport.is_closing():
            # The close frame sits behind what the client has not read yet: close after
            # flushing, so a client that resumes reading still learns why; one that never
            # does is cut off after a grace period.
            transport.close()
            asyncio.get_running_loop().call_later(CLOSE_LINGER, transport.abort)

    # --- live events -------------------------------------------------------------------

    def deliver(self, topic: str, seq: int, frame: bytes) -> None:
        """Take a live event of `topic` as the hub framed it (the same bytes for every
        watcher of this gateway)."""
        sub = self.subs.get(topic)
        if sub is None:
            return
        if sub.syncing:
            sub.buffer.append((seq, frame))
        elif seq == sub.last + 1:
            sub.last = seq
            self.server.metrics.events_delivered += 1
            self.send_wire(frame)
        elif seq > sub.last + 1:
            # A gap (a publish we missed): catch up from history, or a snapshot.
            sub.syncing = True
            sub.buffer.append((seq, frame))
            self._spawn(self._catch_up(topic, sub.last))

    async def _catch_up(self, topic: str, after: int | None, ref: Any = None) -> None:
        """Bring `topic` up to date from `after` (None: a snapshot), then go live.

        Events that arrive meanwhile are buffered; a hole left among them (a publish that
        never reached this gateway) is filled by catching up again from the last seq sent.
        """
        sub = self.subs.get(topic)
        if sub is None:
            return
        try:
            await self.server.hub.subscribed(topic)  # live first, so nothing falls between
            while True:
                seq, snapshot = await self.server.snapshot(topic)
                frames = None
                if after is not None and after <= seq:
                    frames = missed(await self.server.live.history(topic), after, seq)
                if frames is None:
                    self.send(_frame({"op": "snapshot", "topic": topic, "seq": seq,
                                      "data": snapshot}))
                else:
                    for item in frames:
                        self.send(_frame(item))
                sub.last = seq
                pending = sorted(sub.buffer)
                sub.buffer.clear()
                for index, (event_seq, frame) in enumerate(pending):
                    if event_seq == sub.last + 1:
                        sub.last = event_seq
                        self.send_wire(frame)
                    elif event_seq > sub.last + 1:
                        sub.buffer.extend(pending[index:])  # a hole: keep the rest
                        break
                if not sub.buffer:
                    sub.syncing = False  # no await since the check: nothing slips in
                    return
                after = sub.last
        except ApiError as exc:
            self._drop(topic, ref, exc.code, exc.message)
        except Exception:
            # Postgres or Redis did not answer: say so; the client may subscribe again.
            log.exception("catch-up of %s failed", topic)
            self._drop(topic, ref, "unavailable", "could not load this topic; subscribe again")

    def _drop(self, topic: str, ref: Any, code: str, message: str) -> None:
        self.subs.pop(topic, None)
        self.server.hub.remove(topic, self)
        self.send(_error(ref, code, f"{topic}: {message}"))

    # --- receiving ---------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.calls.add(task)
        task.add_done_callback(self.calls.discard)

    async def run(self, token: str | None) -> None:
        if token is not None:
            try:
                self.identity = self.server.verify(token)
            except ApiError as exc:
                self.send(_error(None, exc.code, exc.message))
                self.kill(CLOSE_UNAUTHORIZED, "unauthorized", exc.message)
                return
        deadline = time.monotonic() + AUTH_TIMEOUT
        while not self.closed:
            timeout = None if self.identity else max(0.0, deadline - time.monotonic())
            try:
                msg = await self.ws.receive(timeout=timeout)
            except TimeoutError:
                self.kill(CLOSE_UNAUTHORIZED, "unauthorized", "no auth frame in time")
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                self.kill(CLOSE_POLICY, "protocol_error", "protocol error")
                return
            self.server.metrics.ws_frames["in"] += 1
            if not self.bucket.take():
                self.strikes += 1
                self.send(_error(None, "rate_limited", "too many frames; slow down"))
                if self.strikes > 2 * self.bucket.burst:
                    self.kill(CLOSE_POLICY, "rate_limited", "rate limit exceeded repeatedly")
                continue
            if msg.type != WSMsgType.TEXT:
                self.send(_error(None, "invalid_request", "frames must be JSON text"))
            else:
                self.handle(msg.data)
            await self._backpressure()

    async def _backpressure(self) -> None:
        """Stop reading a client's frames while its replies pile up unsent.

        Frames that arrived in one TCP read are handled without yielding, so a burst of
        requests can queue a burst of replies before the writer runs once. Pausing here
        lets the writer catch up, and a client that really stops reading is caught by
        the timeout (or by the full queue, when events keep coming).
        """
        if len(self.out) >= self.high_water:
            self.flush()  # this tick's replies: written or queued now, then counted
        if self.queue is None or self.queue.qsize() < self.high_water or self.closed:
            return
        self.room.clear()
        try:
            await asyncio.wait_for(self.room.wait(), timeout=10.0)
        except TimeoutError:
            self.kill(CLOSE_SLOW, "slow_consumer", "replies not read: client is not reading")

    def handle(self, text: str) -> None:
        """One text frame: validate and dispatch; every failure is an error reply."""
        limit = self.server.config.server.max_frame_bytes
        if len(text) > limit:
            self.send(_error(None, "invalid_request", f"frame larger than {limit} bytes"))
            return
        try:
            frame = json.loads(text)
        except ValueError:
            self.send(_error(None, "invalid_request", "frame is not valid JSON"))
            return
        if not isinstance(frame, dict):
            self.send(_error(None, "invalid_request", "frame must be a JSON object"))
            return
        op = frame.get("op")
        ref = frame.get("ref")
        if ref is not None and (not isinstance(ref, str) or not 0 < len(ref) <= 128):
            self.send(_error(None, "invalid_request", "ref must be a string of 1-128 chars"))
            return
        if op == "ping":
            self.send('{"op":"pong"}')
        elif op == "auth":
            self._auth(frame, ref)
        elif self.identity is None:
            self.send(_error(ref, "unauthorized", "send {\"op\": \"auth\"} first"))
        elif op == "subscribe":
            self._subscribe(frame, ref)
        elif op == "unsubscribe":
            topic = frame.get("topic")
            if not isinstance(topic, str):
                self.send(_error(ref, "invalid_request", "topic must be a string"))
                return
            self.subs.pop(topic, None)
            self.server.hub.remove(topic, self)
        elif op == "call":
            self._call(frame, ref)
        else:
            self.send(_error(ref, "invalid_request", f"unknown op {op!r}"))

    def _auth(self, frame: dict[str, Any], ref: Any) -> None:
        token = frame.get("token")
        try:
            identity = self.server.verify(token if isinstance(token, str) else "")
        except ApiError as exc:
            self.send(_error(ref, exc.code, exc.message))
            return
        if self.identity is not None and identity.user != self.identity.user:
            self.send(_error(ref, "forbidden", "a connection cannot change its user"))
            return
        self.identity = identity
        self.send(_frame({"op": "reply", "ref": ref, "ok": True,
                          "result": {"user": identity.user, "role": identity.role}}))

    def _subscribe(self, frame: dict[str, Any], ref: Any) -> None:
        assert self.identity is not None
        topic, after = frame.get("topic"), frame.get("after")
        if not isinstance(topic, str) or not 0 < len(topic) <= 200:
            self.send(_error(ref, "invalid_request", "topic must be a string of 1-200 chars"))
            return
        if after is not None and (isinstance(after, bool) or not isinstance(after, int)
                                  or after < 0):
            self.send(_error(ref, "invalid_request", "after must be a non-negative integer"))
            return
        try:
            self.server.authorize_topic(self.identity, topic)
        except ApiError as exc:
            self.send(_error(ref, exc.code, exc.message))
            return
        if topic in self.subs:
            self.subs.pop(topic)
        elif len(self.subs) >= MAX_TOPICS:
            self.send(_error(ref, "limit_reached", f"at most {MAX_TOPICS} topics per socket"))
            return
        self.subs[topic] = _Sub()
        self.server.hub.add(topic, self)
        self._spawn(self._catch_up(topic, after, ref))

    def _call(self, frame: dict[str, Any], ref: Any) -> None:
        assert self.identity is not None
        method, params = frame.get("method"), frame.get("params", {})
        if ref is None:
            self.send(_error(None, "invalid_request", "call needs a ref"))
            return
        if not isinstance(method, str):
            self.send(_error(ref, "invalid_request", "method must be a string"))
            return
        if len(self.calls) >= MAX_CALLS_IN_FLIGHT:
            self.send(_error(ref, "rate_limited", "too many calls in flight"))
            return
        self._spawn(self._run_call(ref, method, params))

    async def _run_call(self, ref: str, method: str, params: Any) -> None:
        assert self.identity is not None
        try:
            result = await self.server.gateway.call(self.identity, method, params, ref)
        except ApiError as exc:
            self.send(_error(ref, exc.code, exc.message))
            return
        except Exception:
            log.exception("call %s failed", method)
            self.send(_error(ref, "internal", "the server failed to run this call"))
            return
        self.send(f'{{"op":"reply","ref":{_frame(ref)},"ok":true,"result":{encode(result)}}}')

    async def finish(self) -> None:
        """Unsubscribe everything and stop background work."""
        self.closed = True
        for topic in list(self.subs):
            self.server.hub.remove(topic, self)
        self.subs.clear()
        for task in [*self.calls, *([self.writer] if self.writer else [])]:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self.calls, return_exceptions=True)


async def handle(request: web.Request) -> web.StreamResponse:
    """aiohttp handler for `/ws`."""
    server: Server = request.app["server"]
    if server.stopping:
        raise web.HTTPServiceUnavailable()
    cfg = server.config.server
    # aiohttp itself closes (1009) on a frame above this; below it we answer in-band.
    ws = web.WebSocketResponse(max_msg_size=4 * cfg.max_frame_bytes, heartbeat=30.0,
                               compress=False)
    await ws.prepare(request)
    connection = Connection(server, ws, request)
    server.connections.add(connection)
    server.metrics.ws_open += 1
    try:
        await connection.run(request.query.get("token"))
        if connection.closing is not None:
            await connection.closing
    finally:
        server.metrics.ws_open -= 1
        server.connections.discard(connection)
        await connection.finish()
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
    return ws
