"""The per-command log: opt-in for every command, always on for failures of the service."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.auth import Identity
from server.errors import ApiError
from server.gateway import Gateway
from server.metrics import Metrics
from storage.config import parse
from tests.support import configs


class _Failing:
    """A shard client whose actor cannot be reached (no Ray here: only the log is tested)."""

    async def call(self, command: dict[str, Any]) -> dict[str, Any]:
        return {"ok": False, "error": {"code": "unavailable", "message": "down"}}


def _gateway(log_commands: bool) -> Gateway:
    doc = configs.document([configs.campaign("tea-duo")], server={"log_commands": log_commands})
    return Gateway(parse(doc, {}), _Failing(), None, Metrics())  # type: ignore[arg-type]


async def _call(gateway: Gateway, method: str, params: dict[str, Any]) -> str:
    try:
        await gateway.call(Identity(user="u1", role="user"), method, params, None)
    except ApiError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize(("log_commands", "method", "params", "code", "expected"), [
    (False, "campaigns.list", {}, "ok", []),
    (True, "campaigns.list", {}, "ok", [("INFO", "ok")]),
    (False, "no.such", {}, "invalid_request", []),
    (True, "no.such", {}, "invalid_request", [("INFO", "invalid_request")]),
    (False, "groupbuy.open", {"campaign": "tea-duo"}, "unavailable",
     [("WARNING", "unavailable")]),
])
async def test_command_lines(caplog: pytest.LogCaptureFixture, log_commands: bool, method: str,
                             params: dict[str, Any], code: str,
                             expected: list[tuple[str, str]]) -> None:
    gateway = _gateway(log_commands)
    with caplog.at_level(logging.DEBUG, logger="fission.gateway"):
        assert await _call(gateway, method, params) == code
    lines = [(r.levelname, r.fields["outcome"]) for r in caplog.records  # type: ignore[attr-defined]
             if r.getMessage() == "command"]
    assert lines == expected
    assert sum(gateway.metrics.commands.values()) == 1  # counted either way
