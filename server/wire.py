"""WebSocket text frames as bytes on the wire (RFC 6455 §5.2), server to client.

A live event goes to every socket watching its topic as the same bytes: the hub frames
it once (this header and the payload Redis carried), and every watching socket writes it.
Server frames are never masked, and this gateway never compresses (`compress=False`).
"""

from __future__ import annotations

import struct

_TEXT_FIN = 0x81


def text_header(length: int) -> bytes:
    """The header of a final, unmasked text frame carrying `length` payload bytes."""
    if length < 126:
        return bytes((_TEXT_FIN, length))
    if length < 1 << 16:
        return struct.pack("!BBH", _TEXT_FIN, 126, length)
    return struct.pack("!BBQ", _TEXT_FIN, 127, length)


def text_frame(payload: bytes) -> bytes:
    """A whole text frame around `payload` (UTF-8 JSON)."""
    return text_header(len(payload)) + payload
