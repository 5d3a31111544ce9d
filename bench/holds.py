"""The held-seat scenario's figures and checks, read from Postgres after the holds lapsed.

Every open of the holds campaign holds its leader's seat until `hold_until` (its
`group_opened` event says when, epoch ms on the owner's clock). Unpaid at its end, the
owner's timer emits `hold_lapsed`; the pipeline asks the sandbox provider, whose word
(never paid: closed) comes back as a notice, and the leader's seat going unpaid fails its
group (`group_failed`): that is the hold's release. Lateness is measured on the owner's
clock alone (every event's `at`), so no clock skew between processes enters it; where the
release waits is shown by the steps between, on Postgres' clock (the same machine's):
when the pipeline read the lapse (the end of its work on the `check` outbox row, which
records the question in `provider_checks`), when the provider's answer was recorded
(`provider_checks.answered_at`, with its notice) and when the owner had taken that word
(the notice's `sent_at`, stamped once the owner answered, so just after the release it
caused).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.report import percentile

# The invariants of a holds run (each must be 0): a hold that never lapsed or lapsed more
# than once, one never released or released twice (group_failed and seat_released
# events of it), a group of the campaign not failed, stock still taken (members and seats
# still holding in groups not failed), seats still holding anywhere, acked opens without
# their group_opened.
BROKEN = ("never_lapsed", "lapsed_twice", "unreleased", "released_twice", "still_open",
          "stock_taken", "seats_holding", "lost_acks")


@dataclass(frozen=True)
class Hold:
    """One hold as its group's events tell it: when it opened and was due (epoch ms),
    the `at` of each `hold_lapsed` and of each release (`group_failed`, or a
    `seat_released` of its payment) in order; when the pipeline read its lapse, when the
    provider's answer on it was recorded and when the owner had taken that word (epoch
    ms on Postgres' clock; None: not yet)."""

    group: str
    opened_at: int
    hold_until: int
    lapsed: tuple[int, ...] = ()
    released: tuple[int, ...] = ()
    read: int | None = None
    answered: int | None = None
    told: int | None = None


def lateness(values: Sequence[float]) -> dict[str, float]:
    """p50, p99 and max of `values` (ms), with their count; NaN for an empty run."""
    return {"n": len(values), "p50_ms": percentile(list(values), 0.50),
            "p99_ms": percentile(list(values), 0.99),
            "max_ms": float(max(values)) if values else math.nan}


def pending_at_once(holds: Iterable[Hold]) -> int:
    """Holds opened before the first hold was due: all pending together at that moment
    (none can have lapsed before it)."""
    every = list(holds)
    if not every:
        return 0
    first_due = min(h.hold_until for h in every)
    return sum(1 for h in every if h.opened_at < first_due)


def summarize(holds: Sequence[Hold]) -> dict[str, Any]:
    """The scenario's figures from its holds: timer lateness (first `hold_lapsed` −
    `hold_until`), the steps between (the lapse read by the pipeline, the provider's
    answer recorded, that word taken by the owner; each −
    `hold_until`), release lateness (first release − `hold_until`), how many were pending
    at once, and the per-hold invariants (see BROKEN) these events can show."""
    return {
        "holds": len(holds),
        "pending_at_once": pending_at_once(holds),
        "timer": lateness([h.lapsed[0] - h.hold_until for h in holds if h.lapsed]),
        "read": lateness([h.read - h.hold_until for h in holds if h.read is not None]),
        "answered": lateness([h.answered - h.hold_until for h in holds
                              if h.answered is not None]),
        "told": lateness([h.told - h.hold_until for h in holds if h.told is not None]),
        "release": lateness([h.released[0] - h.hold_until for h in holds if h.released]),
        "never_lapsed": sum(1 for h in holds if not h.lapsed),
        "lapsed_twice": sum(1 for h in holds if len(h.lapsed) > 1),
        "unreleased": sum(1 for h in holds if not h.released),
        "released_twice": sum(1 for h in holds if len(h.released) > 1),
    }


_HOLDS = """
WITH e AS (
    SELECT type, data->>'group' AS g, data->>'payment' AS payment,
           (data->>'at')::bigint AS at, version
    FROM events WHERE stream = $1
      AND type IN ('group_opened', 'hold_lapsed', 'group_failed', 'seat_released')),
opened AS (
    SELECT ev.data->>'group' AS g, ev.data->>'payment' AS payment,
           (ev.data->>'at')::bigint AS at, (ev.data->>'hold_until')::bigint AS hold_until
    FROM events ev WHERE ev.stream = $1 AND ev.type = 'group_opened')
SELECT o.g, o.payment, o.at, o.hold_until,
       coalesce(array_agg(e.at ORDER BY e.version)
                FILTER (WHERE e.type = 'hold_lapsed'), '{}') AS lapsed,
       coalesce(array_agg(e.at ORDER BY e.version)
                FILTER (WHERE e.type = 'group_failed'
                        OR (e.type = 'seat_released' AND e.payment = o.payment)), '{}')
           AS released
FROM opened o LEFT JOIN e ON e.g = o.g AND e.type <> 'group_opened'
GROUP BY o.g, o.payment, o.at, o.hold_until
"""
# When the pipeline read each lapse: the end of its work on the `check` outbox row (the
# transaction that records the question for the provider).
_READ = """
SELECT l->>'payment' AS payment,
       min((extract(epoch FROM ob.processed_at) * 1000)::bigint) AS at
FROM outbox ob, jsonb_array_elements(ob.data->'lines') AS l
WHERE ob.type = 'check' AND ob.data->>'campaign' = $1 AND ob.processed_at IS NOT NULL
GROUP BY 1
"""
# When the provider's answer on each payment was recorded, with its notice.
_ANSWERED = """
SELECT payment_id AS payment, (extract(epoch FROM answered_at) * 1000)::bigint AS at
FROM provider_checks WHERE campaign = $1 AND answered_at IS NOT NULL
"""
# When the owner had taken the provider's word on each payment (its notice's key is
# pay:{payment}:{outcome}; sent_at is stamped once the owner answered).
_TOLD = """
SELECT split_part(order_key, ':', 2) AS payment,
       min((extract(epoch FROM sent_at) * 1000)::bigint) AS at
FROM game_notices WHERE campaign = $1 AND order_key LIKE 'pay:%' AND sent_at IS NOT NULL
GROUP BY 1
"""


async def read(conn: asyncpg.Connection, campaign: str) -> list[Hold]:
    """Every hold of `campaign` (one per `group_opened`), from the `events` table."""
    rows = await conn.fetch(_HOLDS, f"groupbuy:{campaign}")
    steps: list[dict[str, int]] = []
    for query in (_READ, _ANSWERED, _TOLD):
        steps.append({r["payment"]: int(r["at"]) for r in await conn.fetch(query, campaign)})
    read, answered, told = steps
    return [Hold(r["g"], int(r["at"]), int(r["hold_until"]), tuple(r["lapsed"]),
                 tuple(r["released"]), read.get(r["payment"]), answered.get(r["payment"]),
                 told.get(r["payment"]))
            for r in rows]


async def open_groups(conn: asyncpg.Connection, campaign: str) -> tuple[int, int]:
    """(groups of `campaign` in the read model, those not failed yet)."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, count(*) FILTER (WHERE status <> 'failed') AS open"
        " FROM groups WHERE campaign = $1", campaign)
    return int(row["n"]), int(row["open"])


async def wait_failed(conn: asyncpg.Connection, campaign: str, groups: int,
                      timeout: float) -> float:
    """Poll until `groups` groups of `campaign` are in the read model and none is left
    open (or `timeout` s passed); seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        n, still_open = await open_groups(conn, campaign)
        if n >= groups and not still_open:
            break
        await asyncio.sleep(0.25)  # the owner's timers and the pipeline act on their own
    return time.monotonic() - started


async def measure(conn: asyncpg.Connection, campaign: str, acked: int) -> dict[str, Any]:
    """The figures and every invariant of a holds run once its groups failed: the events'
    (see `summarize`) and the read model's (groups still open, stock still taken by
    groups not failed, seats still holding, acked opens without their event)."""
    found = summarize(await read(conn, campaign))
    row = await conn.fetchrow(
        """
        SELECT count(*) FILTER (WHERE status <> 'failed') AS still_open,
               coalesce(sum(cardinality(members)) FILTER (WHERE status <> 'failed'), 0)
                 + coalesce(sum(held) FILTER (WHERE status <> 'failed'), 0) AS stock_taken,
               coalesce(sum(held), 0) AS seats_holding
        FROM (SELECT status, members, (SELECT count(*) FROM jsonb_array_elements(seats) s
                                       WHERE s->>4 IN ('held', 'checking')) AS held
              FROM groups WHERE campaign = $1) AS g
        """, campaign)
    found.update({k: int(v) for k, v in row.items()})
    found.update(acked=acked, lost_acks=max(0, acked - found["holds"]))
    return found


def failures(result: dict[str, Any] | None) -> list[str]:
    """What fails a run in the holds scenario: a broken invariant, or no hold at all.
    Never lateness: the bench reports speed, it does not assert it."""
    if result is None:
        return []
    found = [f"holds {key} = {result.get(key)}" for key in BROKEN if result.get(key, 1)]
    if not result.get("holds"):
        found.append("holds: no hold was opened")
    return found
