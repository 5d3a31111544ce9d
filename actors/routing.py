"""Which shard owns which campaign: a stable hash, the same in every process."""

from __future__ import annotations

import zlib


def shard_of(instance_id: str, shards: int) -> int:
    """The shard index owning `instance_id` (crc32: stable across processes and runs)."""
    return zlib.crc32(instance_id.encode("utf-8")) % shards


def shard_name(index: int) -> str:
    """The Ray actor name of shard `index`."""
    return f"shard-{index}"


PIPELINE_NAME = "pipeline"
