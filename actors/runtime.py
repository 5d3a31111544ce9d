"""Joining a Ray cluster and reaching (or creating) the named, detached actors."""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from actors.hosts import PipelineHost, ShardHost
from actors.routing import PIPELINE_NAME, shard_name
from storage.config import Config

log = logging.getLogger("fission.runtime")


def connect(config: Config) -> bool:
    """Join the configured Ray cluster, or start a local one owned by this process.

    Returns True when this process started (and so owns) the cluster.
    """
    if ray.is_initialized():
        return False
    if config.ray.address:
        ray.init(address=config.ray.address, namespace=config.ray.namespace,
                 log_to_driver=False, logging_level=logging.WARNING)
        return False
    # "local", not None: with no address Ray attaches to whatever RAY_ADDRESS or the last
    # `ray start` on the machine (/tmp/ray/ray_current_cluster) names, even a cluster
    # killed long ago (then num_cpus makes it refuse to start) or someone else's live one
    # (then our detached actors would run there). The embedded default owns its cluster.
    # Ray runs workers at niceness 15 so they yield to its own daemons; but each shard is
    # the single writer of its campaigns, the one stage every command waits on: run it at
    # the gateway's priority, not below the load it serves.
    ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
             namespace=config.ray.namespace, log_to_driver=False,
             logging_level=logging.WARNING, num_cpus=max(2, os.cpu_count() or 2),
             _system_config={"worker_niceness": 0})
    return True


def shard_hosts(config: Config, database_url: str, redis_url: str) -> list[Any]:
    """Handles of every shard actor, created on first use by whichever gateway comes first."""
    return [
        ShardHost.options(  # type: ignore[attr-defined]
            name=shard_name(index), namespace=config.ray.namespace, lifetime="detached",
            get_if_exists=True,
        ).remote(config, database_url, redis_url, index)
        for index in range(config.ray.shards)
    ]


def pipeline_host(config: Config, database_url: str, redis_url: str) -> Any:
    """Handle of the pipeline actor."""
    return PipelineHost.options(  # type: ignore[attr-defined]
        name=PIPELINE_NAME, namespace=config.ray.namespace, lifetime="detached",
        get_if_exists=True,
    ).remote(config, database_url, redis_url)


def kill_all(config: Config) -> None:
    """End every actor of the namespace (used when this process owns the cluster)."""
    for name in [*(shard_name(i) for i in range(config.ray.shards)), PIPELINE_NAME]:
        try:
            ray.kill(ray.get_actor(name, namespace=config.ray.namespace))
        except ValueError:
            pass
