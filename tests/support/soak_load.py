"""One load process of the soak test: sockets that each make one call at a time.

Every socket is its own user and joins one of its process's hot groups of a 5-person
campaign, the next call as soon as the last one's reply arrives; when a group fills, a
fresh leader opens its replacement over HTTP. A refusal with `retry_after_ms` is retried
with the same ref after that wait, as a client of the contract does. Each round prints one
JSON line: how many calls were made and answered, the longest wait for a reply, and
the calls that waited past the stall limit (a reply that never came counts as one).

    python -m tests.support.soak_load --ws URL --http URL --name p1 --rounds 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import random
import sys
import time
from collections import Counter
from typing import Any

import aiohttp

from tests.support.client import token

CAMPAIGN = "soak"
GIVE_UP = 30.0  # seconds a call waits before the client gives up (and counts a stall)


class Round:
    """One round's sockets, hot groups and tallies."""

    def __init__(self, args: argparse.Namespace, index: int,
                 session: aiohttp.ClientSession) -> None:
        self.args, self.index, self.session = args, index, session
        self.prefix = f"{args.name}r{index}"
        self.hot: list[str] = []
        self.replacing: set[int] = set()
        self.leaders = itertools.count()
        self.codes: Counter[str] = Counter()
        self.waits: list[float] = []
        self.retried = 0
        self.base = f"{args.http}/api/groupbuys/{CAMPAIGN}/groups"

    async def open_group(self) -> str:
        """A fresh leader opens a group; its id."""
        leader = f"{self.prefix}L{next(self.leaders)}"
        async with self.session.post(
                self.base, headers={"Authorization": f"Bearer {token(leader)}"}) as resp:
            body = await resp.json()
            if resp.status != 201:
                raise RuntimeError(f"open failed: {resp.status} {body}")
            return str(body["group"]["id"])

    async def replace(self, slot: int, full: str) -> None:
        """Replace the hot group in `slot` once it is `full` (once, however many
        sockets saw it fill)."""
        if self.hot[slot] != full or slot in self.replacing:
            return
        self.replacing.add(slot)
        try:
            self.hot[slot] = await self.open_group()
        finally:
            self.replacing.discard(slot)

    async def player(self, number: int, deadline: float) -> None:
        user = f"{self.prefix}u{number}"
        rng = random.Random(f"{self.prefix}-{number}")
        async with self.session.ws_connect(f"{self.args.ws}?token={token(user)}") as ws:
            for call in itertools.count():
                if time.monotonic() >= deadline:
                    return
                slot = rng.randrange(len(self.hot))
                group = self.hot[slot]
                ref = f"{user}-{call}"
                frame = json.dumps({"op": "call", "ref": ref, "method": "groupbuy.join",
                                    "params": {"campaign": CAMPAIGN, "group": group}})
                while True:
                    sent = time.monotonic()
                    await ws.send_str(frame)
                    reply = await self.reply(ws, ref)
                    self.waits.append(time.monotonic() - sent)
                    if reply is None:
                        self.codes["no_reply"] += 1
                        return  # the client gave up on this socket
                    error = reply.get("error") or {}
                    if error.get("code") == "rate_limited" and "retry_after_ms" in error:
                        self.retried += 1
                        await asyncio.sleep(error["retry_after_ms"] / 1000)  # as told
                        continue
                    break
                if reply.get("ok"):
                    self.codes["ok"] += 1
                    if reply["result"]["group"]["status"] != "open":
                        await self.replace(slot, group)
                else:
                    code = str(error.get("code"))
                    self.codes[code] += 1
                    if code in ("group_full", "group_closed"):
                        await self.replace(slot, group)

    async def reply(self, ws: aiohttp.ClientWebSocketResponse, ref: str
                    ) -> dict[str, Any] | None:
        """The reply to `ref` (other frames are skipped), or None after GIVE_UP."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(GIVE_UP):
                async for message in ws:
                    frame = json.loads(message.data)
                    if frame.get("op") == "reply" and frame.get("ref") == ref:
                        return dict(frame)
        return None

    async def run(self) -> dict[str, Any]:
        self.hot = list(await asyncio.gather(*(self.open_group()
                                               for _ in range(self.args.groups))))
        deadline = time.monotonic() + self.args.seconds
        await asyncio.gather(*(self.player(n, deadline) for n in range(self.args.sockets)))
        stall = self.args.stall
        return {"round": self.index, "calls": len(self.waits), "retried": self.retried,
                "max_wait": max(self.waits, default=0.0),
                "stalled": sum(1 for w in self.waits if w > stall),
                "codes": dict(self.codes)}


async def main(args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for index in range(args.rounds):
            result = await Round(args, index, session).run()
            print(json.dumps(result), flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ws", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--name", required=True, help="user id prefix of this process")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--sockets", type=int, default=50)
    parser.add_argument("--groups", type=int, default=5)
    parser.add_argument("--stall", type=float, default=5.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
