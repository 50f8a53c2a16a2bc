"""SQL the router writes: placeholders for SQLite, the {owned} range predicate."""

from __future__ import annotations

import sqlite3

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.shards import statements
from millions.shards.keyspace import KeyRange, stored_hash


def test_placeholders_become_numbered_sqlite_ones_outside_literals() -> None:
    sql = "SELECT '$1', \"$2\" -- $3\n, $1 /* $4 */ FROM t WHERE a = $2 AND b = 'it''s $5'"
    assert statements.to_sqlite(sql) == (
        "SELECT '$1', \"$2\" -- $3\n, ?1 /* $4 */ FROM t WHERE a = ?2 AND b = 'it''s $5'"
    )


@given(st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), min_size=1, max_size=5))
def test_rewritten_placeholders_bind_by_number(values: list[int]) -> None:
    order = list(reversed(range(1, len(values) + 1)))
    sql = "SELECT " + ", ".join(f"${i}" for i in order)
    with sqlite3.connect(":memory:") as db:
        row = db.execute(statements.to_sqlite(sql), values).fetchone()
    assert list(row) == [values[i - 1] for i in order]


def test_owned_marker_becomes_the_range_predicate() -> None:
    ranges = [KeyRange.parse("-40"), KeyRange.parse("80-")]
    sql = statements.substitute_owned("SELECT * FROM p AS x WHERE {owned:x} AND n > $1", ranges)
    low = stored_hash(0x40 << 56)
    assert f'"x"."key_hash" < {low}' in sql
    assert f'"x"."key_hash" >= {stored_hash(0x80 << 56)}' in sql
    assert statements.substitute_owned("SELECT 1 WHERE {owned}", []) == "SELECT 1 WHERE 1 = 0"
    with pytest.raises(ValueError, match=r"\{owned\}"):
        statements.substitute_owned("SELECT count(*) FROM photos", ranges)


@given(st.lists(st.integers(min_value=0, max_value=2**64 - 1), max_size=30))
def test_range_predicate_selects_exactly_the_range(ids: list[int]) -> None:
    key_range = KeyRange.parse("40-c0")
    with sqlite3.connect(":memory:") as db:
        db.execute("CREATE TABLE t (key_hash INTEGER)")
        db.executemany("INSERT INTO t VALUES (?)", [(stored_hash(i),) for i in ids])
        found = db.execute(
            f"SELECT count(*) FROM t WHERE {statements.range_predicate(key_range)}"
        ).fetchone()[0]
    assert found == sum(1 for i in ids if key_range.contains(i))
