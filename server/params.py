"""Validation of request parameters: strict shapes, unknown fields refused.

A body never names who acts and never carries a price, so any field a method does not
declare (`user`, `price`, ...) is an `invalid_request`, not silently ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from games import topics
from games.core import Param
from server.errors import ApiError
from storage.text import storable

# Patterns match whole strings (`fullmatch`): `$` would also match before a final newline.
SLUG = topics.SLUG_RE
IDENT = topics.IDENT_RE
# A user id (a token's `sub`, a referrer): wider than IDENT, for ids like phone@shop.
USER_CHARS = topics.USER_CHARS
USER_ID = topics.USER_RE

__all__ = ["IDENT", "KEY_MAX", "SLUG", "USER_CHARS", "USER_ID", "Param", "check",
           "parse_json"]
KEY_MAX = 128  # characters of an Idempotency-Key or a WebSocket ref


def parse_json(raw: str | bytes, what: str) -> Any:
    """`raw` decoded as JSON, or ApiError(invalid_request) naming `what`.

    Nesting deeper than the interpreter's recursion limit is refused like any other
    malformed document (json raises RecursionError for it, not ValueError).
    """
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError("invalid_request", f"{what} is not valid JSON") from None


def check(params: Any, spec: Mapping[str, Param]) -> dict[str, Any]:
    """`params` validated against `spec`, or ApiError(invalid_request) naming the field."""
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise ApiError("invalid_request", "params must be a JSON object")
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ApiError("invalid_request", f"unknown field {unknown[0]!r}")
    clean: dict[str, Any] = {}
    for name, p in spec.items():
        if name not in params:
            if p.required:
                raise ApiError("invalid_request", f"field {name!r} is required")
            continue
        value = params[name]
        if p.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ApiError("invalid_request", f"field {name!r} must be an integer")
            if not p.low <= value <= p.high:
                raise ApiError("invalid_request",
                               f"field {name!r} must be from {p.low} to {p.high}")
        elif p.kind is str:
            if not isinstance(value, str):
                raise ApiError("invalid_request", f"field {name!r} must be a string")
            if not storable(value):
                raise ApiError("invalid_request",
                               f"field {name!r} must be UTF-8 text without NUL")
            if p.pattern is not None and not p.pattern.fullmatch(value):
                raise ApiError("invalid_request", f"field {name!r} is not a valid identifier")
        clean[name] = value
    return clean
