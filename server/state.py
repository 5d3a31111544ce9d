"""The application's typed state keys (aiohttp `AppKey`s), in one place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from server.app import Server

SERVER: web.AppKey[Server] = web.AppKey("server")
"""The gateway `Server` every handler serves from."""
