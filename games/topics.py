"""Live topic names, built and parsed here only.

`{kind}:{campaign}:{instance}` for a game instance (a group, a bargain), `{kind}:{campaign}`
for a campaign-wide topic (a lottery's winners feed), `user:{id}` for a user's own events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SLUG = r"[a-z0-9_-]{1,64}"  # campaign ids (and game kinds)
IDENT = r"[A-Za-z0-9_-]{1,64}"  # instance ids
USER_CHARS = r"[A-Za-z0-9_.:@-]{1,64}"  # user ids: a token's `sub`

SLUG_RE = re.compile(SLUG)
IDENT_RE = re.compile(IDENT)
USER_RE = re.compile(USER_CHARS)

_GAME = re.compile(f"({SLUG}):({SLUG})(?::({IDENT}))?")
_USER = re.compile(f"user:({USER_CHARS})")


def instance_topic(kind: str, campaign: str, instance: str) -> str:
    """The topic of one game instance."""
    return f"{kind}:{campaign}:{instance}"


def campaign_topic(kind: str, campaign: str) -> str:
    """A campaign-wide topic."""
    return f"{kind}:{campaign}"


def user_topic(user: str) -> str:
    """A user's own topic."""
    return f"user:{user}"


@dataclass(frozen=True)
class Topic:
    """A parsed topic: a user's (`user` set) or a game's (`kind`, `campaign`, `instance`
    or None for a campaign-wide one)."""

    user: str | None = None
    kind: str | None = None
    campaign: str | None = None
    instance: str | None = None


def parse(topic: str) -> Topic | None:
    """`topic` parsed, or None when it is no topic's name."""
    match = _USER.fullmatch(topic)
    if match:
        return Topic(user=match[1])
    match = _GAME.fullmatch(topic)
    if match and match[1] != "user":
        return Topic(kind=match[1], campaign=match[2], instance=match[3])
    return None
