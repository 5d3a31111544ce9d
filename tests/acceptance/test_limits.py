"""Limits a deployment sets in `[server]`: origins, sockets per user and per address, and
deadlines for sockets that never prove who they are or never say anything.

A gateway of its own, on the session's actors, with small limits so they are reached.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
import websockets

from tests.acceptance.conftest import extra_gateway
from tests.acceptance.test_guard import assert_error, assert_reply_error, assert_usable
from tests.support.client import WS, token
from tests.support.stack import Gateway, Stack

pytestmark = pytest.mark.acceptance

LIMITS: dict[str, Any] = {
    "allowed_origins": ["https://shop.example.com"], "max_sockets_per_user": 2,
    "max_sockets_per_ip": 6, "auth_timeout_seconds": 1, "idle_timeout_seconds": 2}


@pytest.fixture(scope="module")
async def limited(stack: Stack, tmp_path_factory: pytest.TempPathFactory
                  ) -> AsyncIterator[Gateway]:
    async with extra_gateway(stack, tmp_path_factory.mktemp("limits"), LIMITS) as gateway:
        yield gateway


async def _closed_with(conn: websockets.ClientConnection, timeout: float = 10) -> int:
    """Read until the server closes; its close code."""
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(timeout):
            while True:
                await conn.recv()
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def test_a_handshake_from_another_origin_is_forbidden(limited: Gateway) -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(limited.ws_url, origin="https://evil.example.net")
        assert refused.value.status == 403
        # The refusal is the contract's error shape.
        async with session.get(limited.ws_url, headers={
                "Origin": "https://evil.example.net", "Connection": "Upgrade",
                "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}) as resp:
            assert_error(resp.status, await resp.json(), 403, "forbidden")
        for origin in ("https://shop.example.com", None):  # allowed, and a non-browser
            async with session.ws_connect(f"{limited.ws_url}?token={token('lm-origin')}",
                                          origin=origin) as ws:
                await ws.send_str('{"op":"ping"}')
                assert json.loads((await ws.receive()).data) == {"op": "pong"}


async def test_a_user_over_the_socket_cap_is_closed_4029(limited: Gateway) -> None:
    async with AsyncExitStack() as sockets:
        kept = [await sockets.enter_async_context(
            websockets.connect(f"{limited.ws_url}?token={token('lm-user')}"))
            for _ in range(LIMITS["max_sockets_per_user"])]
        for conn in kept:
            await conn.send('{"op":"ping"}')
            assert json.loads(await conn.recv()) == {"op": "pong"}
        async with websockets.connect(f"{limited.ws_url}?token={token('lm-user')}") as extra:
            assert_reply_error(json.loads(await extra.recv()), None, "too_many_connections")
            assert await _closed_with(extra) == 4029
        # Over an auth frame too, with its ref.
        async with websockets.connect(limited.ws_url) as late:
            await late.send(json.dumps({"op": "auth", "ref": "a1",
                                        "token": token("lm-user")}))
            assert_reply_error(json.loads(await late.recv()), "a1", "too_many_connections")
            assert await _closed_with(late) == 4029
        await kept[0].close()
        # A socket closed is a place freed (once the server has seen the close).
        async with asyncio.timeout(10):
            while True:
                again = await websockets.connect(f"{limited.ws_url}?token={token('lm-user')}")
                await again.send('{"op":"ping"}')
                frame = json.loads(await again.recv())
                await again.close()
                if frame == {"op": "pong"}:
                    break


async def test_an_address_over_the_socket_cap_is_closed_4029(limited: Gateway) -> None:
    cap = LIMITS["max_sockets_per_ip"]
    async with AsyncExitStack() as sockets:
        for n in range(cap):
            ws = await sockets.enter_async_context(
                websockets.connect(f"{limited.ws_url}?token={token(f'lm-ip{n}')}"))
            await ws.send('{"op":"ping"}')
            assert json.loads(await ws.recv()) == {"op": "pong"}
        async with websockets.connect(f"{limited.ws_url}?token={token('lm-ipx')}") as extra:
            assert_reply_error(json.loads(await extra.recv()), None, "too_many_connections")
            assert await _closed_with(extra) == 4029


async def test_a_socket_that_never_authenticates_is_closed_4001(limited: Gateway) -> None:
    async with websockets.connect(limited.ws_url) as anonymous:
        await anonymous.send('{"op":"ping"}')  # talking is not proving who you are
        assert json.loads(await anonymous.recv()) == {"op": "pong"}
        assert await _closed_with(anonymous) == 4001


async def test_a_socket_that_never_sends_is_closed_4002(limited: Gateway) -> None:
    async with websockets.connect(f"{limited.ws_url}?token={token('lm-idle')}") as silent:
        assert await _closed_with(silent) == 4002
    ws = await WS.connect(limited.ws_url, "lm-talker")
    try:
        await assert_usable(ws)
        # Past the idle deadline (the time under test), a socket that spoke stays open.
        await asyncio.sleep(LIMITS["idle_timeout_seconds"] + 0.5)
        await assert_usable(ws)
    finally:
        await ws.close()
