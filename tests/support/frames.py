"""What a client does with live frames, as docs/api.md tells it (no I/O)."""

from __future__ import annotations

from typing import Any


def apply_event(group: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """A watcher's copy of `G` after a group topic's event: merge the frame's summary,
    append a `member_joined`'s user."""
    members = [*group["members"], data["user"]] if data["type"] == "member_joined" \
        else group["members"]
    return {**group, **data["group"], "members": members}
