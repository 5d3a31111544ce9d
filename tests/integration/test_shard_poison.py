"""One client's bad data never takes its batch, or its owner, down with it.

The owner commits the commands that arrive together in one statement; a string Postgres
refuses, in any one of them, would fail them all. The owner refuses such strings before
it applies a command, and when Postgres refuses a command's data anyway (here: a trigger
that raises a data exception for certain keys, standing in for whatever the checks miss),
only that command fails: the rest of its batch commits and is answered.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from games.groupbuy import GAME as GROUPBUY
from storage.text import storable
from tests.integration.conftest import Clock, Factory, cmd, make_config
from tests.support import configs
from tests.support.services import Services

pytestmark = pytest.mark.integration

UNSTORABLE = ["\udcff", "nul\x00", "line\n", "x" * 129]


async def _count(svc: Services, sql: str) -> int:
    conn = await asyncpg.connect(svc.database_url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


@pytest.fixture
async def poison(clean: Services) -> AsyncIterator[Services]:
    """Postgres refuses (SQLSTATE 22000, a data exception) any idempotency answer whose
    key starts with `poison`, and any event that names the user `poison-user`."""
    conn = await asyncpg.connect(clean.database_url)
    try:
        await conn.execute("""
            CREATE FUNCTION test_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'poisoned row' USING ERRCODE = 'data_exception';
            END $$;
            CREATE TRIGGER test_poison_results BEFORE INSERT ON command_results
                FOR EACH ROW WHEN (NEW.key LIKE 'poison%') EXECUTE FUNCTION test_poison();
            CREATE TRIGGER test_poison_events BEFORE INSERT ON events
                FOR EACH ROW WHEN (NEW.data::text LIKE '%poison-user%')
                EXECUTE FUNCTION test_poison();
        """)
        yield clean
    finally:
        await conn.execute("""
            DROP TRIGGER IF EXISTS test_poison_results ON command_results;
            DROP TRIGGER IF EXISTS test_poison_events ON events;
            DROP FUNCTION IF EXISTS test_poison();
        """)
        await conn.close()


@pytest.mark.parametrize("field", ["user", "key", "group"])
async def test_the_owner_refuses_strings_postgres_cannot_store(
        clean: Services, shard_factory: Factory, field: str) -> None:
    config = make_config(clean, configs.campaign("c1", size=3, stock=100, led=50))
    shard = await shard_factory(config, Clock())
    [opened] = await shard.submit([cmd("open", "leader", key="l1")])
    group = opened["result"]["group"]["id"]
    bad = []
    for value in UNSTORABLE:
        command = cmd("join", "joiner", group=group, key="j-ok")
        if field == "group":
            command["params"] = {"group": value}
        else:
            command[field] = value
        bad.append(command)
    good = [cmd("join", f"good{i}", group=group, key=f"g{i}") for i in range(2)]
    # Bad and good commands in one call: one batch, one commit.
    answers = await shard.submit([good[0], *bad, good[1]])
    assert [a["ok"] for a in answers] == [True, *([False] * len(bad)), True], answers
    for value, answer in zip(UNSTORABLE, answers[1:-1], strict=True):
        # What Postgres cannot store is refused as invalid; a storable but odd group id is
        # simply not a group (the gateway refuses both at its edge anyway).
        expected = {"invalid_request"} if field != "group" or not storable(value) else {
            "invalid_request", "not_found"}
        assert answer["error"]["code"] in expected, (value, answer)
    assert answers[-1]["result"]["group"]["members"] == ["leader", "good0", "good1"]
    # The three good answers, and (for odd but storable group ids) the first refusal
    # remembered under its key: nothing unstorable was written.
    remembered = 3 + (1 if field == "group" else 0)
    assert await _count(clean, "SELECT count(*) FROM command_results") == remembered


async def test_a_data_error_fails_only_the_command_it_came_from(
        poison: Services, shard_factory: Factory) -> None:
    config = make_config(poison, configs.campaign("c1", size=5, stock=100, led=50))
    shard = await shard_factory(config, Clock())
    answers = await shard.submit([
        cmd("open", "alice", key="a1"),
        cmd("join", "bob", group="no-such-group", key="poison-refused"),  # refused, keyed
        cmd("open", "carol", key="poison-accepted"),  # accepted: its events commit
        cmd("open", "dave", key="d1"),
    ])
    alice, refused, carol, dave = answers
    assert alice["ok"] and dave["ok"], answers
    # Nothing of bob's command could be saved: it is refused, and nothing changed.
    assert refused["error"]["code"] == "invalid_request", refused
    # carol's group was opened and saved; only her key's answer could not be stored: the
    # owner still remembers it, so her retry is answered again, not run again.
    assert carol["ok"], carol
    [retried] = await shard.submit([cmd("open", "carol", key="poison-accepted")])
    assert retried == carol
    stored = await _count(poison, "SELECT count(*) FROM groups")
    assert stored == 3
    assert await _count(poison, "SELECT count(*) FROM command_results") == 2
    # The owner is still up and answering, from the same state as Postgres.
    [erin] = await shard.submit([cmd("open", "erin", key="e1")])
    assert erin["ok"], erin
    summary = await shard.ready()
    assert summary["campaigns"]["c1"]["groups"] == 4
    # An owner rebuilt from Postgres holds exactly what the first one held.
    await shard.stop()
    reborn = await shard_factory(config, Clock())
    assert (await reborn.ready())["campaigns"] == summary["campaigns"]


async def test_events_postgres_refuses_restart_the_owner_from_what_was_committed(
        poison: Services, shard_factory: Factory) -> None:
    config = make_config(poison, configs.campaign("c1", size=5, stock=100, led=50))
    shard = await shard_factory(config, Clock())
    answers = await shard.submit([cmd("open", "alice", key="a1"),
                                  cmd("open", "poison-user", key="p1")])
    # poison-user's group exists in memory but can never reach Postgres: the owner's
    # memory no longer matches, so it answers unavailable and stops, for a rebuild.
    assert [a["error"]["code"] for a in answers] == ["unavailable", "unavailable"], answers
    [later] = await shard.submit([cmd("open", "bob")])
    assert later["error"]["code"] == "unavailable"
    assert await _count(poison, "SELECT count(*) FROM events") == 0
    reborn = await shard_factory(config, Clock())
    [again] = await reborn.submit([cmd("open", "alice", key="a1")])
    assert again["ok"], again


@pytest.mark.parametrize("part", ["applied", "rows", "answer"])
async def test_game_code_that_fails_fails_only_its_command(
        clean: Services, shard_factory: Factory, monkeypatch: pytest.MonkeyPatch,
        part: str) -> None:
    """A bug in a game (an exception that is no refusal, here injected into one of the
    game's own steps for one user's command) queues nothing of that command: the others in
    its batch commit, the owner stays up, and Postgres matches its memory."""
    config = make_config(clean, configs.campaign("c1", size=3, stock=100, led=50))
    shard = await shard_factory(config, Clock())
    original = getattr(GROUPBUY, part)

    def failing(*args: Any) -> Any:
        if any("boom" in repr(a) for a in args):
            raise RuntimeError("a bug in the game")
        return original(*args)

    monkeypatch.setattr(GROUPBUY, part, failing)
    answers = await shard.submit([cmd("open", "alice", key="a"), cmd("open", "boom", key="b"),
                                  cmd("open", "dave", key="d")])
    assert [a["ok"] for a in answers] == [True, False, True], answers
    assert answers[1]["error"]["code"] == "internal"
    monkeypatch.setattr(GROUPBUY, part, original)
    # Nothing of boom's command was kept, its key included: the retry runs it.
    [again] = await shard.submit([cmd("open", "boom", key="b")])
    assert again["ok"], again
    assert await _count(clean, "SELECT count(*) FROM groups") == 3
    assert await _count(clean, "SELECT count(*) FROM events") == 3
    summary = await shard.ready()
    await shard.stop()
    reborn = await shard_factory(config, Clock())
    assert (await reborn.ready())["campaigns"] == summary["campaigns"]
