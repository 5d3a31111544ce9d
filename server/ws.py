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
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from actors import waits
from server import state, wire
from server.auth import Identity
from server.errors import ApiError
from server.gateway import compact as _frame  # replies and errors, compact JSON
from server.gateway import encode
from server.limits import Bucket, retry_after_ms
from server.params import KEY_MAX, parse_json
from storage.live import missed
from storage.text import clean_token

if TYPE_CHECKING:
    from server.app import Server

log = logging.getLogger("fission.ws")

MAX_TOPICS = 100
MAX_CALLS_IN_FLIGHT = 64
# A client over MAX_CALLS_IN_FLIGHT waits for one of its replies; this is a hint.
CALLS_RETRY_MS = 100
CLOSE_UNAUTHORIZED = 4001  # no valid token in time, or the token expired
CLOSE_IDLE = 4002  # no frame at all in `idle_timeout_seconds`
CLOSE_SLOW = 4008
CLOSE_TOO_MANY = 4029  # over `max_sockets_per_user` or `max_sockets_per_ip`
CLOSE_POLICY = 1008
CLOSE_RESTART = 1012
CLOSE_LINGER = 10.0  # seconds a dropped client's last frames may take to flush
# Seconds a closing socket waits for the answers of calls it had accepted, so their
# replies go out before the close frame.
DRAIN_CALLS = 5.0
DRAIN_ON_RESTART = 1.0
# Frames are written straight to a socket holding less than this unsent (asyncio's
# default high-water mark); above it they queue for the writer.
DIRECT_LIMIT = 64 * 1024


@dataclass
class _Sub:
    last: int = 0
    syncing: bool = True
    buffer: list[tuple[int, bytes]] = field(default_factory=list)


def _error(ref: str | None, code: str, message: str, retry_after: int | None = None) -> str:
    return _frame({"op": "reply", "ref": ref, "ok": False,
                   "error": ApiError(code, message, retry_after).error()})


_UNREAD = object()  # a frame that is not JSON


def _read(data: str | bytes) -> tuple[Any, str | None]:
    """A frame's JSON (`_UNREAD` if it is none) and its ref, where one can be read: a
    string a client may use as an idempotency key, else None."""
    try:
        frame = parse_json(data, "frame")
    except ApiError:
        return _UNREAD, None
    ref = frame.get("ref") if isinstance(frame, dict) else None
    return frame, ref if clean_token(ref, KEY_MAX) else None


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
        self.transport: asyncio.Transport | None = request.transport
        self.protocol = request.protocol
        self.subs: dict[str, _Sub] = {}
        self.identity: Identity | None = None
        self.counted_user: str | None = None  # counted in the server's sockets per user
        self.expiry: asyncio.TimerHandle | None = None
        self.heard = False  # any frame received yet
        # closed: reading and live events stop; sealed: the close frame is on its way,
        # nothing more may be written (between the two, accepted calls still answer).
        self.closed = False
        self.sealed = False
        self.bucket = Bucket(cfg.frames_per_second, cfg.frame_burst)
        self.strikes = 0
        self.calls: set[asyncio.Task[None]] = set()  # calls waiting for their answers
        self.catchups: set[asyncio.Task[None]] = set()  # topics catching up
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
        try:
            payload = frame.encode()
        except UnicodeEncodeError:
            # A lone surrogate inside a JSON string: its JSON escape (\udcff) is what
            # ensure_ascii would have written, and valid UTF-8 on the wire.
            payload = frame.encode("utf-8", "backslashreplace")
        self.send_wire(wire.text_frame(payload))

    def send_wire(self, framed: bytes) -> None:
        """Send a whole WebSocket frame (header and payload) at the end of this loop tick,
        with the socket's other frames of the tick in one write (a completing join's
        three events to each watcher, say)."""
        if self.sealed or self.ws.closed:
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
                # Once the close frame is out (ours, or aiohttp's answer to the client's),
                # no data frame may follow it.
                if transport is not None and not transport.is_closing() \
                        and not self.sealed and not self.ws.closed:
                    transport.write(framed)
            except ConnectionError:
                return  # the client is gone: its reader sees the close and cleans up
            finally:
                queue.task_done()
            if queue.empty():
                self.backlog = False  # no await since the check: nothing queued behind
            if queue.qsize() <= self.low_water:
                self.room.set()

    def kill(self, code: int, reason: str, message: str, drain: float = 0.0) -> None:
        """Disconnect with `code` and a reason, without waiting on the client; with
        `drain`, the calls already accepted get up to that many seconds to answer first."""
        if self.closed:
            return
        self.closed = True
        self.server.metrics.ws_disconnects[reason] += 1
        if self.expiry is not None:
            self.expiry.cancel()
        for topic in list(self.subs):
            self.server.hub.remove(topic, self)  # a dropped socket costs the hub nothing
        self.closing = asyncio.get_running_loop().create_task(
            self._close(code, message, drain))

    async def _close(self, code: int, message: str, drain: float = 0.0) -> None:
        if drain and self.calls:
            await asyncio.wait(list(self.calls), timeout=drain)
        self.flush()  # this tick's frames, the replies among them, before the close
        self.sealed = True
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
            self._spawn(self._catch_up(topic, sub.last), self.catchups)

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
                if self.subs.get(topic) is not sub:
                    return  # unsubscribed, or subscribed anew meanwhile: that one catches up
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
            self._drop(topic, sub, ref, exc.code, exc.message)
        except Exception:
            # Postgres or Redis did not answer: say so; the client may subscribe again.
            log.exception("catch-up of %s failed", topic)
            self._drop(topic, sub, ref, "unavailable",
                       "could not load this topic; subscribe again")

    def _drop(self, topic: str, sub: _Sub, ref: Any, code: str, message: str) -> None:
        if self.subs.get(topic) is not sub:
            return  # a newer subscription of the topic is not this one's to drop
        self.subs.pop(topic)
        self.server.hub.remove(topic, self)
        self.send(_error(ref, code, f"{topic}: {message}"))

    # --- receiving ---------------------------------------------------------------------

    def _spawn(self, coro: Any, into: set[asyncio.Task[None]]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        into.add(task)
        task.add_done_callback(into.discard)

    async def run(self, token: str | None) -> None:
        cfg = self.server.config.server
        if token is not None:
            try:
                identity = self.server.verify(token)
            except ApiError as exc:
                self.send(_error(None, exc.code, exc.message))
                self.kill(CLOSE_UNAUTHORIZED, "unauthorized", exc.message)
                return
            if not self._become(identity, None):
                return
        started = time.monotonic()
        while not self.closed:
            # Until it proves who it is, and until it sends anything, a socket has a
            # deadline: silent or anonymous sockets are closed, not held forever.
            deadlines = []
            if self.identity is None:
                deadlines.append((started + cfg.auth_timeout_seconds, CLOSE_UNAUTHORIZED,
                                  "unauthorized", "no auth frame in time"))
            if not self.heard:
                deadlines.append((started + cfg.idle_timeout_seconds, CLOSE_IDLE, "idle",
                                  "no frame in time"))
            first = min(deadlines) if deadlines else None
            try:
                msg = await self.ws.receive(
                    timeout=None if first is None else max(0.0, first[0] - time.monotonic()))
            except TimeoutError:
                assert first is not None
                self.kill(*first[1:])
                return
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                return
            if msg.type == WSMsgType.ERROR:
                # aiohttp closed it already (1007 for text that is not UTF-8, 1009 for a
                # frame over its size limit): the protocol's own answer.
                self.kill(CLOSE_POLICY, "protocol_error", "protocol error")
                return
            self.heard = True
            self.server.metrics.ws_frames["in"] += 1
            self.receive(msg.type, msg.data)
            await self._backpressure()

    def receive(self, kind: WSMsgType, data: str | bytes) -> None:
        """One frame from the client: every refusal is a reply carrying the frame's ref
        (null only when no ref can be read from it)."""
        if self.closed:
            return  # killed meanwhile (expiry, a slow consumer): nothing more runs
        frame, ref = _read(data)
        wait = self.bucket.take()
        if not wait and self.strikes:
            self.strikes -= 1  # an occasional burst is forgiven; only a flood adds up
        if wait:
            self.strikes += 1
            self.refuse(ref, "rate_limited", "too many frames; retry after retry_after_ms",
                        "rate_limited", retry_after_ms(wait))
            if self.strikes > 2 * self.bucket.burst:
                self.kill(CLOSE_POLICY, "rate_limited", "rate limit exceeded repeatedly",
                          drain=DRAIN_CALLS)
            return
        if kind != WSMsgType.TEXT:
            self.refuse(ref, "invalid_request", "frames must be JSON text", "binary")
            return
        assert isinstance(data, str)
        limit = self.server.config.server.max_frame_bytes
        if len(data) > limit // 4 and len(data.encode("utf-8", "surrogatepass")) > limit:
            self.refuse(ref, "invalid_request", f"frame larger than {limit} bytes",
                        "too_large")
            return
        if frame is _UNREAD:
            self.refuse(None, "invalid_request", "frame is not valid JSON", "invalid")
            return
        if not isinstance(frame, dict):
            self.refuse(None, "invalid_request", "frame must be a JSON object", "invalid")
            return
        if "ref" in frame and frame["ref"] is not None and ref is None:
            self.refuse(None, "invalid_request", f"ref must be 1-{KEY_MAX} characters of "
                        "UTF-8 text without control characters", "invalid")
            return
        self.handle(frame, ref)

    def refuse(self, ref: str | None, code: str, message: str, reason: str,
               retry_after: int | None = None) -> None:
        """Answer a frame that is refused before its op runs; counted by `reason`."""
        self.server.metrics.ws_refused[reason] += 1
        self.send(_error(ref, code, message, retry_after))

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
        if not await waits.wait_set(self.room, 10.0):
            self.kill(CLOSE_SLOW, "slow_consumer", "replies not read: client is not reading")

    def handle(self, frame: dict[str, Any], ref: str | None) -> None:
        """One valid frame: dispatch its op; every failure is an error reply."""
        op = frame.get("op")
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
            self.refuse(ref, "invalid_request", f"unknown op {op!r}", "invalid")

    def _auth(self, frame: dict[str, Any], ref: str | None) -> None:
        token = frame.get("token")
        try:
            identity = self.server.verify(token if isinstance(token, str) else "")
        except ApiError as exc:
            self.send(_error(ref, exc.code, exc.message))
            return
        if self.identity is not None and identity.user != self.identity.user:
            self.send(_error(ref, "forbidden", "a connection cannot change its user"))
            return
        if not self._become(identity, ref):
            return
        self.send(_frame({"op": "reply", "ref": ref, "ok": True,
                          "result": {"user": identity.user, "role": identity.role}}))

    def _become(self, identity: Identity, ref: str | None) -> bool:
        """Act as `identity` from now on (a new token of the same user extends the
        socket's life); False when its user has too many sockets (this one closes)."""
        user = identity.user
        if self.counted_user != user:
            counts = self.server.sockets_by_user
            cap = self.server.config.server.max_sockets_per_user
            if counts[user] >= cap:
                message = f"at most {cap} sockets per user"
                self.send(_error(ref, "too_many_connections", message))
                self.kill(CLOSE_TOO_MANY, "too_many_sockets", message)
                return False
            counts[user] += 1
            self.counted_user = user
        self.identity = identity
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        if identity.expires != float("inf"):
            # Close at the token's expiry (its pending replies first): a socket must not
            # keep acting for a user after the token that proved it has run out.
            self.expiry = asyncio.get_running_loop().call_later(
                max(0.0, identity.expires - time.time()), self.kill, CLOSE_UNAUTHORIZED,
                "token_expired", "the token has expired; reconnect with a new one",
                DRAIN_CALLS)
        return True

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
        self._spawn(self._catch_up(topic, after, ref), self.catchups)

    def _call(self, frame: dict[str, Any], ref: str | None) -> None:
        assert self.identity is not None
        method, params = frame.get("method"), frame.get("params", {})
        if ref is None:
            self.refuse(None, "invalid_request", "call needs a ref", "invalid")
            return
        if not isinstance(method, str):
            self.refuse(ref, "invalid_request", "method must be a string", "invalid")
            return
        if time.time() >= self.identity.expires:
            self.refuse(ref, "unauthorized", "the token has expired", "unauthorized")
            return
        if len(self.calls) >= MAX_CALLS_IN_FLIGHT:
            self.refuse(ref, "rate_limited", "too many calls in flight; wait for a reply",
                        "calls_in_flight", CALLS_RETRY_MS)
            return
        self._spawn(self._run_call(ref, method, params), self.calls)

    async def _run_call(self, ref: str, method: str, params: Any) -> None:
        assert self.identity is not None
        pending = self.server.pending_calls
        token = object()
        pending[token] = time.monotonic()  # insertion order is age order: see metrics
        try:
            result = await self.server.gateway.call(self.identity, method, params, ref)
        except ApiError as exc:
            self.send(_error(ref, exc.code, exc.message, exc.retry_after_ms))
            return
        except Exception:
            log.exception("call %s failed", method)
            self.send(_error(ref, "internal", "the server failed to run this call"))
            return
        finally:
            del pending[token]
        self.send(f'{{"op":"reply","ref":{_frame(ref)},"ok":true,"result":{encode(result)}}}')

    async def finish(self) -> None:
        """Unsubscribe everything and stop background work."""
        self.closed = self.sealed = True
        if self.expiry is not None:
            self.expiry.cancel()
        if self.counted_user is not None:
            counts = self.server.sockets_by_user
            counts[self.counted_user] -= 1
            if counts[self.counted_user] <= 0:
                del counts[self.counted_user]
            self.counted_user = None
        for topic in list(self.subs):
            self.server.hub.remove(topic, self)
        self.subs.clear()
        tasks = [*self.calls, *self.catchups]
        for task in [*tasks, *([self.writer] if self.writer else [])]:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


async def handle(request: web.Request) -> web.StreamResponse:
    """aiohttp handler for `/ws`."""
    server: Server = request.app[state.SERVER]
    if server.stopping:
        raise ApiError("unavailable", "the server is stopping; connect to another")
    cfg = server.config.server
    origin = request.headers.get("Origin")
    # Browsers always send Origin; a handshake from another site's page is refused
    # (other clients may omit it: they are not the cross-site hijacking this stops).
    if cfg.allowed_origins and origin is not None \
            and origin.rstrip("/") not in cfg.allowed_origins:
        raise ApiError("forbidden", "this origin may not open a socket here")
    # aiohttp itself closes (1009) on a frame above this; below it we answer in-band.
    ws = web.WebSocketResponse(max_msg_size=4 * cfg.max_frame_bytes, heartbeat=30.0,
                               compress=False)
    await ws.prepare(request)
    address = request.remote or "?"
    per_ip = server.sockets_by_ip
    if cfg.max_sockets_per_ip and per_ip[address] >= cfg.max_sockets_per_ip:
        server.metrics.ws_disconnects["too_many_sockets"] += 1
        message = f"at most {cfg.max_sockets_per_ip} sockets per address"
        with contextlib.suppress(Exception):
            await ws.send_str(_error(None, "too_many_connections", message))
            await asyncio.wait_for(ws.close(code=CLOSE_TOO_MANY, message=message.encode()),
                                   1.0)
        return ws
    per_ip[address] += 1
    connection = Connection(server, ws, request)
    server.connections.add(connection)
    server.population.opened(len(server.connections))
    server.metrics.ws_open += 1
    try:
        await connection.run(request.query.get("token"))
        if connection.closing is not None:
            await connection.closing
    finally:
        server.metrics.ws_open -= 1
        server.connections.discard(connection)
        server.population.closed(len(server.connections))
        per_ip[address] -= 1
        if per_ip[address] <= 0:
            del per_ip[address]
        await connection.finish()
        if not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 1.0)
    return ws
