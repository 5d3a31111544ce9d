"""The layering table of DESIGN.md, enforced by reading every import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# package -> top-level modules it must never import (DESIGN.md, "Layering").
FORBIDDEN: dict[str, set[str]] = {
    "games": {"asyncio", "aiohttp", "ray", "redis", "asyncpg", "websockets", "server",
              "actors", "storage", "time", "os", "secrets", "uuid"},
    "storage": {"server", "actors", "aiohttp", "ray"},
    "actors": {"aiohttp", "server", "websockets"},
    "server": set(),
}
# server/ holds no game rules: of games/ it reads only the seam's declarations (core,
# registry, topics) and value types, never a game's package or the rules' data structures.
GAME_PACKAGES = sorted(p.name for p in (ROOT / "games").iterdir()
                       if (p / "__init__.py").exists())
SERVER_MAY_NOT = (*(f"games.{kind}" for kind in GAME_PACKAGES), "games.pmap")


# The one exception, by file: the `fission lottery verify` tool runs the lottery's own
# verifier (the check anyone can write from docs/api.md); no request path reads it.
SERVER_TOOLS = {"server/cli.py": {"games.lottery.audit", "games.lottery.audit.check",
                                  "games.lottery.audit.report"}}


def forbidden_to_server(name: str) -> bool:
    """Whether server/ may not import `name`: a game's package or anything in it."""
    return any(name == banned or name.startswith(banned + ".") for banned in SERVER_MAY_NOT)


def imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in imports(path):
            top = name.split(".")[0]
            allowed = SERVER_TOOLS.get(str(path.relative_to(ROOT)), set())
            if top in FORBIDDEN[package] or (package == "server" and name not in allowed
                                             and forbidden_to_server(name)):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_respects_the_layering(package: str) -> None:
    assert violations(package) == []


def test_games_never_uses_global_random_or_the_clock() -> None:
    offenders = []
    for path in sorted((ROOT / "games").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for needle in ("random.random(", "random.randint(", "random.choice(", "datetime.now(",
                       "date.today(", "time.time("):
            if needle in text:
                offenders.append(f"{path.name}: {needle}")
    assert offenders == []


def test_every_game_package_is_out_of_the_servers_reach() -> None:
    assert {"groupbuy", "bargain"} <= set(GAME_PACKAGES)
    assert forbidden_to_server("games.bargain.rules.decide")
    assert forbidden_to_server("games.groupbuy")
    assert not forbidden_to_server("games.core") and not forbidden_to_server("games.registry")


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nfrom ray import remote\nfrom games import errors\n")
    names = [name for _, name in imports(sample)]
    assert "asyncio" in names and "ray" in names and "games.errors" in names
