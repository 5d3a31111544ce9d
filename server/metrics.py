"""Prometheus text-format metrics, kept in plain dicts (one gateway process each)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from actors import gcstats
from actors.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram


class Metrics:
    """The gateway's counters; actor-side figures are merged in at scrape time."""

    def __init__(self) -> None:
        self.http: dict[tuple[str, str, int], int] = defaultdict(int)
        self.commands: dict[tuple[str, str], int] = defaultdict(int)
        self.command_seconds = Histogram(LATENCY_BUCKETS)
        self.actor_call_seconds = Histogram(LATENCY_BUCKETS)
        self.actor_batch_size = Histogram(tuple(float(b) for b in BATCH_BUCKETS))
        self.ws_open = 0
        self.ws_frames: dict[str, int] = defaultdict(int)
        self.ws_disconnects: dict[str, int] = defaultdict(int)
        self.ws_refused: dict[str, int] = defaultdict(int)  # frames refused, by reason
        self.events_delivered = 0

    def request(self, method: str, route: str, status: int) -> None:
        self.http[(method, route, status)] += 1

    def command(self, method: str, outcome: str, seconds: float) -> None:
        self.commands[(method, outcome)] += 1
        self.command_seconds.observe(seconds)

    def actor_call(self, shard: int, seconds: float, batch: int) -> None:
        self.actor_call_seconds.observe(seconds)
        self.actor_batch_size.observe(float(batch))

    def render(self, shard_stats: list[dict[str, Any]], outbox: tuple[int, float] | None,
               pipeline: dict[str, Any] | None = None, *, oldest_call_seconds: float = 0.0,
               calls_waiting: int = 0) -> str:
        """The exposition text, with shard commit batches, outbox lag, the pipeline's
        counts (since its actor started) and the socket calls still waiting for an
        answer (how many, and the oldest one's age)."""
        out = ["# TYPE fission_http_requests_total counter"]
        for (method, route, status), n in sorted(self.http.items()):
            out.append(f'fission_http_requests_total{{method="{method}",route="{route}",'
                       f'status="{status}"}} {n}')
        out.append("# TYPE fission_commands_total counter")
        for (method, outcome), n in sorted(self.commands.items()):
            out.append(f'fission_commands_total{{method="{method}",outcome="{outcome}"}} {n}')
        out.append("# TYPE fission_command_seconds histogram")
        out += self.command_seconds.lines("fission_command_seconds")
        out.append("# TYPE fission_actor_call_seconds histogram")
        out += self.actor_call_seconds.lines("fission_actor_call_seconds")
        out.append("# TYPE fission_actor_call_batch_size histogram")
        out += self.actor_batch_size.lines("fission_actor_call_batch_size")
        out += ["# TYPE fission_ws_open_connections gauge",
                f"fission_ws_open_connections {self.ws_open}",
                "# TYPE fission_ws_frames_total counter"]
        for kind, n in sorted(self.ws_frames.items()):
            out.append(f'fission_ws_frames_total{{kind="{kind}"}} {n}')
        out.append("# TYPE fission_ws_disconnects_total counter")
        for reason, n in sorted(self.ws_disconnects.items()):
            out.append(f'fission_ws_disconnects_total{{reason="{reason}"}} {n}')
        out.append("# TYPE fission_ws_refused_frames_total counter")
        for reason, n in sorted(self.ws_refused.items()):
            out.append(f'fission_ws_refused_frames_total{{reason="{reason}"}} {n}')
        out += ["# TYPE fission_ws_calls_waiting gauge",
                f"fission_ws_calls_waiting {calls_waiting}",
                "# TYPE fission_ws_oldest_call_seconds gauge",
                f"fission_ws_oldest_call_seconds {oldest_call_seconds:.3f}"]
        out += ["# TYPE fission_events_delivered_total counter",
                f"fission_events_delivered_total {self.events_delivered}",
                "# TYPE fission_commit_batch_size histogram"]
        for stats in shard_stats:
            out += stats["batch_sizes"].lines("fission_commit_batch_size",
                                              f'shard="{stats["shard"]}"')
        out.append("# TYPE fission_shard_gc_seconds counter")
        for stats in shard_stats:
            for gen, took in enumerate(stats["gc_seconds"]):
                out.append(f'fission_shard_gc_seconds_total{{shard="{stats["shard"]}",'
                           f'generation="{gen}"}} {took:.6f}')
        out.append("# TYPE fission_shard_gc_longest_seconds gauge")
        for stats in shard_stats:
            out.append(f'fission_shard_gc_longest_seconds{{shard="{stats["shard"]}"}} '
                       f'{stats["gc_longest_seconds"]:.6f}')
        gc_now = gcstats.snapshot()
        out.append("# TYPE fission_gateway_gc_seconds counter")
        for gen, took in enumerate(gc_now["gc_seconds"]):
            out.append(f'fission_gateway_gc_seconds_total{{generation="{gen}"}} {took:.6f}')
        out += ["# TYPE fission_gateway_gc_longest_seconds gauge",
                f'fission_gateway_gc_longest_seconds {gc_now["gc_longest_seconds"]:.6f}',
                "# TYPE fission_commit_longest_seconds gauge"]
        for stats in shard_stats:
            out.append(f'fission_commit_longest_seconds{{shard="{stats["shard"]}"}} '
                       f'{stats["commit_longest_seconds"]:.6f}')
        # A histogram, so that a scrape before and after a run tells how many commits
        # of the run were slow (the longest is since the actor started).
        out.append("# TYPE fission_commit_seconds histogram")
        for stats in shard_stats:
            out += stats["commit_seconds"].lines("fission_commit_seconds",
                                                 f'shard="{stats["shard"]}"')
        if outbox is not None:
            out += ["# TYPE fission_outbox_pending gauge", f"fission_outbox_pending {outbox[0]}",
                    "# TYPE fission_outbox_lag_seconds gauge",
                    f"fission_outbox_lag_seconds {outbox[1]}"]
        if pipeline is not None:
            for key in ("processed", "orders", "refunds", "commissions", "settled"):
                out += [f"# TYPE fission_pipeline_{key}_total counter",
                        f"fission_pipeline_{key}_total {pipeline[f'{key}_total']}"]
        return "\n".join(out) + "\n"
