"""The SQL the sharding layer writes itself, for SQLite and PostgreSQL alike.

Statements are built with PostgreSQL's numbered placeholders (`$1`); SQLite understands the
same numbering spelled `?1`, so `to_sqlite` rewrites placeholders outside string literals,
quoted identifiers and comments. App SQL passed to the router uses `$n` for both engines.
Identifiers come from a `TableSpec` or a row's keys, checked as plain identifiers first.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from millions.shards.keyspace import KeyRange
from millions.shards.schema import HASH_COLUMN, TableSpec, check_identifier

_LEXEMES = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|--[^\n]*|/\*.*?\*/|\$(\d+)", re.S)
_OWNED = re.compile(r"\{owned(?::([A-Za-z_][A-Za-z0-9_]*))?\}")
OWNED_MARKER = "{owned}"
#: How many distinct statements the statement builders (and engines' own caches) remember.
CACHED_STATEMENTS = 1024


@functools.lru_cache(maxsize=CACHED_STATEMENTS)
def to_sqlite(sql: str) -> str:
    """`$1` placeholders as SQLite's `?1`, leaving literals and comments alone."""
    return _LEXEMES.sub(lambda m: f"?{m.group(1)}" if m.group(1) else m.group(0), sql)


def quote(name: str) -> str:
    return f'"{check_identifier(name, "column or table name")}"'


def _placeholders(start: int, count: int) -> str:
    return ", ".join(f"${i}" for i in range(start, start + count))


def _pk_condition(table: TableSpec, first: int) -> str:
    return " AND ".join(f"{quote(c)} = ${first + i}" for i, c in enumerate(table.primary_key))


def insert(table: TableSpec, columns: Sequence[str]) -> str:
    names = ", ".join(quote(c) for c in columns)
    return (
        f"INSERT INTO {quote(table.name)} ({names}) VALUES ({_placeholders(1, len(columns))})"
        " RETURNING *"
    )


def upsert(table: TableSpec, columns: Sequence[str]) -> str:
    """Insert, or replace the non-key columns of the row with the same primary key."""
    updated = [c for c in columns if c not in table.primary_key] or [table.primary_key[0]]
    assignments = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in updated)
    conflict = ", ".join(quote(c) for c in table.primary_key)
    return (
        f"{insert(table, columns).removesuffix(' RETURNING *')}"
        f" ON CONFLICT ({conflict}) DO UPDATE SET {assignments} RETURNING *"
    )


def update(table: TableSpec, columns: Sequence[str]) -> str:
    assignments = ", ".join(f"{quote(c)} = ${i + 1}" for i, c in enumerate(columns))
    return (
        f"UPDATE {quote(table.name)} SET {assignments}"
        f" WHERE {_pk_condition(table, len(columns) + 1)} RETURNING *"
    )


def delete(table: TableSpec) -> str:
    return f"DELETE FROM {quote(table.name)} WHERE {_pk_condition(table, 1)} RETURNING *"


_PK_SELECTS: dict[str, TableSpec] = {}  # what select_by_pk built -> its table


@functools.lru_cache(maxsize=CACHED_STATEMENTS)
def select_by_pk(table: TableSpec) -> str:
    sql = f"SELECT * FROM {quote(table.name)} WHERE {_pk_condition(table, 1)}"
    _PK_SELECTS[sql] = table
    return sql


FENCE_RANGES_COLUMN = "_millions_fence_ranges"
FENCE_VERSION_COLUMN = "_millions_fence_version"
FOUND_COLUMN = "_millions_found"


@functools.lru_cache(maxsize=CACHED_STATEMENTS)
def fenced_read(sql: str, engine: str) -> str:
    """`sql` (a read) and the shard's fence in one statement, so one round trip and one
    snapshot answer both (`select_by_pk`'s statements get a cheaper form of the same
    shape). Every row carries the fence (`FENCE_RANGES_COLUMN`,
    `FENCE_VERSION_COLUMN`) and `FOUND_COLUMN` (NULL: one row saying the read found none)
    before the read's columns. The fence table has one row, so the read's rows keep their
    order; on SQLite the `LIMIT -1` keeps the read a subquery of its own (SQLite flattens a
    LEFT JOIN's plain right-hand subquery and would drop its ORDER BY)."""
    table = _PK_SELECTS.get(sql)
    if table is not None:
        # The router's own read of one row: the table itself LEFT JOINed on its primary
        # key, which both engines plan as one index lookup (cheaper than a subquery). A
        # joined row's first key column equals its parameter, so it is never NULL.
        condition = " AND ".join(
            f"t.{quote(c)} = ${i + 1}" for i, c in enumerate(table.primary_key)
        )
        return (
            f"SELECT f.ranges AS {FENCE_RANGES_COLUMN}, f.map_version AS {FENCE_VERSION_COLUMN},"
            f" t.{quote(table.primary_key[0])} AS {FOUND_COLUMN}, t.* FROM _millions_fence AS f"
            f" LEFT JOIN {quote(table.name)} AS t ON {condition} WHERE f.id = 1"
        )
    body = sql.rstrip().rstrip(";")
    unlimited = " LIMIT -1" if engine == "sqlite" else ""
    return (
        f"SELECT f.ranges AS {FENCE_RANGES_COLUMN}, f.map_version AS {FENCE_VERSION_COLUMN},"
        f" q.* FROM _millions_fence AS f LEFT JOIN (SELECT 1 AS {FOUND_COLUMN}, s.* FROM (\n"
        f"{body}\n) AS s{unlimited}) AS q ON 1 = 1 WHERE f.id = 1"
    )


def split_fenced_read(
    rows: list[dict[str, Any]],
) -> tuple[str, int, list[dict[str, Any]]] | None:
    """(fence ranges text, fence version, the read's rows) of a `fenced_read` result, the
    marker columns removed in place; None when the shard has no fence row."""
    if not rows:
        return None
    first = rows[0]
    ranges, version = str(first[FENCE_RANGES_COLUMN]), int(first[FENCE_VERSION_COLUMN])
    if first[FOUND_COLUMN] is None:
        return ranges, version, []
    for row in rows:
        del row[FENCE_RANGES_COLUMN], row[FENCE_VERSION_COLUMN], row[FOUND_COLUMN]
    return ranges, version, rows


def range_predicate(key_range: KeyRange, alias: str | None = None) -> str:
    """`key_hash` within the range, with literal bounds (they are ints we computed)."""
    column = f"{quote(alias)}.{quote(HASH_COLUMN)}" if alias else quote(HASH_COLUMN)
    low, high = key_range.stored_bounds()
    if high is None:
        return f"{column} >= {low}"
    return f"({column} >= {low} AND {column} < {high})"


def owned_predicate(ranges: Sequence[KeyRange], alias: str | None = None) -> str:
    if not ranges:
        return "1 = 0"
    return "(" + " OR ".join(range_predicate(r, alias) for r in ranges) + ")"


def substitute_owned(sql: str, ranges: Sequence[KeyRange]) -> str:
    """Replace each `{owned}` / `{owned:alias}` marker with the shard's range predicate."""
    if not _OWNED.search(sql):
        raise ValueError(
            "a scatter query must restrict rows to the shard's ranges with {owned} "
            "(or {owned:alias}), e.g. SELECT count(*) AS n FROM photos WHERE {owned}"
        )
    return _OWNED.sub(lambda m: owned_predicate(ranges, m.group(1)), sql)


def scan(table: TableSpec, key_range: KeyRange, *, after: bool, limit: int) -> str:
    """Rows of a range in primary key order, from just after `$1..$n` when `after`."""
    pk = ", ".join(quote(c) for c in table.primary_key)
    where = range_predicate(key_range)
    if after:
        where += f" AND ({pk}) > ({_placeholders(1, len(table.primary_key))})"
    return f"SELECT * FROM {quote(table.name)} WHERE {where} ORDER BY {pk} LIMIT {int(limit)}"


def count_in_range(table: TableSpec, key_range: KeyRange) -> str:
    return f"SELECT count(*) FROM {quote(table.name)} WHERE {range_predicate(key_range)}"


def select_range(table: TableSpec, key_range: KeyRange) -> str:
    return f"SELECT * FROM {quote(table.name)} WHERE {range_predicate(key_range)}"
