"""Client code paths shared by every system under test.

Every client answers `call(method, params)` with a reply shaped like the contract's
WebSocket reply (`{"ok": true, "result": ...}` or `{"ok": false, "error": {...}}`), so the
team loop is the same code whether it talks to Fission over /ws or HTTP, to the mall
baseline, or to the raw echo server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from server.auth import issue

Reply = dict[str, Any]
CALL_TIMEOUT = 10.0
_refs = itertools.count(1)


def token(secret: str, user: str) -> str:
    """A JWT for `user` signed with the bench secret (the public contract's identity)."""
    return issue(secret, user, ttl=6 * 3600)


def timeout_reply() -> Reply:
    return {"ok": False, "error": {"code": "timeout", "message": "no reply in time"}}


class WsClient:
    """One authenticated socket; replies matched by `ref`, events handed to `on_event`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, user: str) -> None:
        self.ws = ws
        self.user = user
        self.pending: dict[str, asyncio.Future[Reply]] = {}
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.on_event: Callable[[dict[str, Any], str], None] | None = None
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, session: aiohttp.ClientSession, ws_url: str, secret: str,
                      user: str) -> WsClient:
        ws = await session.ws_connect(f"{ws_url}?token={token(secret, user)}",
                                      max_msg_size=2**22, autoping=True, heartbeat=None)
        return cls(ws, user)

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op = frame.get("op")
                if op == "event":
                    if self.on_event is not None:
                        self.on_event(frame, msg.data)
                    continue
                key = str(frame.get("ref")) if op == "reply" else f"{op}:{frame.get('topic', '')}"
                future = self.pending.pop(key, None) or self.waiters.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(frame)
        finally:
            for future in [*self.pending.values(), *self.waiters.values()]:
                if not future.done():
                    future.set_exception(ConnectionError("socket closed"))

    async def call(self, method: str, params: dict[str, Any]) -> Reply:
        """Send a `call` frame; its reply (or a timeout reply)."""
        ref = f"{self.user}-{next(_refs)}"
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self.pending[ref] = future
        await self.ws.send_str(json.dumps({"op": "call", "ref": ref, "method": method,
                                           "params": params}))
        try:
            return await asyncio.wait_for(future, CALL_TIMEOUT)
        except TimeoutError:
            self.pending.pop(ref, None)
            return timeout_reply()

    async def request(self, frame: dict[str, Any], wait_for: str,
                      timeout: float = 30.0) -> dict[str, Any]:
        """Send `frame` (given a ref); the first frame keyed `op:topic` == `wait_for`, or
        the error reply to its ref."""
        ref = f"{self.user}-r{next(_refs)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[wait_for] = future
        self.pending[ref] = future
        try:
            await self.ws.send_str(json.dumps({**frame, "ref": ref}))
            return await asyncio.wait_for(future, timeout)
        finally:
            self.waiters.pop(wait_for, None)
            self.pending.pop(ref, None)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


Route = Callable[[str, dict[str, Any]], str]


def fission_route(base: str) -> Route:
    """Fission's HTTP API for the commands the bench sends (the contract's routes)."""
    def route(method: str, params: dict[str, Any]) -> str:
        if method == "lottery.draw":
            return f"{base}{lottery_path(params['campaign'])}"
        if method.startswith("bargain."):
            bargain = f"{base}/api/bargains/{params['campaign']}"
            return bargain if method == "bargain.start" else f"{bargain}/{params['bargain']}/help"
        groups = f"{base}/api/groupbuys/{params['campaign']}/groups"
        return groups if method == "groupbuy.open" else f"{groups}/{params['group']}/join"
    return route


def lottery_path(campaign: str) -> str:
    """The contract's draw route, which the mall baseline serves too."""
    return f"/api/lotteries/{campaign}/draws"


MALL_PATHS = {"groupbuy.open": "/open", "groupbuy.join": "/join",
              "bargain.start": "/bargain/start", "bargain.help": "/bargain/help"}


def mall_route(base: str) -> Route:
    """The mall baseline's endpoints (the parameters travel in the body; a draw's campaign
    in its path, as the contract's)."""
    def route(method: str, params: dict[str, Any]) -> str:
        if method == "lottery.draw":
            return base + lottery_path(params["campaign"])
        return base + MALL_PATHS[method]
    return route


class HttpClient:
    """One user over a shared keep-alive session; the same reply shape as `WsClient`."""

    def __init__(self, session: aiohttp.ClientSession, route: Route, secret: str, user: str,
                 send_body: bool) -> None:
        self.session = session
        self.route = route
        self.user = user
        self.headers = {"Authorization": f"Bearer {token(secret, user)}"}
        self.send_body = send_body

    async def call(self, method: str, params: dict[str, Any]) -> Reply:
        headers = {**self.headers, "Idempotency-Key": f"{self.user}-{next(_refs)}"}
        body = params if self.send_body else None
        try:
            async with self.session.post(self.route(method, params), json=body,
                                         headers=headers,
                                         timeout=aiohttp.ClientTimeout(total=CALL_TIMEOUT)
                                         ) as resp:
                data = await resp.json(content_type=None)
        except TimeoutError:
            return timeout_reply()
        if resp.status < 300:
            return {"ok": True, "result": data}
        return {"ok": False, "error": data.get("error", {"code": f"http_{resp.status}"})}

    async def close(self) -> None:
        return None


def now_ms() -> float:
    """Wall clock in epoch milliseconds (what servers stamp events with)."""
    return time.time() * 1000.0
