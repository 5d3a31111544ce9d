"""The gateway process: wires Postgres, Redis, Ray actors and the aiohttp application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import Any

import asyncpg
import ray
import redis.asyncio as aioredis
from aiohttp import web

from actors import gcstats, paygates, runtime
from actors.client import ShardClient
from actors.pipeline_client import PipelineClient
from games import topics
from games.registry import GAMES
from server import http_api, state, ws
from server.auth import Identity, Verifier
from server.errors import ApiError
from server.gateway import Gateway
from server.hub import Hub
from server.limits import UserLimiter
from server.metrics import Metrics
from server.paydesk import PayDesk
from storage import db, read_models, reads
from storage.config import Config
from storage.live import Live
from storage.ranks import RankCache

log = logging.getLogger("fission.app")

class Server:
    """One gateway: HTTP + /ws over shared actors, Postgres and Redis."""

    def __init__(self, config: Config, database_url: str, redis_url: str) -> None:
        self.config = config
        self.database_url = database_url
        self.redis_url = redis_url
        self.metrics = Metrics()
        gcstats.install()
        self.connections: set[ws.Connection] = set()
        # Sockets are the gateway's long-lived objects: frozen as they come (see there).
        self.population = gcstats.Population()
        self.corked = ws.Corked()
        self.stopping = False
        cfg = config.server
        self.http_limiter = UserLimiter(cfg.frames_per_second, cfg.frame_burst)
        self.sockets_by_user: Counter[str] = Counter()
        self.sockets_by_ip: Counter[str] = Counter()
        # Calls the sockets wait on, by when each began (oldest first): /metrics reports
        # the oldest's age, the first sign of a reply that is not coming.
        self.pending_calls: dict[object, float] = {}
        self.verify = Verifier(config.auth.secret)

    async def start(self) -> None:
        """Connect to everything and wait until the actors have rebuilt their state."""
        self.pool: asyncpg.Pool = await db.create_pool(self.database_url, min_size=1,
                                                         max_size=10)
        self.redis = aioredis.from_url(self.redis_url)
        cfg = self.config.server
        self.live = Live(self.redis, cfg.history_size, cfg.history_ttl_seconds)
        self.hub = Hub(self.redis)
        await self.hub.start()
        self.shards = runtime.shard_hosts(self.config, self.database_url, self.redis_url)
        self.pipeline = runtime.pipeline_host(self.config, self.database_url, self.redis_url)
        await asyncio.gather(*(h.ready.remote() for h in self.shards),
                             self.pipeline.ready.remote())
        self.client = ShardClient(self.shards, observe=self.metrics.actor_call,
                                  max_inflight=self.config.ray.calls_in_flight)
        pipeline = PipelineClient(self.pipeline)
        self.paydesk = PayDesk(self.config, await paygates.open_gateway(self.config, self.pool),
                               self.client, pipeline)
        self.gateway = Gateway(self.config, self.client, self.pool, self.metrics, pipeline,
                               self.paydesk)
        self.gateway.ranks = RankCache(self.redis)  # ranked reads (storage.ranks)
        gcstats.settle()

    async def stop(self) -> None:
        """Tell every socket to reconnect elsewhere and wait (briefly) for them to go.
        What the server holds stays open for the requests still being answered: `close`
        ends it once the HTTP side has stopped."""
        self.stopping = True
        for connection in list(self.connections):
            connection.kill(ws.CLOSE_RESTART, "server_restart",
                            "server restarting: reconnect with your last seq",
                            drain=ws.DRAIN_ON_RESTART)
        closing = [c.closing for c in self.connections if c.closing is not None]
        if closing:
            await asyncio.wait(closing, timeout=ws.DRAIN_ON_RESTART + 2.0)

    async def close(self) -> None:
        """Close connections (Redis, Postgres, the sandbox's signer): after `stop`, once no
        request is being answered."""
        await self.hub.stop()
        await self.paydesk.close()
        await self.redis.aclose()
        await self.pool.close()

    # --- used by the transports -----------------------------------------------------------

    def authorize_topic(self, who: Identity, topic: str) -> None:
        """Refuse topics that do not exist or are someone else's."""
        found = topics.parse(topic)
        if found is None:
            raise ApiError("not_found", f"no topic {topic!r}")
        if found.user is not None:
            if found.user != who.user:
                raise ApiError("forbidden", "you may only subscribe to your own user topic")
            return
        campaign = self.config.campaign(str(found.campaign))
        if campaign is None or campaign.kind != found.kind or (
                found.instance is None and GAMES[campaign.kind].read_model.campaign_row is None):
            raise ApiError("not_found", f"no topic {topic!r}")

    async def snapshot(self, topic: str) -> tuple[int, dict[str, Any]]:
        """A topic's current seq and state, for subscribe and resync."""
        found = topics.parse(topic)
        if found is not None and found.user is not None:
            return await self.live.last_seq(topic), {"user": found.user}
        if found is None or found.kind not in GAMES:
            raise ApiError("not_found", f"no topic {topic!r}")
        game = GAMES[found.kind]
        model = game.read_model
        # A campaign-wide topic's snapshot is the row the game names for it.
        instance = found.instance if found.instance is not None else model.campaign_row
        if instance is None:
            raise ApiError("not_found", f"no topic {topic!r}")
        row = await read_models.one(self.pool, model, str(found.campaign), instance)
        if row is None:
            raise ApiError("not_found", f"no {model.id_param} {instance!r} in campaign"
                                        f" {found.campaign!r}")
        return int(row["version"]), {model.view_key: game.view(row)}

    async def health(self) -> list[str]:
        """What does not answer: an empty list means healthy."""
        problems = []
        checks = {
            "postgres": self.pool.fetchval("SELECT 1"),
            "redis": self.redis.ping(),
            "ray": asyncio.gather(*(h.ready.remote() for h in self.shards)),
        }
        for name, check in checks.items():
            try:
                await asyncio.wait_for(check, 3.0)
            except Exception as exc:
                problems.append(f"{name}: {type(exc).__name__}")
        return problems

    async def render_metrics(self) -> str:
        stats: list[dict[str, Any]] = []
        with contextlib.suppress(Exception):
            stats = await asyncio.wait_for(
                asyncio.gather(*(h.stats.remote() for h in self.shards)), 2.0)
        outbox = None
        with contextlib.suppress(Exception):
            outbox = await reads.outbox_lag(self.pool)
        pipeline = None
        with contextlib.suppress(Exception):
            pipeline = await asyncio.wait_for(self.pipeline.stats.remote(), 2.0)
        oldest = next(iter(self.pending_calls.values()), None)
        waiting = 0.0 if oldest is None else time.monotonic() - oldest
        return self.metrics.render(stats, outbox, pipeline, oldest_call_seconds=waiting,
                                   calls_waiting=len(self.pending_calls))


def make_app(server: Server) -> web.Application:
    """The aiohttp application for `server`."""
    app = web.Application(client_max_size=server.config.server.max_body_bytes,
                          middlewares=[http_api.errors_and_logs])
    app[state.SERVER] = server
    http_api.routes(app)
    app.router.add_get("/ws", ws.handle)
    return app


async def shutdown_actors(server: Server) -> None:
    """Flush the actors' pending commits (when this process owns the cluster)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(
            asyncio.gather(*(h.shutdown.remote() for h in server.shards),
                           server.pipeline.shutdown.remote()), 5.0)
    runtime.kill_all(server.config)
    ray.shutdown()
