"""Read the gateway's Prometheus `/metrics` around a run: what the server says it did."""

from __future__ import annotations

import math

import aiohttp

from actors.metrics import LATENCY_BUCKETS

# The commits within 100 ms (the rest of a run's commits are its slow ones, each a stall
# of every command waiting on it): a bucket of the commits' histogram, by its bound.
SLOW_COMMIT_SECONDS = 0.1
assert SLOW_COMMIT_SECONDS in LATENCY_BUCKETS  # a bucket's bound, or no series to read
SLOW_COMMITS_BUCKET = f'fission_commit_seconds_bucket{{le="{SLOW_COMMIT_SECONDS}"}}'
# Counters whose change over a storm explains its throughput: how many actor calls and
# commits it took, how big they were and how long they lasted.
WATCHED = (
    "fission_command_seconds_sum", "fission_command_seconds_count",
    "fission_actor_call_seconds_sum", "fission_actor_call_seconds_count",
    "fission_actor_call_batch_size_sum", "fission_actor_call_batch_size_count",
    "fission_commit_batch_size_sum", "fission_commit_batch_size_count",
    "fission_commit_seconds_sum", "fission_shard_gc_seconds_total",
    "fission_shard_gc_longest_seconds", "fission_gateway_gc_seconds_total",
    "fission_gateway_gc_longest_seconds", "fission_commit_longest_seconds",
    "fission_commit_seconds_count", SLOW_COMMITS_BUCKET,
)


GATEWAY_OWN = ("fission_actor_call", "fission_gateway_", "fission_command_seconds")


async def metrics(base_urls: list[str]) -> dict[str, float]:
    """The watched series, each summed over its labels and over the gateways.

    Actor-call series are each gateway's own; commit series come from the shard actors,
    which every gateway reports alike, so they are read from the first gateway only.
    """
    found = dict.fromkeys(WATCHED, 0.0)
    async with aiohttp.ClientSession() as session:
        for n, base_url in enumerate(base_urls):
            async with session.get(base_url + "/metrics") as resp:
                text = await resp.text()
            for name, value in parse(text).items():
                if n == 0 or name.startswith(GATEWAY_OWN):
                    _add(found, name, value)
    return found


def _add(found: dict[str, float], name: str, value: float) -> None:
    """Count `value` into `found[name]`: the longest of several shards or gateways is
    the longest of them all, other series are summed (a NaN, not seen yet, is replaced)."""
    was = found[name]
    found[name] = (max(was, value) if "_longest_" in name
                   else value if math.isnan(was) else was + value)


def parse(text: str) -> dict[str, float]:
    """The watched series of one /metrics text, each summed over its labels (the
    longest of them for a `_longest_` gauge)."""
    found = dict.fromkeys(WATCHED, 0.0)
    # Unlike the sums, a bucket not in the text must not read as 0 (every commit slow).
    found[SLOW_COMMITS_BUCKET] = math.nan
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == "fission_commit_seconds_bucket":
            if f'le="{SLOW_COMMIT_SECONDS}"' not in line:
                continue
            name = SLOW_COMMITS_BUCKET  # summed over the shards
        if name in found:
            _add(found, name, float(line.rsplit(" ", 1)[1]))
    return found


def explain(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Actor calls and commits during a run, with their mean size and call time."""
    d = {name: after[name] - before[name] for name in WATCHED}
    calls = d["fission_actor_call_seconds_count"]
    commits = d["fission_commit_batch_size_count"]
    commands = d["fission_command_seconds_count"]
    return {
        # A command's time in the gateway: from its frame parsed to its answer.
        "command_ms": 1000 * d["fission_command_seconds_sum"] / commands if commands else 0.0,
        "actor_calls": calls,
        "actor_call_ms": 1000 * d["fission_actor_call_seconds_sum"] / calls if calls else 0.0,
        "actor_call_batch": d["fission_actor_call_batch_size_sum"] / calls if calls else 0.0,
        "commits": commits,
        "commit_batch": d["fission_commit_batch_size_sum"] / commits if commits else 0.0,
        "commit_ms": 1000 * d["fission_commit_seconds_sum"] / commits if commits else 0.0,
        "shard_gc_ms": 1000 * d["fission_shard_gc_seconds_total"],
        "shard_gc_longest_ms": 1000 * after["fission_shard_gc_longest_seconds"],
        "gateway_gc_ms": 1000 * d["fission_gateway_gc_seconds_total"],
        "gateway_gc_longest_ms": 1000 * after["fission_gateway_gc_longest_seconds"],
        "commit_longest_ms": 1000 * after["fission_commit_longest_seconds"],
        # Commits of this run over SLOW_COMMIT_SECONDS (the longest is since start).
        "commits_over_100ms": (d["fission_commit_seconds_count"]
                               - d[SLOW_COMMITS_BUCKET]),
    }
