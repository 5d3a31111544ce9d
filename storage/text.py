"""What text Postgres can store: the one check every layer applies to a client's strings.

Postgres `text` and `jsonb` refuse NUL, and asyncpg refuses to encode a lone surrogate
(what aiohttp makes of a header's non-UTF-8 bytes, or a JSON `"\\udcff"` escape). A
string that reached a commit anyway would fail the whole batch it travels in, so the
gateway refuses it at the edge and the owner refuses it again before applying it.
"""

from __future__ import annotations

import re

# C0 controls and DEL: no identifier, key or ref needs them, and logs must not get them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def storable(value: str) -> bool:
    """Whether `value` is valid UTF-8 text without NUL (Postgres can store it)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def clean_token(value: object, max_len: int) -> bool:
    """Whether `value` is a 1-`max_len` character string, storable and free of control
    characters: what an idempotency key, a ref or an id from a client must be."""
    return (isinstance(value, str) and 0 < len(value) <= max_len and storable(value)
            and _CONTROL.search(value) is None)
