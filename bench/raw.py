"""Raw limits: what one aiohttp process and one Postgres connection do with no game at all.

`python -m bench.raw --port P` serves `/ws` speaking the contract's frame shapes and
nothing more: a `call` is parsed and answered at once with a made-up group (the echo
limit), a `subscribe` registers the socket and answers a snapshot, and `POST /publish`
sends `count` event frames to every subscriber of a topic (the broadcast limit).
`insert_rate` measures batched inserts into Postgres.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections import defaultdict
from typing import Any

import asyncpg
from aiohttp import WSMsgType, web

from bench.serving import run_forever

_ids = itertools.count(1)


def _dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"))


class Raw:
    """Echo and broadcast, nothing else (no auth check, no limits, no persistence)."""

    def __init__(self) -> None:
        self.topics: dict[str, set[web.WebSocketResponse]] = defaultdict(set)

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        mine: set[str] = set()
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(msg.data)
                op, ref = frame.get("op"), frame.get("ref")
                if op == "call":
                    await ws.send_str(_dumps({"op": "reply", "ref": ref, "ok": True, "result": {
                        "group": {"id": f"e{next(_ids)}", "status": "open"}}}))
                elif op == "subscribe":
                    topic = str(frame.get("topic"))
                    self.topics[topic].add(ws)
                    mine.add(topic)
                    await ws.send_str(_dumps({"op": "snapshot", "topic": topic, "seq": 0,
                                              "data": {}}))
                elif op == "unsubscribe":
                    topic = str(frame.get("topic"))
                    self.topics[topic].discard(ws)
                    mine.discard(topic)
                elif op == "ping":
                    await ws.send_str('{"op":"pong"}')
        finally:
            for topic in mine:
                self.topics[topic].discard(ws)
        return ws

    async def publish(self, request: web.Request) -> web.Response:
        """Send `count` numbered events, shaped like `data`, to every subscriber of `topic`.

        All at once (a burst), or one every `interval_ms` (paced, each stamped when sent)
        with the last `together` frames at once, as a group's last join brings its
        completion and deal events with it.
        """
        body = await request.json()
        topic, count = str(body["topic"]), int(body["count"])
        template = dict(body.get("data") or {"type": "member_joined"})
        interval = float(body.get("interval_ms", 0)) / 1000
        together = max(1, int(body.get("together", 1)))
        began = time.monotonic()
        at = int(time.time() * 1000)
        sent = 0
        for seq in range(1, count + 1):
            if interval:
                # Pacing: the next frame is due `interval` after the previous one.
                step = min(seq, count - together + 1) - 1
                await asyncio.sleep(max(0.0, began + step * interval - time.monotonic()))
                at = int(time.time() * 1000)
            frame = _dumps({"op": "event", "topic": topic, "seq": seq,
                            "data": {**template, "at": at}})
            for ws in list(self.topics.get(topic, ())):
                if not ws.closed:
                    await ws.send_str(frame)
                    sent += 1
        return web.json_response({"sent": sent})


async def serve(port: int) -> None:
    raw = Raw()
    app = web.Application()
    app.router.add_get("/ws", raw.ws)
    app.router.add_post("/publish", raw.publish)
    await run_forever(app, port)


async def insert_rate(database_url: str, seconds: float, batch: int = 100,
                      durable: bool = False) -> dict[str, Any]:
    """Rows/s of `executemany` with `batch`-row batches, each its own transaction.

    `durable=False` writes a temp table (no WAL); `durable=True` a regular table, so each
    batch's commit waits for its WAL flush as Fission's group commits do.
    """
    conn: asyncpg.Connection = await asyncpg.connect(database_url)
    table = "bench_raw_rows"
    try:
        if durable:
            await conn.execute(f"DROP TABLE IF EXISTS {table}")
            await conn.execute(f"CREATE TABLE {table} (stream text, version bigint,"
                               " type text, data jsonb)")
        else:
            await conn.execute(f"CREATE TEMP TABLE {table} (stream text, version bigint,"
                               " type text, data jsonb)")
        payload = json.dumps({"type": "member_joined", "group": "g0123456789ab", "seq": 2,
                              "user": "bench-user", "at": int(time.time() * 1000)})
        rows, batches = 0, 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline and batches < 1_000_000:
            await conn.executemany(
                f"INSERT INTO {table} (stream, version, type, data) VALUES ($1, $2, $3, $4)",
                [("bench", rows + i, "member_joined", payload) for i in range(batch)])
            rows += batch
            batches += 1
        elapsed = time.perf_counter() - started
        if durable:
            await conn.execute(f"DROP TABLE {table}")
        return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed,
                "batch": batch, "durable": durable}
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
