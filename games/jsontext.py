"""The one compact JSON encoder every answer, frame, stored answer and reply goes through.

Compact separators, UTF-8 kept as is (`ensure_ascii=False`), NaN allowed as the standard
library's encoder allows it. It is built once: `json.JSONEncoder.encode` makes a new C
encoder on every call, which on the owner's hot path (several small documents per command)
costs about a third of each encoding.
"""

from __future__ import annotations

import json
from json import encoder as _std
from typing import Any

_fallback = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _default(value: Any) -> Any:
    return _fallback.default(value)  # raises TypeError, as json.dumps does


_make = getattr(_std, "c_make_encoder", None)
_c = None if _make is None else _make(
    None, _default, _std.encode_basestring, None, ":", ",", False, False, True)


def compact(value: Any) -> str:
    """`value` as compact JSON text (TypeError for what JSON cannot hold; RecursionError for
    containers nested past the interpreter's recursion limit)."""
    if isinstance(value, str):
        return _std.encode_basestring(value)
    if _c is None:
        return _fallback.encode(value)
    return "".join(_c(value, 0))
