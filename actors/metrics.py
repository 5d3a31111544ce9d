"""Counters an actor keeps for the gateway's /metrics (plain data, picklable)."""

from __future__ import annotations

from dataclasses import dataclass, field

BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


@dataclass
class BatchSizes:
    """A histogram of commit batch sizes (commands per transaction)."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(BATCH_BUCKETS) + 1))
    total: int = 0
    observations: int = 0

    def observe(self, size: int) -> None:
        for index, bound in enumerate(BATCH_BUCKETS):
            if size <= bound:
                self.counts[index] += 1
                break
        else:
            self.counts[-1] += 1
        self.total += size
        self.observations += 1
