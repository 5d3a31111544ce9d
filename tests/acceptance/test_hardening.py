"""Hardening: no reply without its ref, no input that reaches a 500 or Postgres.

Every reply to a `call` carries the call's ref, refusals included (rate limited, too many
calls in flight, too large, binary): only a frame whose ref cannot be read is answered
with `ref: null`. Strings a client sends are checked at the edge (UTF-8, no NUL, no
control characters, whole-string patterns); bytes that are not UTF-8, deep nesting and
odd tokens are refused with the contract's shape. Every test uses its own users (`hd-`).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import jwt
import pytest
import websockets

from tests.acceptance.test_guard import (
    BASE,
    assert_error,
    assert_reply_error,
    assert_usable,
    close_code,
    open_group,
    send_batch,
)
from tests.support.client import WS, auth, get, post, token
from tests.support.configs import SECRET
from tests.support.stack import Stack

pytestmark = pytest.mark.acceptance

FRAME_LIMIT = 4096  # the stack's [server] max_frame_bytes
BURST = 100  # the stack's [server] frame_burst


def _call(ref: Any, method: str = "campaigns.list", **params: Any) -> str:
    return json.dumps({"op": "call", "ref": ref, "method": method, "params": params})


async def _replies(ws: WS, refs: set[str], timeout: float = 15.0) -> dict[str, list[Any]]:
    """Every reply to `refs` (each ref's replies, in order) until each has one."""
    found: dict[str, list[Any]] = {ref: [] for ref in refs}
    async with asyncio.timeout(timeout):
        while any(not replies for replies in found.values()):
            frame = await ws.recv(timeout)
            if frame.get("op") == "reply" and frame.get("ref") in found:
                found[frame["ref"]].append(frame)
    return found


async def raw_http(port: int, head: bytes) -> tuple[int, dict[str, Any]]:
    """Send a request whose head is exactly `head` (any bytes); the status and JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    header, _, body = data.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    assert b"application/json" in header.lower(), data[:500]
    return status, json.loads(body)


# --- refs on every refusal -----------------------------------------------------------------


async def test_a_burst_of_calls_gets_one_reply_per_ref(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-burst")
    try:
        refs = [f"b{i}" for i in range(BURST + 50)]
        await send_batch(ws, [_call(ref) for ref in refs])
        replies = await _replies(ws, set(refs))
        assert all(len(r) == 1 for r in replies.values()), replies
        refused = [r[0] for r in replies.values() if not r[0]["ok"]]
        assert refused, "over the burst, some calls must be refused"
        for reply in refused:  # rate limited: the frame rate or the calls in flight
            assert_reply_error(reply, reply["ref"], "rate_limited")
        # A client that waits as long as it was told is let through, with the same ref.
        last = refused[-1]
        await asyncio.sleep(last["error"]["retry_after_ms"] / 1000)  # the wait under test
        again = await ws.call(last["ref"], "campaigns.list", {}, retries=1)
        assert again["ok"], again
    finally:
        await ws.close()


@pytest.mark.parametrize("frame", [
    json.dumps({"op": "call", "ref": "big1", "method": "campaigns.list",
                "params": {"pad": "x" * FRAME_LIMIT}}),
    json.dumps({"op": "call", "ref": "big1", "method": "campaigns.list",
                "params": {"pad": "云" * (FRAME_LIMIT // 2)}}),  # few chars, many bytes
])
async def test_a_frame_too_large_is_refused_with_its_ref(stack: Stack, frame: str) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-big")
    try:
        await ws.send(frame)
        assert_reply_error(await ws.recv(), "big1", "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


async def test_a_binary_frame_is_refused_with_its_ref(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-binary")
    try:
        await ws.conn.send(_call("bin1").encode())
        assert_reply_error(await ws.recv(), "bin1", "invalid_request")
        await ws.conn.send(b"\xff\xfe not json")
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()


@pytest.mark.parametrize("ref_json", [
    '"\\udcff"', '"a\\ud800b"', '"nul\\u0000"', '"line\\n"', '"' + "r" * 129 + '"', "5",
    "true", "[]", "{}", "1e400",
])
async def test_a_ref_that_cannot_be_read_gets_a_null_ref(stack: Stack, ref_json: str
                                                        ) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-badref")
    try:
        await ws.send('{"op": "call", "ref": ' + ref_json + ', "method": "groupbuy.open",'
                      ' "params": {"campaign": "guard"}}')
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()
    # The command never reached the owner: nothing was opened for that user.
    async with aiohttp.ClientSession() as session:
        status, body = await get(session, f"{stack.gateways[0].url}{BASE}?limit=100",
                                 "hd-check")
    assert status == 200
    assert not [g for g in body["groups"] if g["members"][:1] == ["hd-badref"]]


@pytest.mark.parametrize("depth", [1000, 5000])
async def test_deep_nesting_is_invalid_over_ws_and_http(stack: Stack, depth: int) -> None:
    deep = "[" * depth + "]" * depth
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-deep")
    try:
        await ws.send('{"op": "call", "ref": "d1", "method": "campaigns.list", "params": '
                      + deep + "}")
        reply = await ws.recv()
        assert reply["op"] == "reply" and reply["ok"] is False, reply
        assert reply["error"]["code"] == "invalid_request"
        await ws.send(deep)
        assert_reply_error(await ws.recv(), None, "invalid_request")
        await assert_usable(ws)
    finally:
        await ws.close()
    async with aiohttp.ClientSession() as session:
        url = f"{stack.gateways[0].url}/api/referrals"
        async with session.post(url, data='{"referrer": ' + deep + "}",
                                headers=auth("hd-deep")) as resp:
            assert_error(resp.status, await resp.json(), 400, "invalid_request")


async def test_replies_of_accepted_calls_arrive_before_an_abuse_close(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-abuse")
    refs = [f"o{i}" for i in range(10)]
    # Ten real commands, then a flood that closes the socket for repeated abuse.
    await send_batch(ws, [_call(ref, "groupbuy.get", campaign="guard", group=f"g{ref}")
                          for ref in refs] + ['{"op":"ping"}'] * (4 * BURST))
    got: dict[str, dict[str, Any]] = {}
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            frame = await ws.recv()
            if frame.get("ref") in refs:
                got[frame["ref"]] = frame
    assert await close_code(ws) == 1008
    assert set(got) == set(refs), sorted(got)
    for frame in got.values():  # answered by the game, not dropped with the socket
        assert_reply_error(frame, frame["ref"], "not_found")


# --- strings at the edge -------------------------------------------------------------------


async def test_non_utf8_bytes_in_headers_are_refused_and_harm_no_one(stack: Stack) -> None:
    gw = stack.gateways[0]
    async with aiohttp.ClientSession() as session:
        group = await open_group(session, stack, "hd-bytes-leader")
        path = f"{BASE}/{group['id']}/join".encode()
        bearer = token("hd-bytes-a").encode()
        head = (b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + bearer
                + b"\r\nIdempotency-Key: k\xff\xfe\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n")
        # A join with a bad key and a good join go in together: only the bad one fails.
        (status, body), (good_status, good) = await asyncio.gather(
            raw_http(gw.port, head),
            post(session, f"{gw.url}{BASE}/{group['id']}/join", "hd-bytes-b", key="ok-key"))
        assert_error(status, body, 400, "invalid_request")
        assert good_status == 200, good
        for header in (b"Authorization: Bearer \xff\xfe" + bearer,
                       b"Authorization: \xc3\x28 x"):
            head = (b"GET /api/orders HTTP/1.1\r\nHost: x\r\n" + header
                    + b"\r\nConnection: close\r\n\r\n")
            status, body = await raw_http(gw.port, head)
            assert_error(status, body, 401, "unauthorized")
        status, body = await get(session, f"{gw.url}{BASE}/{group['id']}", "hd-bytes-b")
        assert body["group"]["members"] == ["hd-bytes-leader", "hd-bytes-b"]


@pytest.mark.parametrize("claims", [
    {"sub": "hd-list", "role": ["user"]},
    {"sub": "hd-dict", "role": {"a": 1}},
    {"sub": "alice\n", "role": "user"},
    {"sub": "hd-region", "region": "Y\x00N"},
    {"sub": "hd-region2", "region": ["YN"]},
    {"sub": ["hd-sub"]},
    {"sub": "hd-exp", "exp": "soon"},
])
async def test_odd_claims_are_unauthorized(stack: Stack, claims: dict[str, Any]) -> None:
    signed = jwt.encode({"exp": int(time.time()) + 600, **claims}, SECRET, algorithm="HS256")
    gw = stack.gateways[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/api/orders",
                               headers={"Authorization": f"Bearer {signed}"}) as resp:
            assert_error(resp.status, await resp.json(), 401, "unauthorized")
    async with websockets.connect(f"{gw.ws_url}?token={signed}") as raw:
        assert_reply_error(json.loads(await raw.recv()), None, "unauthorized")


@pytest.mark.parametrize("body", [b"\n", b" ", b"\t\r\n ", b"\x00", b"\xff", b"\xef\xbb\xbf"])
async def test_a_body_of_no_json_is_refused_even_where_a_body_is_optional(
        stack: Stack, body: bytes) -> None:
    # Whitespace, NUL, bytes that are not UTF-8, a lone byte-order mark: not a JSON text,
    # so not "no body" either (the fuzzer once had whitespace taken as an application).
    gw = stack.gateways[0]
    user = f"hd-nobody-{body.hex()}"
    async with aiohttp.ClientSession() as session:
        async with session.post(gw.url + "/api/distributors/apply", data=body, headers={
                **auth(user), "Content-Type": "application/json"}) as resp:
            assert_error(resp.status, await resp.json(), 400, "invalid_request")
        status, found = await get(session, gw.url + "/api/distributors/me", user)
        assert status == 200 and found["distributor"] is None, found
        # No body at all is the route's defaults: the application is made.
        status, applied = await post(session, gw.url + "/api/distributors/apply", user)
        assert status == 200 and applied["distributor"]["status"] == "applied", applied


@pytest.mark.parametrize("value", ["alice\n", "\udcff", "a\x00", "x" * 65])
async def test_strings_in_bodies_are_checked_whole(stack: Stack, value: str) -> None:
    gw = stack.gateways[0]
    async with aiohttp.ClientSession() as session:
        body = json.dumps({"referrer": value})  # json escapes the surrogate and NUL
        async with session.post(gw.url + "/api/referrals", data=body,
                                headers=auth("hd-ref")) as resp:
            assert_error(resp.status, await resp.json(), 400, "invalid_request")
        status, found = await get(session, gw.url + "/api/referrals", "hd-ref")
        assert status == 200 and found["referral"] is None, found


async def test_a_lone_surrogate_ref_never_reaches_the_owner(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-surrogate")
    good = await WS.connect(stack.gateways[0].ws_url, "hd-surrogate-ok")
    try:
        await ws.send('{"op":"call","ref":"\\udcff","method":"groupbuy.open",'
                      '"params":{"campaign":"guard"}}')
        opened = await good.call("ok1", "groupbuy.open", {"campaign": "guard"})
        assert_reply_error(await ws.recv(), None, "invalid_request")
        assert opened["ok"], opened
    finally:
        await ws.close()
        await good.close()


# --- sizes, expiry, metrics ----------------------------------------------------------------


async def test_oversized_urls_and_headers_get_the_error_shape(stack: Stack) -> None:
    gw = stack.gateways[0]
    async with aiohttp.ClientSession() as session:
        async with session.get(gw.url + "/api/orders?x=" + "a" * 9000,
                               headers=auth("hd-size")) as resp:
            assert_error(resp.status, await resp.json(), 414, "uri_too_long")
        async with session.get(gw.url + "/api/orders",
                               headers={**auth("hd-size"), "X-Pad": "a" * 9000}) as resp:
            assert_error(resp.status, await resp.json(), 431, "headers_too_large")


async def test_a_socket_closes_when_its_token_expires(stack: Stack) -> None:
    short = token("hd-expiry", ttl=2)
    async with websockets.connect(f"{stack.gateways[0].ws_url}?token={short}") as raw:
        await raw.send('{"op":"subscribe","topic":"user:hd-expiry"}')
        started = time.monotonic()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(raw.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        assert time.monotonic() - started < 5


async def test_metrics_count_refusals_and_the_oldest_waiting_call(stack: Stack) -> None:
    ws = await WS.connect(stack.gateways[0].ws_url, "hd-metrics")
    try:
        await ws.send({"op": "call", "ref": "m1", "method": "campaigns.list",
                       "params": {"pad": "x" * FRAME_LIMIT}})
        assert_reply_error(await ws.recv(), "m1", "invalid_request")
    finally:
        await ws.close()
    async with aiohttp.ClientSession() as session:
        async with session.get(stack.gateways[0].url + "/metrics") as resp:
            text = await resp.text()
    lines = {line.rsplit(" ", 1)[0]: line.rsplit(" ", 1)[1] for line in text.splitlines()
             if line and not line.startswith("#")}
    assert float(lines['fission_ws_refused_frames_total{reason="too_large"}']) >= 1
    assert float(lines["fission_ws_oldest_call_seconds"]) >= 0
    assert "fission_ws_calls_waiting" in lines


async def test_http_over_the_rate_says_when_to_retry(stack: Stack) -> None:
    url = stack.gateways[0].url + "/api/orders"
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, dict[str, Any], str | None]:
            async with session.get(url, headers=auth("hd-httprate")) as resp:
                return resp.status, await resp.json(), resp.headers.get("Retry-After")

        answers = await asyncio.gather(*(one() for _ in range(BURST + 30)))
        limited = [(body, after) for status, body, after in answers if status == 429]
        assert limited, "over the burst, some requests must be refused"
        for body, after in limited:
            error = body["error"]
            assert set(error) == {"code", "message", "retry_after_ms"}, body
            assert error["code"] == "rate_limited" and error["retry_after_ms"] > 0
            assert after is not None and int(after) >= 1
        # A client alone again: refused, it waits as told and is let through. (Waiting as
        # one of the burst's refusals told is no promise: a request of the burst answered
        # later may have taken the token that came meanwhile.)
        status, body, _ = await one()
        while status == 200:  # the burst's refills, taken one by one
            status, body, _ = await one()
        await asyncio.sleep(body["error"]["retry_after_ms"] / 1000)  # as told
        status, _, _ = await one()
        assert status == 200
