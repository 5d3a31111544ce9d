"""The Ray actors: thin hosts around the plain asyncio owners.

Named and detached, so every gateway process reaches the same ones and a gateway restart
leaves them running. Ray restarts a killed host (`max_restarts=-1`); its constructor
starts the owner again, which rebuilds from Postgres and re-arms its deadlines. Calls in
flight when it died are not retried by Ray: they answer `unavailable`, and the client
retries with its idempotency key, so a command applied just before the crash is never
applied twice (a blind retry of a keyless open could open a second group).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import ray

from actors import gcstats
from actors.client import ShardClient
from actors.owner import Owner
from actors.pipeline_worker import PipelineWorker
from actors.routing import shard_name
from storage.config import Config

log = logging.getLogger("fission.hosts")


def _die(exc: BaseException) -> None:
    # The owner's memory is ahead of Postgres: exit so Ray restarts and rebuilds us.
    log.error("fatal error, exiting for a clean rebuild: %r", exc)
    os._exit(1)


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class ShardHost:
    """Hosts one shard's owner (the campaigns of every game that hash to it)."""

    def __init__(self, config: Config, database_url: str, redis_url: str, index: int) -> None:
        logging.basicConfig(level=logging.INFO)
        gcstats.install()
        self.shard = Owner(config, database_url, redis_url, index, on_fatal=_die)
        self._start = asyncio.get_running_loop().create_task(self.shard.start(retry=True))

    async def ready(self) -> dict[str, Any]:
        return await self.shard.ready()

    async def submit(self, commands: list[dict[str, Any]]) -> list[str]:
        """Answers as JSON text: strings cross Ray far cheaper than nested dicts."""
        return await self.shard.submit_json(commands)

    async def stats(self) -> dict[str, Any]:
        return {**self.shard.stats(), **gcstats.snapshot()}

    async def instance(self, campaign: str, instance: str) -> dict[str, Any] | None:
        """An instance as the owner holds it (tests compare it with Postgres)."""
        await self.shard.ready()
        return self.shard.instance(campaign, instance)

    async def pid(self) -> int:
        return os.getpid()

    async def shutdown(self) -> None:
        await self.shard.stop()


@ray.remote(max_restarts=-1, max_task_retries=5, num_cpus=0)
class PipelineHost:
    """Hosts the pipeline worker, the one writer of orders and the commission ledger."""

    def __init__(self, config: Config, database_url: str, redis_url: str) -> None:
        logging.basicConfig(level=logging.INFO)
        self._config = config
        self._client: ShardClient | None = None
        self.worker = PipelineWorker(config, database_url, redis_url, send=self._send)
        self._start = asyncio.get_running_loop().create_task(self.worker.start(retry=True))

    async def ready(self) -> bool:
        await self._start
        return True

    async def _send(self, commands: list[dict[str, Any]]) -> list[str]:
        # The shard hosts by name, looked up at the first notice (they may start after us).
        if self._client is None:
            ray_config = self._config.ray
            self._client = ShardClient([ray.get_actor(shard_name(i), namespace=ray_config.namespace)
                                        for i in range(ray_config.shards)])
        return list(await asyncio.gather(*(self._client.call(c) for c in commands)))

    async def drain(self) -> int:
        """Process everything pending now; how many rows."""
        await self._start
        return await self.worker.drain()

    async def bind(self, user: str, referrer: str) -> str:
        """Bind a referral; the answer as JSON text."""
        await self._start
        return await self.worker.bind(user, referrer)

    async def distributor(self, user: str, action: str, actor: str) -> str:
        """Apply for, approve or revoke a distributor; the answer as JSON text."""
        await self._start
        return await self.worker.distributor(user, action, actor)

    async def refund(self, user: str, order_id: int, amount: int | None = None,
                     key: str | None = None) -> str:
        """Refund (part of) an order inside its return window; the answer as JSON text."""
        await self._start
        return await self.worker.refund(user, order_id, amount, key)

    async def refund_after_sales(self, marketer: str, order_id: int, amount: int | None,
                                 key: str | None, note: str | None) -> str:
        """A marketer's refund of (part of) an order, settled or not; JSON text."""
        await self._start
        return await self.worker.refund_after_sales(marketer, order_id, amount, key, note)

    async def give_back(self, campaign: str, payment: str, payer: str, amount: int) -> str:
        """Give back money for a payment its game no longer holds (see the worker)."""
        await self._start
        return await self.worker.give_back(campaign, payment, payer, amount)

    async def refund_outcome(self, refund_id: str, status: str) -> str:
        """Record how the provider says a refund ended."""
        await self._start
        return await self.worker.refund_outcome(refund_id, status)

    async def withdraw(self, user: str, key: str, amount: int) -> str:
        """Withdraw settled commission; the answer as JSON text."""
        await self._start
        return await self.worker.withdraw(user, key, amount)

    async def review(self, reviewer: str, withdrawal_id: int, approve: bool,
                     note: str | None) -> str:
        """Pay or reject a withdrawal waiting for review; the answer as JSON text."""
        await self._start
        return await self.worker.review(reviewer, withdrawal_id, approve, note)

    async def stats(self) -> dict[str, Any]:
        return self.worker.stats()

    async def pid(self) -> int:
        return os.getpid()

    async def shutdown(self) -> None:
        await self.worker.stop()
