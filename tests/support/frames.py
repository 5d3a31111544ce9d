"""What a client does with live frames, as docs/api.md tells it (no I/O)."""

from __future__ import annotations

from typing import Any

from games.campaign import iso

# Events after which a seat is no longer held for its payment.
_UNHELD = frozenset({"member_joined", "seat_released", "payment_returned"})


def apply_event(group: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A watcher's copy of `G` after a group topic's event: merge the frame's summary,
    append a `member_joined`'s user, add a `seat_held`'s seat to `held` and take it out
    again when it is paid or given back (a failure or a virtual fill empties `held`)."""
    kind = data["type"]
    members = [*group["members"], data["user"]] if kind == "member_joined" \
        else group["members"]
    held = list(group.get("held", []))
    if kind == "seat_held":
        held.append({"user": data["user"], "expires_at": iso(data["until"])})
    elif kind in _UNHELD and data.get("payment"):
        held = [seat for seat in held if seat["user"] != data["user"]]
    elif kind in ("group_failed", "virtual_filled"):
        held = []
    if kind == "group_opened" and data.get("payment"):
        held = [{"user": data["leader"], "expires_at": iso(data["hold_until"])}]
    return {**group, **data["group"], "members": members, "held": held}
