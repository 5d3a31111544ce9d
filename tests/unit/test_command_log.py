"""The per-command log: opt-in for every command, always on for failures of the service."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from server.auth import Identity
from server.errors import ApiError
from server.gateway import Gateway, command_log_level
from server.metrics import Metrics
from storage.config import parse
from tests.support import configs


@pytest.mark.parametrize(("outcome", "log_commands", "level"), [
    ("ok", False, None),
    ("ok", True, logging.INFO),
    ("group_full", False, None),
    ("invalid_request", True, logging.INFO),
    ("unavailable", False, logging.WARNING),
    ("unavailable", True, logging.WARNING),
    ("internal", False, logging.WARNING),
])
def test_log_level_by_outcome(outcome: str, log_commands: bool, level: int | None) -> None:
    assert command_log_level(outcome, log_commands) == level


async def _call(gateway: Gateway, method: str) -> str:
    try:
        await gateway.call(Identity(user="u1", role="user"), method, {}, None)
    except ApiError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize(("log_commands", "method", "code", "expected"), [
    (False, "campaigns.list", "ok", []),
    (True, "campaigns.list", "ok", [("INFO", "ok")]),
    (False, "no.such", "invalid_request", []),
    (True, "no.such", "invalid_request", [("INFO", "invalid_request")]),
])
async def test_the_gateway_writes_the_lines(caplog: pytest.LogCaptureFixture, log_commands: bool,
                                            method: str, code: str,
                                            expected: list[tuple[str, str]]) -> None:
    # Methods that need neither an actor nor Postgres: only the logging is under test.
    doc = configs.document([configs.campaign("tea-duo")], server={"log_commands": log_commands})
    gateway = Gateway(parse(doc, {}), None, None, Metrics(), None)  # type: ignore[arg-type]
    with caplog.at_level(logging.DEBUG, logger="fission.gateway"):
        assert await _call(gateway, method) == code
    lines: list[tuple[str, Any]] = [(r.levelname, r.fields["outcome"])  # type: ignore[attr-defined]
                                    for r in caplog.records if r.getMessage() == "command"]
    assert lines == expected
    assert sum(gateway.metrics.commands.values()) == 1  # counted either way
