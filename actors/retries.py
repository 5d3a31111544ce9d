"""How long to wait before asking a payment provider again (refunds, checks)."""

from __future__ import annotations

FIRST_PAUSE_S = 2.0
LONGEST_PAUSE_S = 3600.0  # an outage of hours is asked about hourly, never dropped
# Tries before a refund is set aside for an operator: about three days of hourly asks.
GIVE_UP_AFTER = 80


def pause(attempts: int) -> float:
    """Seconds before try `attempts + 1`: doubling from 2 s, at most an hour."""
    return float(min(LONGEST_PAUSE_S, FIRST_PAUSE_S * 2 ** min(attempts, 20)))
