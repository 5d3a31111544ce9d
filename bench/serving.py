"""Running a bench-only aiohttp server (baseline or raw) until SIGTERM ends its process."""

from __future__ import annotations

import asyncio

from aiohttp import web


async def healthz(request: web.Request) -> web.Response:
    """The readiness answer the bench polls before driving a server."""
    return web.json_response({"status": "ok"})


async def run_forever(app: web.Application, port: int, *, reuse_port: bool = False) -> None:
    """Serve `app` (with `/healthz` added) on 127.0.0.1:`port` until the process ends."""
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, reuse_port=reuse_port).start()
    try:
        await asyncio.Event().wait()  # until SIGTERM ends the process
    finally:
        await runner.cleanup()
