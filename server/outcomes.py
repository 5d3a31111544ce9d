"""A method's outcome: a result (a dict, or JSON text passed on as an owner wrote it)
or a refusal (ApiError with its code), and the one way an owner's answer becomes one."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from games import jsontext
from server.errors import ApiError

_OK = '{"ok":true,"result":'

# Compact JSON, as every reply and frame this server writes.
compact = jsontext.compact


@dataclass(frozen=True, slots=True)
class Encoded:
    """A result that is JSON text already (a shard's answer, passed on as it came)."""

    text: str


Outcome = dict[str, Any] | Encoded



def encode(result: Outcome) -> str:
    """A method's result as JSON text."""
    if isinstance(result, Encoded):
        return result.text
    return compact(result)


def decoded(result: Outcome) -> dict[str, Any]:
    """A method's result as a dict (JSON text decoded)."""
    if isinstance(result, Encoded):
        found: dict[str, Any] = json.loads(result.text)
        return found
    return result


def result_of(answer: str) -> Outcome:
    """A shard's answer (JSON text) as a method's result, or ApiError with its code."""
    if answer.startswith(_OK):
        # The shard's own compact encoding: the result is passed on without a decode.
        return Encoded(answer[len(_OK):-1])
    # A refusal, or an answer remembered by Postgres (its jsonb text is spaced).
    try:
        decoded = json.loads(answer)
    except ValueError:
        decoded = None
    if not isinstance(decoded, dict):
        raise ApiError("internal", "the game answered something unreadable")
    if decoded.get("ok") is not True:
        error = decoded.get("error") or {}
        raise ApiError(str(error.get("code", "internal")),
                       str(error.get("message", "the command failed")))
    result: dict[str, Any] = decoded.get("result") or {}
    return result


