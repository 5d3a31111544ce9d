"""Soak: under a steady join storm on the default config, every call gets its reply.

Two load processes of 50 sockets each (every socket its own user, one `groupbuy.join` at
a time on one of 10 hot groups of a 5-person campaign, replacements opened over HTTP as
groups fill) run round after round against a gateway with the default `[server]` limits,
where sockets keep running into the per-socket frame rate. A rate-limited call is
answered with its ref and `retry_after_ms`; a client that waits that long goes on. No
call may wait more than 5 s for its reply.

`FISSION_SOAK_ROUNDS` sets the rounds (10 by default, 3 in CI; 8 s each).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.acceptance.conftest import extra_gateway
from tests.support.services import Services
from tests.support.stack import Gateway, Stack

pytestmark = pytest.mark.acceptance

ROUNDS = int(os.environ.get("FISSION_SOAK_ROUNDS", "3" if os.environ.get("CI") else "10"))
SECONDS = 8.0
STALL = 5.0
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def default_gateway(stack: Stack, tmp_path_factory: pytest.TempPathFactory
                          ) -> AsyncIterator[Gateway]:
    async with extra_gateway(stack, tmp_path_factory.mktemp("soak"), {}) as gateway:
        yield gateway


async def _load(gateway: Gateway, name: str) -> list[dict[str, object]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.support.soak_load", "--ws", gateway.ws_url,
        "--http", gateway.url, "--name", name, "--rounds", str(ROUNDS),
        "--seconds", str(SECONDS), "--stall", str(STALL),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=ROOT)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode(errors="replace")[-3000:]
    return [json.loads(line) for line in out.decode().splitlines()]


# The suite's per-test limit (pyproject) is for a test of fixed length; this one's grows
# with its rounds.
@pytest.mark.timeout(300 + 3 * ROUNDS * SECONDS)
async def test_no_call_waits_over_5s_for_its_reply(default_gateway: Gateway,
                                                   migrated: Services) -> None:
    first, second = await asyncio.gather(_load(default_gateway, "sa"),
                                         _load(default_gateway, "sb"))
    rounds = [*first, *second]
    assert len(rounds) == 2 * ROUNDS, rounds
    report = json.dumps(rounds, indent=1)
    for result in rounds:
        assert result["stalled"] == 0, report
        assert float(str(result["max_wait"])) <= STALL, report
        codes = result["codes"]
        assert isinstance(codes, dict)
        assert "no_reply" not in codes, report
        assert codes.get("ok", 0) > 0, report
        # Only the refusals a join storm earns: the rest are contract bugs.
        assert set(codes) <= {"ok", "group_full", "group_closed", "already_member"}, report
    # How often the per-socket limit was in play depends on the machine's speed (the
    # stall needed sockets above 20 frames/s): shown with -s, asserted in test_hardening.
    print(f"soak: {ROUNDS} rounds x 2 processes:", report)
    conn = await asyncpg.connect(migrated.database_url)
    try:
        over = await conn.fetchval(
            "SELECT count(*) FROM groups WHERE campaign = 'soak' AND"
            " cardinality(members) > size")
    finally:
        await conn.close()
    assert over == 0
