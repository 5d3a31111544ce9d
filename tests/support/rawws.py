"""A WebSocket client that sends frames byte for byte (RFC 6455), for fuzzing the gateway.

Client libraries refuse to send what a fuzzer needs: a TEXT frame whose payload is not
UTF-8, hundreds of frames in one write, a frame far over any size limit. This one masks
and frames whatever payload it is given, answers the server's pings, and reads the
server's frames (text, binary, close) as they come. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
HOST = "127.0.0.1"


@dataclass(frozen=True)
class Frame:
    """A frame from the server: its opcode and payload (a close's code is parsed)."""

    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        """The status code of a close frame (1005 when it carried none)."""
        if self.opcode != CLOSE:
            return None
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else 1005


class HandshakeRefused(Exception):
    """The server answered the upgrade with something other than 101."""

    def __init__(self, status: int, head: bytes) -> None:
        super().__init__(f"handshake answered {status}: {head[:300]!r}")
        self.status = status


def frame_bytes(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """One client frame (masked, as a client's must be) around `payload`."""
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawSocket:
    """One client connection; `frames` fills as the server writes (see `read_forever`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.frames: list[Frame] = []
        self.closed: Frame | None = None  # the server's close frame, once it came
        self.eof = False  # the TCP connection ended
        self.arrived = asyncio.Event()  # set whenever a frame (or the end) arrives

    @classmethod
    async def connect(cls, port: int, target: str = "/ws", timeout: float = 10.0
                      ) -> RawSocket:
        """Open a socket to 127.0.0.1:`port` and complete the handshake for `target`."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {target} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                     .encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split()[1])
        if status != 101:
            writer.close()
            raise HandshakeRefused(status, head)
        return cls(reader, writer)

    async def send(self, frames: Iterable[tuple[int, bytes]]) -> None:
        """Write frames (opcode, payload) in one write, as a burst arrives."""
        data = b"".join(frame_bytes(opcode, payload) for opcode, payload in frames)
        try:
            self.writer.write(data)
            await self.writer.drain()
        except ConnectionError:
            self.eof = True  # the server closed first; what it said is in `frames`

    async def read_forever(self) -> None:
        """Read the server's frames into `frames` until its close frame or the end of
        the connection (run it as a task; pings are answered here)."""
        try:
            while True:
                head = await self.reader.readexactly(2)
                opcode, length = head[0] & 0x0F, head[1] & 0x7F
                if length == 126:
                    length = struct.unpack("!H", await self.reader.readexactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                if head[1] & 0x80:  # a server must not mask; read the key anyway
                    await self.reader.readexactly(4)
                payload = await self.reader.readexactly(length)
                frame = Frame(opcode, payload)
                if opcode == PING:
                    await self.send([(PONG, payload)])
                    continue
                self.frames.append(frame)
                self.arrived.set()
                if opcode == CLOSE:
                    self.closed = frame
                    await self.send([(CLOSE, payload[:2])])  # the closing handshake
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.eof = True
            self.arrived.set()

    async def close(self) -> None:
        """Send a normal close (if the server has not closed) and drop the connection."""
        if self.closed is None and not self.eof:
            await self.send([(CLOSE, struct.pack("!H", 1000))])
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), 2.0)
        except (TimeoutError, ConnectionError):
            pass
