"""WebSocket fuzzing, kept in the suite: random and mutated frames against a live `/ws`.

Each example opens a socket for a user nobody has used (so one socket's rate limit never
masks another's case) and sends frames hypothesis builds: the contract's valid frames
(auth, subscribe, unsubscribe, ping, and a call of every method in server/gateway.py
METHODS with valid params), then mutated — any field given the wrong type (numbers,
booleans, null, lists, objects, huge strings), integers of 400 and 5000 digits, 1e400,
lone surrogates and NUL in strings, 5000 levels of `[` or `{`, frames over the size limit
and far over it, bytes that are not UTF-8 in a TEXT frame, binary frames, truncated JSON,
floods of hundreds of frames in one write, and correctly signed tokens whose claims have
any type (in the query or the auth frame).

Properties, per example:

- the gateway stays up: `/healthz` answers 200 after each example;
- every frame the server sends is JSON text of the contract (`reply`, `event`,
  `snapshot`, `pong`), every error reply in the contract's shape;
- every `call` whose ref can be read gets exactly one reply, carrying that ref, and no
  reply carries a ref nobody sent (null only for frames whose ref cannot be read);
- the server closes only for a cause it documents: 1007 after text that is not UTF-8,
  1009 after a frame over 4x `max_frame_bytes`, 1008 after a flood, 4001 for a token it
  cannot use; a socket it keeps open still answers a ping;
- a well-behaved socket beside it (another user, subscribed to a group's and a bargain's
  topic that users join and help over HTTP during the run, and that fuzzed frames point
  at) receives every event, in seq order, no gaps.

`FISSION_FUZZ_EXAMPLES` sets the number of examples (default 40: about a minute for the
file with the stack's start); docs/api.md ("Fuzzing for a release") has the long run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import waits
from server.gateway import METHODS
from server.http_api import MAX_URL_BYTES
from server.params import Param
from tests.support import rawws
from tests.support.claims import odd_claims, signed
from tests.support.client import WS, auth, token
from tests.support.stack import Gateway, Stack

pytestmark = pytest.mark.acceptance

EXAMPLES = int(os.environ.get("FISSION_FUZZ_EXAMPLES", "40"))
FRAME_LIMIT = 4096  # the stack's [server] max_frame_bytes
HARD_LIMIT = 4 * FRAME_LIMIT  # above it aiohttp closes with 1009
BURST = 100  # the stack's frame_burst: a flood past 2x this is closed with 1008
CAMPAIGN = "storm"  # the watched groups' campaign: 5 seats, fresh users lead and join
BARGAINS = "cutstorm"  # the watched bargains': 100 helpers to the floor
REPLY_WITHIN = 5.0  # seconds the replies of one example may take (floods, actor calls)
_ERROR_KEYS = frozenset({"code", "message", "retry_after_ms"})


def _fresh(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


# --- what is sent --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text spliced in as is: what json.dumps will not write (10**5000, 1e400, deep
    nesting without recursion)."""

    text: str


def dump(value: Any) -> str:
    """`value` as JSON text, `Raw` parts verbatim (strings escaped with ensure_ascii, so a
    lone surrogate travels as its `\\udcff` escape)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(v) for v in value) + "]"
    return json.dumps(value)


class Send:
    """One frame on the wire, `count` times in one write (a flood when large). A plain
    class, so a failing example prints a long payload shortened."""

    __slots__ = ("count", "opcode", "payload")

    def __init__(self, opcode: int, payload: bytes, count: int = 1) -> None:
        self.opcode, self.payload, self.count = opcode, payload, count

    def __repr__(self) -> str:
        shown = self.payload if len(self.payload) <= 300 else (
            self.payload[:150] + b"...%d bytes..." % len(self.payload) + self.payload[-60:])
        kind = {rawws.TEXT: "TEXT", rawws.BINARY: "BINARY"}.get(self.opcode, self.opcode)
        return f"Send({kind}, {shown!r}" + (f", x{self.count})" if self.count > 1 else ")")


def _readable_ref(value: Any) -> str | None:
    """The ref the contract lets a server read from a frame: a string of 1-128 characters
    of UTF-8 text without control characters (else None)."""
    if not isinstance(value, str) or not 0 < len(value) <= 128:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return None
    return value


# Nesting the contract leaves open: the gateway's JSON parser stops near the interpreter's
# recursion limit (about 1000, less the stack it is called from), so a ref inside a frame
# nested deeper than this may or may not be read; either answer is accepted there.
READABLE_DEPTH = 500


@dataclass(frozen=True)
class Expect:
    """What one frame obliges the server to: the ref it can read (None: none), whether
    it is a call (so a reply is owed), whether it ends the connection, and whether its
    ref may be unreadable after all (nested deeper than READABLE_DEPTH)."""

    ref: str | None
    call: bool
    closes: int | None  # the close code it earns (1007, 1009), or None
    deep: bool = False


def depth(text: str) -> int:
    """How deep `[` and `{` nest in JSON text (outside strings)."""
    deepest = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


def expect(send: Send) -> Expect:
    """What the contract says a frame obliges the server to."""
    if len(send.payload) > HARD_LIMIT:
        return Expect(None, False, 1009)
    if send.opcode == rawws.TEXT:
        try:
            send.payload.decode("utf-8")
        except UnicodeDecodeError:
            return Expect(None, False, 1007)
    try:
        frame = json.loads(send.payload)
    except (ValueError, RecursionError):
        return Expect(None, False, None)
    if not isinstance(frame, dict):
        return Expect(None, False, None)
    deep = depth(send.payload.decode("utf-8", "replace")) > READABLE_DEPTH
    return Expect(_readable_ref(frame.get("ref")), frame.get("op") == "call", None, deep)


# --- strategies ----------------------------------------------------------------------------------

_REF = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12).map(
    lambda s: f"fz{s}")
_CAMPAIGNS = st.sampled_from([CAMPAIGN, BARGAINS, "cut", "guard", "later", "luck", "nope"])
_NOTE = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, codec="utf-8",
                              exclude_characters="\x7f"),
                min_size=1, max_size=40)

# Raw JSON no Python value dumps to: numbers past the limits, deep nesting.
_RAW = st.sampled_from([
    Raw("1" + "0" * 400), Raw("-1" + "0" * 400), Raw("1" + "0" * 5000), Raw("1e400"),
    Raw("-1e400"), Raw("NaN"), Raw("Infinity"), Raw("1.5e-400"),
    *(Raw("[" * depth + "]" * depth) for depth in (100, 1000, 2000, 5000)),
    *(Raw('{"a":' * depth + "0" + "}" * depth) for depth in (100, 700, 1000, 5000)),
])
_WRONG = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64), st.just(10**400),
    st.floats(allow_nan=False), st.booleans(), st.none(),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(),
                                                         max_size=2),
    st.text(max_size=20), st.sampled_from(["x" * 5000, "\udcff", "a\udcffb", "\ud800",
                                           "\x00", "a\x00b", "\n", "é" * 200]),
    _RAW,
)


@dataclass(frozen=True)
class Live:
    """Who the fuzzed socket is, and the instances the watcher watches (frames point at
    them, so fuzzing reaches real groups and bargains)."""

    me: str
    group: str
    bargain: str


def _field(name: str, spec: Param, live: Live) -> st.SearchStrategy[Any]:
    """Valid values of a call parameter (`spec`: its method's, for methods share names
    such as `status`), pointed at real things where the name says how."""
    me = live.me
    named: dict[str, st.SearchStrategy[Any]] = {
        "campaign": _CAMPAIGNS,
        "group": st.sampled_from([live.group, "gnothere", "g000000000000"]),
        "bargain": st.sampled_from([live.bargain, "bnothere"]),
        "referrer": st.sampled_from([me, "fz-referrer", "u1", "phone@shop"]),
        "amount": st.integers(100, 10**6),
        "note": _NOTE,
    }
    if name in named:
        return named[name]
    if spec.kind is int:
        return st.integers(spec.low, min(spec.high, 10**9))
    assert spec.pattern is not None, name
    return st.from_regex(spec.pattern, fullmatch=True)


@st.composite
def call_frame(draw: st.DrawFn, live: Live) -> dict[str, Any]:
    """A valid `call` of any method in METHODS."""
    method = draw(st.sampled_from(sorted(METHODS)))
    params = {}
    for name, spec in METHODS[method].params.items():
        if spec.required or draw(st.booleans()):
            params[name] = draw(_field(name, spec, live))
    return {"op": "call", "ref": draw(_REF), "method": method, "params": params}


@st.composite
def valid_frame(draw: st.DrawFn, live: Live) -> dict[str, Any]:
    """One of the contract's client frames, valid."""
    me = live.me
    topics = st.sampled_from([f"groupbuy:{CAMPAIGN}:{live.group}", f"user:{me}",
                              f"bargain:{BARGAINS}:{live.bargain}", "user:someone",
                              f"groupbuy:nope:{live.group}", "bargain:cut:bnothere",
                              "lottery:x"])
    kind = draw(st.sampled_from(["call"] * 4 + ["auth", "subscribe", "unsubscribe", "ping"]))
    if kind == "call":
        return draw(call_frame(live))
    frame: dict[str, Any] = {"op": kind}
    if kind == "auth":
        frame["token"] = token(draw(st.sampled_from([me, f"{me}-other"])))
    elif kind in ("subscribe", "unsubscribe"):
        frame["topic"] = draw(topics)
        if kind == "subscribe" and draw(st.booleans()):
            frame["after"] = draw(st.integers(0, 10))
    if draw(st.booleans()):
        frame["ref"] = draw(_REF)
    return frame


@st.composite
def mutated(draw: st.DrawFn, frame: dict[str, Any]) -> Any:
    """`frame` with one to three mutations: a field (or a param) of the wrong type, a
    field dropped, an unknown field added, a pad over the size limit, or the whole frame
    replaced by something that is not an object."""
    value: Any = json.loads(json.dumps(frame))  # a copy to change
    for _ in range(draw(st.integers(1, 3))):
        targets = [(value, k) for k in value] if isinstance(value, dict) else []
        if isinstance(value, dict) and isinstance(value.get("params"), dict):
            targets += [(value["params"], k) for k in value["params"]]
        how = draw(st.sampled_from(["wrong", "wrong", "drop", "add", "pad", "whole"]))
        if how in ("wrong", "drop") and targets:
            owner, key = draw(st.sampled_from(targets))
            if how == "wrong":
                owner[key] = draw(_WRONG)
            else:
                del owner[key]
        elif how == "add" and isinstance(value, dict):
            owner = value["params"] if isinstance(value.get("params"), dict) \
                and draw(st.booleans()) else value
            owner[draw(st.sampled_from(["user", "price", "x", "\udcff", ""]))] = draw(_WRONG)
        elif how == "pad" and isinstance(value, dict):
            value["pad"] = "p" * draw(st.sampled_from([FRAME_LIMIT, HARD_LIMIT + 100]))
        elif how == "whole":
            value = draw(st.one_of(_WRONG, st.lists(st.just(value), min_size=1, max_size=2)))
    return value


_NOT_UTF8 = [b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
             b"\xc0\xaf", b"\x80"]


@st.composite
def send(draw: st.DrawFn, live: Live) -> Send:
    """One frame as it goes on the wire: valid, mutated, broken, binary or flooded."""
    base = draw(valid_frame(live))
    value = draw(st.one_of(st.just(base), mutated(base)))
    payload = dump(value).encode("utf-8", "surrogatepass")
    opcode = rawws.TEXT
    how = draw(st.sampled_from(["text"] * 6 + ["binary", "not_utf8", "truncated", "junk"]))
    if how == "binary":
        opcode = rawws.BINARY
    elif how == "not_utf8":
        cut = draw(st.integers(0, len(payload)))
        payload = payload[:cut] + draw(st.sampled_from(_NOT_UTF8)) + payload[cut:]
    elif how == "truncated" and len(payload) > 1:
        payload = payload[:draw(st.integers(1, len(payload) - 1))]
    elif how == "junk":
        payload = draw(st.one_of(st.binary(max_size=64),
                                 st.text(max_size=64).map(lambda t: t.encode("utf-8",
                                                                             "surrogatepass"))))
    count = draw(st.sampled_from([1] * 8 + [20, 150, 320]))
    return Send(opcode, payload, count)


# --- the well-behaved socket ---------------------------------------------------------------------


@dataclass
class Watched:
    """A game instance the well-behaved socket watches: a group-buy's group (users join
    it) or a bargain (users help it)."""

    kind: str  # "groupbuy" or "bargain"
    campaign: str
    id: str = ""

    @property
    def topic(self) -> str:
        return f"{self.kind}:{self.campaign}:{self.id}"

    @property
    def start_path(self) -> str:
        return f"/api/groupbuys/{self.campaign}/groups" if self.kind == "groupbuy" \
            else f"/api/bargains/{self.campaign}"

    @property
    def path(self) -> str:
        return f"{self.start_path}/{self.id}"

    @property
    def act_path(self) -> str:
        return self.path + ("/join" if self.kind == "groupbuy" else "/help")


@dataclass
class Watcher:
    """A socket that does everything right: subscribed to a group's and a bargain's topic
    that users join and help over HTTP during the run, it must see every event of them, in
    seq order, no gaps (whoever caused them: the fuzzed socket may join and help too)."""

    gateway: Gateway
    session: aiohttp.ClientSession
    socket: WS | None = None
    group: Watched = field(default_factory=lambda: Watched("groupbuy", CAMPAIGN))
    bargain: Watched = field(default_factory=lambda: Watched("bargain", BARGAINS))
    # Per topic, the seqs of its snapshots and events, as they arrived.
    seen: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    odd: list[dict[str, Any]] = field(default_factory=list)  # anything else it was sent
    reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.socket = await WS.connect(self.gateway.ws_url, _fresh("fzwatch"))
        self.reader = asyncio.create_task(self._read())
        await self.rotate(self.group)
        await self.rotate(self.bargain)

    async def _read(self) -> None:
        assert self.socket is not None
        async for raw in self.socket.conn:
            frame = json.loads(raw)
            if frame.get("op") in ("event", "snapshot"):
                self.seen.setdefault(frame["topic"], []).append((frame["op"], frame["seq"]))
            else:
                self.odd.append(frame)

    async def rotate(self, watched: Watched) -> None:
        """Watch a new instance (a fresh user opens it), and let the last one go."""
        status, body = await _post(self.session, self.gateway.url + watched.start_path,
                                   _fresh("fzlead"))
        assert status == 201, body
        old = watched.topic
        watched.id = body[watched.kind if watched.kind == "bargain" else "group"]["id"]
        assert self.socket is not None
        await self.socket.send({"op": "subscribe", "topic": watched.topic})
        if self.seen.pop(old, None) is not None:
            await self.socket.send({"op": "unsubscribe", "topic": old})

    async def act(self) -> None:
        """Another user joins the watched group, and another helps the watched bargain,
        over HTTP."""
        for watched in (self.group, self.bargain):
            status, body = await _post(self.session, self.gateway.url + watched.act_path,
                                       _fresh("fzact"))
            # 409: the fuzzed socket filled the group or brought the bargain to its floor
            assert status in (200, 409), body

    async def check(self) -> None:
        """Every event of the watched instances so far has arrived, in order, no gaps; one
        that is done (a full group, a bargain at its floor) is swapped for a new one."""
        for watched in (self.group, self.bargain):
            await self._check(watched)
        assert not self.odd, f"the well-behaved socket was sent {self.odd}"

    async def _check(self, watched: Watched) -> None:
        url = self.gateway.url + watched.path
        deadline = time.monotonic() + REPLY_WITHIN
        while True:
            async with self.session.get(url, headers=auth(_fresh("fzlook"))) as resp:
                body = await resp.json()
            assert resp.status == 200, body
            now = body["group" if watched.kind == "groupbuy" else "bargain"]
            seqs = self.seen.get(watched.topic, [])
            if seqs and seqs[-1][1] >= now["seq"]:
                break
            assert self.reader is not None and not self.reader.done(), \
                f"the watcher's socket closed: {self.reader}, odd frames {self.odd[-3:]}"
            assert time.monotonic() < deadline, \
                f"the watcher saw {seqs} of {watched.topic}, which is at seq {now['seq']}"
            await asyncio.sleep(0.02)  # polling another process's delivery, with a deadline
        assert seqs[0][0] == "snapshot", seqs
        numbers = [seq for _, seq in seqs]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers))), \
            f"events of {watched.topic} out of order or with a gap: {seqs}"
        assert numbers[-1] == now["seq"], (seqs, now)
        if now["status"] != "open":
            await self.rotate(watched)

    async def stop(self) -> None:
        if self.socket is not None:
            await self.socket.close()
        if self.reader is not None:
            self.reader.cancel()


async def _post(session: aiohttp.ClientSession, url: str, user: str
                ) -> tuple[int, dict[str, Any]]:
    async with session.post(url, headers=auth(user)) as resp:
        return resp.status, await resp.json()


@pytest.fixture(scope="module")
async def watcher(stack: Stack) -> AsyncIterator[Watcher]:
    """The well-behaved socket, on the gateway the fuzzer hits."""
    async with aiohttp.ClientSession() as session:
        found = Watcher(stack.gateways[0], session)
        await found.start()
        try:
            yield found
        finally:
            await found.stop()


# --- the properties ------------------------------------------------------------------------------


def _server_frame(frame: rawws.Frame) -> dict[str, Any]:
    """A server frame as the contract has it (JSON text, a known op, errors in shape)."""
    assert frame.opcode == rawws.TEXT, f"the server sent opcode {frame.opcode}: {frame}"
    body = json.loads(frame.payload.decode("utf-8"))
    assert isinstance(body, dict) and body.get("op") in ("reply", "event", "snapshot",
                                                        "pong"), body
    if body["op"] == "reply":
        assert "ref" in body and body.get("ok") in (True, False), body
        if body["ok"] is False:
            error = body.get("error")
            assert isinstance(error, dict), body
            assert {"code", "message"} <= set(error) <= _ERROR_KEYS, body
            assert isinstance(error["code"], str) and error["code"].isidentifier() \
                and error["code"].islower(), body
            assert isinstance(error["message"], str) and error["message"], body
            if "retry_after_ms" in error:
                wait = error["retry_after_ms"]
                assert isinstance(wait, int) and not isinstance(wait, bool) and wait >= 1, body
    elif body["op"] in ("event", "snapshot"):
        assert isinstance(body.get("topic"), str) and isinstance(body.get("seq"), int), body
    return body


def _replies(sock: rawws.RawSocket) -> list[dict[str, Any]]:
    return [f for f in (_server_frame(x) for x in sock.frames if x.opcode != rawws.CLOSE)
            if f["op"] == "reply"]


async def _settle(sock: rawws.RawSocket, owed: Counter[str]) -> None:
    """Wait (with a deadline) until every owed ref has its replies, or the server closed."""
    deadline = time.monotonic() + REPLY_WITHIN
    while not sock.eof:
        got = Counter(r["ref"] for r in _replies(sock) if r["ref"] is not None)
        if all(got[ref] >= n for ref, n in owed.items()):
            return
        if time.monotonic() > deadline:
            return  # the checks below say what is missing
        sock.arrived.clear()
        await waits.wait_set(sock.arrived, deadline - time.monotonic())


async def _still_usable(sock: rawws.RawSocket, causes: set[int]) -> None:
    """A socket the server kept open answers a ping (after the waits it asks for), unless
    it closes for one of `causes` (a flood's policy close may come after its replies)."""
    deadline = time.monotonic() + REPLY_WITHIN
    while True:
        before = len(sock.frames)
        await sock.send([(rawws.TEXT, b'{"op":"ping","ref":"fz-still-there"}')])
        while True:
            answers = [_server_frame(f) for f in sock.frames[before:]
                       if f.opcode != rawws.CLOSE]
            if any(a["op"] == "pong" for a in answers):
                return
            refused = [a for a in answers if a["op"] == "reply"
                       and a.get("ref") == "fz-still-there"]
            if refused:
                break
            if sock.eof:
                if sock.closed is not None and sock.closed.close_code in causes:
                    return
                raise AssertionError(f"closed instead of a pong: {sock.closed} {answers[-3:]}")
            assert time.monotonic() < deadline, f"no pong: {answers[-5:]}"
            sock.arrived.clear()
            await waits.wait_set(sock.arrived, deadline - time.monotonic())
        error = refused[0]["error"]
        assert error["code"] == "rate_limited", f"a ping was refused: {refused[0]}"
        assert time.monotonic() < deadline, f"still rate limited: {refused[0]}"
        await asyncio.sleep(error.get("retry_after_ms", 100) / 1000)  # the wait it asked for


async def _healthy(session: aiohttp.ClientSession, gateway: Gateway) -> None:
    async with session.get(gateway.url + "/healthz") as resp:
        assert resp.status == 200, await resp.text()


@given(data=st.data())
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
async def test_fuzzed_frames_keep_the_contract(stack: Stack, watcher: Watcher,
                                               data: st.DataObject) -> None:
    """Random and mutated frames from a fresh user: the properties in this module's
    docstring hold for each example."""
    gateway = stack.gateways[0]
    me = _fresh("fzws")
    how = data.draw(st.sampled_from(["query"] * 4 + ["query_odd", "frame", "frame_odd"]),
                    label="how the socket authenticates")
    live = Live(me, watcher.group.id, watcher.bargain.id)
    sends = data.draw(st.lists(send(live), min_size=1, max_size=6), label="sends")
    proof = token(me)
    if how.endswith("_odd"):  # correctly signed, claims of any type
        proof = signed(data.draw(odd_claims(me), label="claims")) or proof
    if how.startswith("frame"):
        auth_frame = {"op": "auth", "ref": "fzauth", "token": proof}
        first = data.draw(st.one_of(st.just(auth_frame), mutated(auth_frame)))
        sends.insert(0, Send(rawws.TEXT, dump(first).encode("utf-8", "surrogatepass")))
    target = f"/ws?token={proof}" if how.startswith("query") else "/ws"
    if len(target) > MAX_URL_BYTES:
        # A request target over the limit is refused before the upgrade, in the contract's
        # shape (414): that is the answer, and there is no socket to fuzz.
        with pytest.raises(rawws.HandshakeRefused) as refused:
            await rawws.RawSocket.connect(gateway.port, target)
        assert refused.value.status == 414
        return
    sock = await rawws.RawSocket.connect(gateway.port, target)
    reader = asyncio.create_task(sock.read_forever())
    try:
        owed: Counter[str] = Counter()
        refs: Counter[str] = Counter()  # every readable ref sent
        unreadable = 0  # frames from which no ref can be read
        causes: set[int] = set()  # close codes what we sent may earn
        must_close = False  # whether one of them is certain (1007, 1009)
        if how == "query_odd":  # a token it cannot use: one `unauthorized` reply, then 4001
            unreadable += 1
            causes.add(4001)
        sent = 0
        joined = False
        for item in sends:
            what = expect(item)
            await sock.send([(item.opcode, item.payload)] * item.count)
            if not joined:  # users join and help the watched ones while the fuzz is on
                await watcher.act()
                joined = True
            sent += item.count
            if what.closes is not None:
                causes.add(what.closes)
                must_close = True
                break  # the server closes here: nothing after it is read
            if what.ref is None or what.deep:
                unreadable += item.count
            if what.ref is not None:
                refs[what.ref] += item.count
                if what.call and not what.deep:
                    owed[what.ref] += item.count
        if sent > 2 * BURST:
            causes.add(1008)  # a flood: rate_limited replies, then perhaps a policy close
        if must_close:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), REPLY_WITHIN)
            assert sock.eof, f"still open {REPLY_WITHIN} s after a frame that earns " \
                             f"{sorted(causes)}: {sock.frames[-3:]}"
        else:
            await _settle(sock, owed)
        replies = _replies(sock)
        got = Counter(r["ref"] for r in replies if r["ref"] is not None)
        stray = {ref: n for ref, n in got.items() if n > refs[ref]}
        assert not stray, f"replies with refs that were not sent (that often): {stray}"
        nulls = [r for r in replies if r["ref"] is None]
        assert len(nulls) <= unreadable, (
            f"{len(nulls)} replies without a ref for {unreadable} frames whose ref cannot be"
            f" read: {nulls[:5]}")
        if sock.closed is None and not sock.eof:
            missing = {ref: n - got[ref] for ref, n in owed.items() if got[ref] < n}
            assert not missing, f"calls never answered (by ref): {missing}; got {replies[-5:]}"
            await _still_usable(sock, causes)
        if sock.closed is not None or sock.eof:
            code = sock.closed.close_code if sock.closed is not None else None
            assert code is not None, \
                f"the connection dropped without a close frame: {sock.frames[-3:]}"
            assert code in causes, f"closed with {code}; what was sent earns {causes or 'none'}"
    finally:
        await sock.close()
        reader.cancel()
    async with aiohttp.ClientSession() as session:
        await _healthy(session, gateway)
    await watcher.check()
