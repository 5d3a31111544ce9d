"""Versioned migrations: `migrations/NNNN_name.sql`, applied in order, each once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from games.registry import GAMES

MIGRATIONS = Path(__file__).with_name("migrations")
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Several gateways may start at once; one advisory lock serialises their migrations.
_LOCK_ID = 0x46495353  # "FISS"
# Every table that holds Fission's data (what a test or a benchmark empties between runs).
DATA_TABLES = ("events", *(game.read_model.table for game in GAMES.values()),
               "command_results", "outbox", "orders", "payments", "referrals", "commissions",
               "referral_history", "ledger_entries", "withdrawals", "game_notices", "tax_flags",
               "user_regions", "provider_refunds", "sandbox_payments", "provider_checks",
               "distributors", "distributor_changes", "distributor_grades", "grade_changes",
               "order_refunds")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration file, in version order."""
    found = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path.name} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], path.read_text(encoding="utf-8")))
    return found


async def migrate(conn: asyncpg.Connection, up_to: int | None = None) -> list[int]:
    """Apply the migrations `conn`'s database lacks (up to version `up_to`, when given);
    returns the versions applied."""
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        applied = []
        for migration in available():
            if migration.version in done or (up_to is not None and migration.version > up_to):
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version, migration.name,
                )
            applied.append(migration.version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
