"""`fission serve | token | config check | lottery verify`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from server import logs
from server.auth import issue
from storage.config import Config, ConfigError, load

log = logging.getLogger("fission.cli")


def _config(path: str) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        print(f"fission: bad config: {exc.source}: {exc.key}: {exc.reason}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_token(args: argparse.Namespace) -> int:
    config = _config(args.config)
    try:
        token = issue(config.auth.secret, args.user, role=args.role, region=args.region,
                      device=args.device, ttl=args.ttl)
    except ValueError as exc:
        print(f"fission: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _config(args.path)
    print(f"{config.source}: ok ({len(config.campaigns)} campaigns)")
    return 0


def cmd_lottery_verify(args: argparse.Namespace) -> int:
    """Check a lottery's audit (a URL of its audit route, or a saved file): 0 when every
    draw matches, 1 at the first that does not, 2 when it cannot be read."""
    import json
    import urllib.request

    # The one game module a tool of the server's reads: the verifier anyone could write
    # from docs/api.md ("Lottery: verifying the draws"); no request path uses it.
    from games.lottery.audit import check, report

    source: str = args.source
    try:
        if source.startswith(("http://", "https://")):
            request = urllib.request.Request(source, headers={"Accept": "application/json"})
            if args.token:
                request.add_header("Authorization", f"Bearer {args.token}")
            with urllib.request.urlopen(request, timeout=60) as response:
                body = json.loads(response.read())
            document = body.get("result", body) if isinstance(body, dict) else body
        else:
            document = json.loads(Path(source).read_text(encoding="utf-8"))
        verdict = check(document)
    except (OSError, ValueError) as exc:
        print(f"fission: cannot verify {source}: {exc}", file=sys.stderr)
        return 2
    print(report(verdict))
    return 0 if verdict.ok else 1


async def _serve(config: Config, host: str, port: int) -> None:
    from aiohttp import web

    from actors import runtime
    from server.app import Server, make_app, shutdown_actors
    from server.http_api import PARSER_LIMITS
    from storage import db
    from storage.embedded import Embedded, start_postgres, start_redis
    from storage.migrate import migrate

    embedded = Embedded()
    data_dir = Path(config.storage.data_dir)
    loop = asyncio.get_running_loop()
    try:
        database_url = config.storage.database_url
        if database_url is None:
            database_url = await loop.run_in_executor(None, start_postgres, data_dir, embedded)
            log.info("embedded postgres started", extra={"fields": {"dir": str(data_dir)}})
        redis_url = config.storage.redis_url
        if redis_url is None:
            redis_url = await loop.run_in_executor(None, start_redis, data_dir, embedded)
            log.info("embedded redis started")
        await db.ensure_database(database_url)
        conn = await db.connect(database_url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        log.info("migrations", extra={"fields": {"applied": applied}})
        owns_ray = await loop.run_in_executor(None, runtime.connect, config)
        server = Server(config, database_url, redis_url)
        await server.start()
        runner = web.AppRunner(make_app(server), access_log=None, handle_signals=False,
                               shutdown_timeout=3.0,
                               max_line_size=PARSER_LIMITS["max_line_size"],
                               max_field_size=PARSER_LIMITS["max_field_size"])
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("serving", extra={"fields": {"url": f"http://{host}:{port}"}})
        print(f"fission: serving on http://{host}:{port}", file=sys.stderr, flush=True)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        await server.stop()
        # Listening ends and the requests in flight are answered (up to shutdown_timeout)
        # with everything they need still open; only then does the server close it.
        await runner.cleanup()
        await server.close()
        if owns_ray:
            await shutdown_actors(server)
    finally:
        embedded.stop()


def ray_environment(config: Config) -> dict[str, str]:
    """Variables Ray reads when it is imported: set before the first `import ray`.

    Ray binds and connects on 127.0.0.1 only (an embedded, single-machine default), and a
    cluster started by `ray start` requires token authentication from its drivers.
    """
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
    if config.ray.address:
        env["RAY_AUTH_MODE"] = "token"
    return env


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args.config)
    for name, value in ray_environment(config).items():
        os.environ.setdefault(name, value)
    logs.setup()
    host = args.host or config.server.host
    port = args.port or config.server.port
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(config, host, port))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="fission", description="Fission engagement server")
    sub = top.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--config", default="config.toml")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.set_defaults(run=cmd_serve)
    token = sub.add_parser("token", help="print a signed token")
    token.add_argument("user")
    token.add_argument("--role", default="user", choices=["user", "marketer"])
    token.add_argument("--region")
    token.add_argument("--device")
    token.add_argument("--ttl", type=int, default=86400, help="seconds (default a day)")
    token.add_argument("--config", default="config.toml")
    token.set_defaults(run=cmd_token)
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("path", nargs="?", default="config.toml")
    check.set_defaults(run=cmd_config_check)
    lottery = sub.add_parser("lottery", help="lottery tools")
    lottery_sub = lottery.add_subparsers(dest="lottery_command", required=True)
    verify = lottery_sub.add_parser(
        "verify", help="replay every draw of a lottery's audit from its revealed seed")
    verify.add_argument("source", help="the audit's URL (/api/lotteries/{id}/audit) or a file")
    verify.add_argument("--token", help="a bearer token, for a server that asks for one")
    verify.set_defaults(run=cmd_lottery_verify)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
