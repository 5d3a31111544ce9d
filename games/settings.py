"""Reading a config document's tables: typed keys, checks that name the key, no strays.

Pure: the file is read elsewhere (`storage.config.load`); each game parses its own
campaign tables with these, so a bad campaign names its key like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from games.commission import BPS, Rates
from games.topics import SLUG_RE


class ConfigError(Exception):
    """A config that cannot run: `source`, dotted `key` and `reason`."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(f"{source}: {key}: {reason}")
        self.source = source
        self.key = key
        self.reason = reason


class Table:
    """Reads one table, remembering which keys were used so unknown ones are named."""

    def __init__(self, source: str, prefix: str, data: Any) -> None:
        if not isinstance(data, dict):
            raise ConfigError(source, prefix, "must be a table")
        self.source, self.prefix, self.data = source, prefix, data
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        """The dotted name of key `name` in this table."""
        return f"{self.prefix}.{name}" if self.prefix else name

    def fail(self, name: str, reason: str) -> ConfigError:
        """The error naming key `name` (raise it)."""
        return ConfigError(self.source, self.key(name), reason)

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """Key `name`, which must be of `kind`; `default` when absent (required if none)."""
        self.used.add(name)
        if name not in self.data:
            if default is ...:
                raise self.fail(name, "is required")
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a config `true` is never a number.
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(name, f"must be {_names(kinds)}, not a boolean")
        if not isinstance(value, kinds):
            raise self.fail(name, f"must be {_names(kinds)}, not {type(value).__name__}")
        return value

    def check(self, name: str, ok: bool, reason: str) -> None:
        """Refuse key `name` for `reason` unless `ok`."""
        if not ok:
            raise self.fail(name, reason)

    def done(self) -> None:
        """Refuse any key of the table that nothing read."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "is not a known key")


def _names(kinds: tuple[type, ...]) -> str:
    words = {int: "an integer", float: "a number", str: "a string", bool: "a boolean",
             dict: "a table", list: "an array"}
    return " or ".join(words.get(k, k.__name__) for k in kinds)


def read_time(section: Table, name: str) -> int:
    """An ISO-8601 time with an offset, as epoch milliseconds."""
    raw = section.get(name, (str, datetime))
    if isinstance(raw, str):
        try:
            raw = datetime.fromisoformat(raw)
        except ValueError as exc:
            raise section.fail(name, f"is not an ISO-8601 time ({exc})") from None
    if raw.tzinfo is None:
        raise section.fail(name, "needs a time zone offset, e.g. 2026-01-01T00:00:00+08:00")
    return int(raw.timestamp() * 1000)



@dataclass(frozen=True)
class CampaignHead:
    """What every `[[campaigns]]` table has, whatever its game."""

    id: str
    kind: str
    title: str
    starts_at: int
    ends_at: int


def read_campaign_head(s: Table) -> CampaignHead:
    """A campaign table's id, kind, title and running window."""
    cid = s.get("id", str)
    s.check("id", SLUG_RE.fullmatch(cid) is not None,
            "must be 1-64 characters of a-z, 0-9, - and _")
    kind = s.get("kind", str)
    title = s.get("title", str)
    starts_at, ends_at = read_time(s, "starts_at"), read_time(s, "ends_at")
    s.check("ends_at", ends_at > starts_at, "must be after starts_at")
    return CampaignHead(cid, kind, title, starts_at, ends_at)


def read_own_rates(s: Table, rates: Rates) -> Rates:
    """A campaign's commission rates: its optional `[campaigns.commission]` table over the
    shop's `rates`, key by key."""
    own = s.get("commission", dict, None)
    if own is None:
        return rates
    c = Table(s.source, s.key("commission"), own)
    found = read_rates(c, rates)
    c.done()
    return found


def read_rates(s: Table, default: Rates) -> Rates:
    """Commission rates in basis points, each key defaulting to `default`'s."""
    level1 = s.get("level1_bps", int, default.level1_bps)
    level2 = s.get("level2_bps", int, default.level2_bps)
    for name, value in (("level1_bps", level1), ("level2_bps", level2)):
        s.check(name, 0 <= value <= BPS, f"must be from 0 to {BPS} (basis points)")
    s.check("level2_bps", level1 + level2 <= BPS,
            f"level1_bps + level2_bps must be at most {BPS} (the whole order)")
    return Rates(level1, level2)


