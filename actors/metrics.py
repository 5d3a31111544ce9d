"""The one histogram of /metrics: kept by the gateway and by each actor (plain data,
picklable, so an owner's travel to the gateway as they are), rendered in Prometheus'
text format."""

from __future__ import annotations

from dataclasses import dataclass, field

# Commands per call or commit. (Bounds print as given: the shards' commit batches have
# said le="1" and the gateway's call batches le="1.0" since they began.)
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# Seconds: a command's time, an actor call's, a commit's.
LATENCY_BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                      0.5, 1.0, 2.5)


@dataclass
class Histogram:
    """Observations counted into `bounds` (each bucket's upper bound, inclusive; one more
    bucket above the last), with their sum and count."""

    bounds: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(self.bounds) + 1)

    def copy(self) -> Histogram:
        """A snapshot of it, for a reader (the owner's stats) to keep."""
        return Histogram(self.bounds, list(self.counts), self.total, self.n)

    def observe(self, value: float) -> None:
        """Count `value`."""
        for index, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[index] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        """The `_bucket` (cumulative, as Prometheus has them), `_sum` and `_count` lines
        of series `name`, with `labels` (`key="value",...`) on each."""
        out, running = [], 0
        sep = "," if labels else ""
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{bound}"}} {running}')
        out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.n}')
        suffix = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{suffix} {self.total}", f"{name}_count{suffix} {self.n}"]
        return out
