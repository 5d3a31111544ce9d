"""Test clients: HTTP with tokens, and a WebSocket client that reads frames by kind."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import websockets

from server.auth import issue
from tests.support.configs import SECRET


def token(user: str, **kw: Any) -> str:
    return issue(SECRET, user, **kw)


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(user)}"}


async def post(session: aiohttp.ClientSession, url: str, user: str,
               body: Any = None, key: str | None = None) -> tuple[int, dict[str, Any]]:
    headers = auth(user)
    if key:
        headers["Idempotency-Key"] = key
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.json()


async def get(session: aiohttp.ClientSession, url: str, user: str
              ) -> tuple[int, dict[str, Any]]:
    async with session.get(url, headers=auth(user)) as resp:
        return resp.status, await resp.json()


class WS:
    """A socket that keeps unmatched frames so tests can wait for the one they expect."""

    def __init__(self, conn: websockets.ClientConnection) -> None:
        self.conn = conn

    @classmethod
    async def connect(cls, url: str, user: str | None = None) -> WS:
        target = f"{url}?token={token(user)}" if user else url
        return cls(await websockets.connect(target, max_size=2**22))

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.conn.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.conn.recv(), timeout)
        frame: dict[str, Any] = json.loads(raw)
        return frame

    async def until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        """The first frame matching `predicate` (others are discarded)."""
        async with asyncio.timeout(timeout):
            while True:
                frame = await self.recv(timeout)
                if predicate(frame):
                    return frame

    async def call(self, ref: str, method: str, params: dict[str, Any],
                   timeout: float = 10.0, retries: int = 20) -> dict[str, Any]:
        """The reply to a call. A `rate_limited` refusal that says `retry_after_ms` is
        sent again with the same ref after that wait (up to `retries` times), as a client
        of the contract does; the last reply is returned either way."""
        frame = {"op": "call", "ref": ref, "method": method, "params": params}
        for _ in range(retries):
            await self.send(frame)
            reply = await self.until(
                lambda f: f.get("op") == "reply" and f.get("ref") == ref, timeout)
            error = reply.get("error") or {}
            if error.get("code") != "rate_limited" or "retry_after_ms" not in error:
                return reply
            await asyncio.sleep(error["retry_after_ms"] / 1000)  # the wait the server set
        return reply

    async def close(self) -> None:
        await self.conn.close()
