"""The command line: config checks fail fast and name the key; tokens verify."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from server.auth import verify
from storage.config import load

ROOT = Path(__file__).resolve().parents[2]


def fission(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_config_check_accepts_the_shipped_config() -> None:
    result = fission("config", "check")
    assert result.returncode == 0 and "ok" in result.stdout


@pytest.mark.parametrize("command", [["config", "check"], ["serve", "--config"]])
def test_bad_config_stops_before_anything_starts(tmp_path: Path, command: list[str]) -> None:
    text = (ROOT / "config.toml").read_text().replace("group_size = 2", "group_size = 1")
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    started = time.monotonic()
    result = fission(*command, str(bad), cwd=tmp_path)
    assert result.returncode == 2
    assert f"{bad}: campaigns[0].group_size: must be from 2 to 50" in result.stderr
    # It failed on the config alone: no Postgres or Redis data folder was made in its
    # working directory, and it returned at once.
    assert time.monotonic() - started < 20
    assert not (tmp_path / ".fission").exists()


def test_token_carries_the_claims_asked_for() -> None:
    result = fission("token", "alice", "--role", "marketer", "--region", "YN",
                     "--device", "d1", "--ttl", "60")
    assert result.returncode == 0
    who = verify(load(ROOT / "config.toml", env={}).auth.secret, result.stdout.strip())
    assert (who.user, who.role, who.region, who.device) == ("alice", "marketer", "YN", "d1")


def test_token_refuses_a_malformed_user() -> None:
    result = fission("token", "not a user")
    assert result.returncode == 2 and "user ids" in result.stderr
