"""Answers as actors give them: JSON text, `{"ok":true,"result":{...}}` or
`{"ok":false,"error":{"code","message"}}`.

Answers travel and are remembered as text: encoded once by the actor, spliced into the
reply by the gateway, never decoded and encoded again on the way.
"""

from __future__ import annotations

from typing import Any

from games import jsontext

Answer = str

# Compact JSON, as every answer and frame an actor writes.
compact = jsontext.compact


def ok(result: dict[str, Any]) -> Answer:
    """A successful answer carrying `result`."""
    return compact({"ok": True, "result": result})


def ok_text(result: str) -> Answer:
    """A successful answer carrying `result`, the JSON text of an object."""
    return f'{{"ok":true,"result":{result}}}'


def error(code: str, message: str) -> Answer:
    """A refusal with a contract error code."""
    return compact({"ok": False, "error": {"code": code, "message": message}})


def unavailable(message: str = "the game service is unavailable; try again") -> Answer:
    """The answer when the actor cannot be reached."""
    return error("unavailable", message)
