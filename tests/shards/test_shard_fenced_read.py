"""Single-key reads check the shard's fence in the read's own statement
(`statements.fenced_read`): the rows, their order, empty and aggregate results must be what
the app's SQL alone returns, on every engine, and a fence that moved must still refuse."""

from __future__ import annotations

import random
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shard_support import SCHEMA, ShardEnv

from millions.shards import Resharder, StaleMapError, key_hash, statements
from millions.shards.sqlite_worker import dict_row

pytestmark = pytest.mark.timeout(60)

ORDERED_READS = (
    "SELECT id, title FROM photos WHERE owner_id = $1 ORDER BY id DESC",
    "SELECT id FROM photos WHERE owner_id = $1 ORDER BY size_bytes, id",
    "SELECT id, size_bytes FROM photos WHERE owner_id = $1 ORDER BY size_bytes DESC, id LIMIT 7;",
    "SELECT count(*) AS n, sum(size_bytes) AS total FROM photos WHERE owner_id = $1",
    "SELECT id FROM photos WHERE owner_id = $1 AND id < 0 ORDER BY id",
    "SELECT id FROM photos WHERE owner_id = $1 ORDER BY id -- newest last",
)


async def test_single_key_reads_return_what_the_sql_alone_returns(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    ids = list(range(1, 41))
    random.Random(7).shuffle(ids)
    for photo_id in ids:
        await router.insert(
            "photos",
            {
                "owner_id": 5,
                "id": photo_id,
                "title": f"p{photo_id}",
                "size_bytes": photo_id % 6,
                "created_at": 1.0,
            },
        )
    storage = await router.cluster.storage(router.shard_for(5))
    for sql in ORDERED_READS:
        unfenced = await storage.fetch(sql, (5,), fenced=False)
        assert await router.fetch(5, sql, (5,), cached=False) == unfenced, sql
    assert await router.fetch(5, ORDERED_READS[-2], (5,)) == []
    assert await router.fetch(5, ORDERED_READS[3], (5,)) == [{"n": 40, "total": 100}]


async def test_a_fenced_single_key_read_is_refused_after_its_range_moved(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    await router.insert("users", {"id": 3, "username": "c"})
    owner = router.shard_for(3)
    other = "s2" if owner == "s1" else "s1"
    await Resharder(router.cluster).move(router.shard_map.entry_for(key_hash(3))[0], other)
    storage = await router.cluster.storage(owner)
    with pytest.raises(StaleMapError):
        await storage.fetch("SELECT * FROM users WHERE id = $1", (3,), keyspace_id=key_hash(3))
    assert (await router.get("users", {"id": 3})) == {
        "id": 3,
        "username": "c",
        "bio": None,
        "visits": 0,
    }


async def test_primary_key_reads_use_the_join_form_and_return_the_row(env: ShardEnv) -> None:
    """`get` reads by primary key with the table joined to the fence (not a subquery): the
    row, a missing row and a composite key come back as the plain statement returns them."""
    photos = SCHEMA.table("photos")
    fenced = statements.fenced_read(statements.select_by_pk(photos), env.engine)
    assert 'LEFT JOIN "photos" AS t ON t."owner_id" = $1 AND t."id" = $2' in fenced
    await env.cluster().migrate()
    router = await env.router()
    photo = {"owner_id": 9, "id": 4, "title": "x", "size_bytes": 12, "created_at": 2.0}
    await router.insert("photos", photo)
    storage = await router.cluster.storage(router.shard_for(9))
    plain = await storage.fetch(statements.select_by_pk(photos), (9, 4), fenced=False)
    got = await router.get("photos", {"owner_id": 9, "id": 4})
    assert got is not None and [{**got, "key_hash": plain[0]["key_hash"]}] == plain
    assert await router.get("photos", {"owner_id": 9, "id": 5}) is None
    assert await router.get("photos", {"owner_id": 8, "id": 4}) is None


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(st.integers(0, 50), st.integers(-5, 5)), max_size=30, unique_by=lambda r: r[0]
    ),
    descending=st.booleans(),
)
def test_the_sqlite_form_keeps_the_order_of_a_plain_order_by(
    rows: list[tuple[int, int]], descending: bool
) -> None:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE TABLE _millions_fence (id INTEGER PRIMARY KEY, ranges TEXT, map_version INT)"
    )
    db.execute("INSERT INTO _millions_fence VALUES (1, '[\"-\"]', 4)")
    db.execute("CREATE TABLE t (a INT, b INT, k INT, PRIMARY KEY (a, b))")
    db.executemany("INSERT INTO t VALUES (1, ?, ?)", rows)
    sql = f"SELECT b, k FROM t WHERE a = $1 ORDER BY k {'DESC' if descending else ''}, b"
    plain = db.execute(statements.to_sqlite(sql), (1,)).fetchall()
    db.row_factory = dict_row
    wrapped = db.execute(statements.to_sqlite(statements.fenced_read(sql, "sqlite")), (1,))
    found = statements.split_fenced_read(wrapped.fetchall())
    assert found is not None
    assert found[:2] == ('["-"]', 4)
    assert [(r["b"], r["k"]) for r in found[2]] == plain
