"""Games' read-model tables, written and read from their declarations (games.core).

A game declares its table's columns and Postgres types; its rows are written in the
owner's commit statement (one upsert per table, set-based over `unnest`) and read back as
plain mappings, with times as epoch milliseconds and jsonb as Python values: the same
shape the game's `rows` produced, so `rebuild` and `view` read what `rows` wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import asyncpg

from games import jsontext
from games.core import ReadModel


def _ts(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def epoch_ms(moment: datetime) -> int:
    """A Postgres timestamp as epoch milliseconds (the games' and the owner's time)."""
    return round(moment.timestamp() * 1000)


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else epoch_ms(moment)


def upsert(model: ReadModel, first: int) -> tuple[str, int]:
    """The data-modifying CTE body writing `model`'s rows from arguments `$first`...; and
    how many arguments it takes (one array per column)."""
    return _upsert(model, first), len(model.columns)


@lru_cache(maxsize=64)
def _upsert(model: ReadModel, first: int) -> str:
    names = [c.name for c in model.columns]
    params, selected = [], []
    for offset, column in enumerate(model.columns):
        n = first + offset
        if column.sql_type.endswith("[]"):
            # Arrays of arrays must be rectangular in Postgres: each row's array travels
            # as JSON text and is unpacked here (NULL stays NULL).
            params.append(f"${n}::text[]")
            selected.append(f"CASE WHEN r.{column.name} IS NULL THEN NULL ELSE ARRAY(SELECT"
                            f" jsonb_array_elements_text(r.{column.name}::jsonb))"
                            f"::{column.sql_type} END")
        elif column.sql_type == "jsonb":
            params.append(f"${n}::text[]")
            selected.append(f"r.{column.name}::jsonb")
        else:
            params.append(f"${n}::{column.sql_type}[]")
            selected.append(f"r.{column.name}")
    updates = ", ".join([*(f"{name} = EXCLUDED.{name}" for name in names[2:]),
                         "updated_at = now()"])
    return (f"INSERT INTO {model.table} ({', '.join(names)})"
            f" SELECT {', '.join(selected)} FROM unnest({', '.join(params)})"
            f" AS r({', '.join(names)})"
            f" ON CONFLICT ({names[0]}, {names[1]}) DO UPDATE SET {updates}")


def arguments(model: ReadModel, rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    """`rows` (as the game made them) as one array per column, for `upsert`."""
    converters = _converters(model)
    columns: list[list[Any]] = [[] for _ in converters]
    for row in rows:
        for column, convert, value in zip(columns, converters, row, strict=True):
            # None is SQL NULL, whatever the column's type.
            column.append(value if convert is None or value is None else convert(value))
    return columns


@lru_cache(maxsize=64)
def _converters(model: ReadModel) -> tuple[Callable[[Any], Any] | None, ...]:
    """How each column's values travel (None: as they are), worked out once per model
    rather than per value on every commit."""
    found: list[Callable[[Any], Any] | None] = []
    for column in model.columns:
        if column.sql_type.endswith("[]") or column.sql_type == "jsonb":
            found.append(jsontext.compact)
        elif column.sql_type == "timestamptz":
            found.append(_ts)
        else:
            found.append(None)
    return tuple(found)


def plain(model: ReadModel, record: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row as the game made it: times as epoch ms, jsonb parsed, arrays as
    lists."""
    found: dict[str, Any] = {}
    for column in model.columns:
        value = record[column.name]
        if column.sql_type == "timestamptz":
            value = _ms(value)
        elif column.sql_type == "jsonb" and isinstance(value, str):
            value = json.loads(value)
        elif column.sql_type.endswith("[]") and value is not None:
            value = list(value)
        found[column.name] = value
    return found


async def load(conn: asyncpg.Connection | asyncpg.Pool, model: ReadModel, campaign: str
               ) -> list[dict[str, Any]]:
    """Every stored instance of a campaign (the read model doubles as the owner's
    snapshot)."""
    rows = await conn.fetch(f"SELECT * FROM {model.table} WHERE campaign = $1", campaign)
    return [plain(model, r) for r in rows]


async def one(conn: asyncpg.Connection | asyncpg.Pool, model: ReadModel, campaign: str,
              instance: str) -> dict[str, Any] | None:
    """One instance's row, or None."""
    row = await conn.fetchrow(f"SELECT * FROM {model.table} WHERE campaign = $1 AND id = $2",
                              campaign, instance)
    return None if row is None else plain(model, row)


async def open_ones(conn: asyncpg.Connection | asyncpg.Pool, model: ReadModel, campaign: str,
                    limit: int) -> list[dict[str, Any]]:
    """A campaign's open instances, those closest to their deadline first."""
    rows = await conn.fetch(
        f"SELECT * FROM {model.table} WHERE campaign = $1 AND status = 'open'"
        " ORDER BY expires_at LIMIT $2", campaign, limit)
    return [plain(model, r) for r in rows]


def tables(models: Iterable[ReadModel]) -> tuple[ReadModel, ...]:
    """Distinct models in a stable order (the commit statement is cached by it)."""
    return tuple(sorted(set(models), key=lambda m: m.table))
