"""Every Redis key and channel name Fission uses, in one place."""

from __future__ import annotations

PREFIX = "fission"


def history(topic: str) -> str:
    """List of a topic's recent event frames (JSON), oldest first."""
    return f"{PREFIX}:hist:{topic}"


def seq(topic: str) -> str:
    """Last seq published on a topic."""
    return f"{PREFIX}:seq:{topic}"


def channel(topic: str) -> str:
    """Pub/sub channel carrying a topic's live events to every gateway."""
    return f"{PREFIX}:ev:{topic}"


def topic_of_channel(name: str) -> str:
    """The topic a channel name carries."""
    return name[len(PREFIX) + 4 :]


def hub_channel() -> str:
    """A channel no one publishes on: a gateway's hub stays subscribed to it."""
    return f"{PREFIX}:hub"


def ranking(campaign: str, group: tuple[str, ...]) -> str:
    """Sorted set of one ranking of a campaign's rank cache (storage.ranks)."""
    return f"{PREFIX}:rank:{campaign}:{':'.join(group)}"


def ranking_members(campaign: str, group: tuple[str, ...]) -> str:
    """Hash of one ranking: member -> its entry in the sorted set."""
    return f"{PREFIX}:rankm:{campaign}:{':'.join(group)}"


def rankings(campaign: str) -> str:
    """Set of the rankings (their groups, joined by ':') a campaign's cache holds."""
    return f"{PREFIX}:ranks:{campaign}"


def ranks_version(campaign: str) -> str:
    """The campaign's stream version the rank cache is up to date with."""
    return f"{PREFIX}:rankv:{campaign}"
