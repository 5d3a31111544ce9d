"""Server text frames on the wire, checked against aiohttp's own frame reader."""

from __future__ import annotations

import pytest
from aiohttp import ClientSession, WSMsgType, web
from aiohttp.test_utils import TestServer

from server.wire import text_frame, text_header


@pytest.mark.parametrize(("length", "header"), [
    (0, b"\x81\x00"),
    (125, b"\x81\x7d"),
    (126, b"\x81\x7e\x00\x7e"),
    (65535, b"\x81\x7e\xff\xff"),
    (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
])
def test_header_lengths(length: int, header: bytes) -> None:
    assert text_header(length) == header


@pytest.mark.parametrize("payload", [
    b"", b"{}", '{"op":"event","data":"\u62fc\u56e2"}'.encode(), b"x" * 125, b"y" * 126,
    b"z" * 70_000,
], ids=["empty", "object", "utf8", "125", "126", "70000"])
async def test_a_websocket_client_reads_what_we_write(payload: bytes) -> None:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        request.transport.write(text_frame(payload))  # beside aiohttp's own writer
        await ws.send_str("after")  # and aiohttp's frames still follow in order
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    async with TestServer(app) as server, ClientSession() as session, \
            session.ws_connect(server.make_url("/ws")) as ws:
        first = await ws.receive()
        second = await ws.receive()
        await ws.close()
    assert (first.type, first.data) == (WSMsgType.TEXT, payload.decode())
    assert (second.type, second.data) == (WSMsgType.TEXT, "after")
