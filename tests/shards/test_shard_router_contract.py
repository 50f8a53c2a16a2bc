"""The router and shard storage contract, run on every engine (SQLite files, PostgreSQL
schemas): migrations, routed reads and writes, the change log, scatter queries, fencing."""

from __future__ import annotations

import asyncio
import time

import pytest
from shard_support import SCHEMA, ShardEnv

from millions.shards import (
    DuplicateRowError,
    KeyRange,
    Migration,
    QueryError,
    RangeUnavailableError,
    Resharder,
    SchemaError,
    ShardRouter,
    ShardSchema,
    StaleMapError,
    key_hash,
)
from millions.shards.keyspace import stored_hash
from millions.shards.storage.base import RowWrite

pytestmark = pytest.mark.timeout(60)


async def test_migrations_run_once_per_shard_and_are_recorded(env: ShardEnv) -> None:
    cluster = env.cluster()
    assert await cluster.migrate() == {"s1": [1, 2], "s2": [1, 2]}
    assert await cluster.migrate() == {"s1": [], "s2": []}
    grown = ShardSchema(
        SCHEMA.tables,
        (*SCHEMA.migrations, Migration(3, "user email", "ALTER TABLE users ADD COLUMN email TEXT")),
    )
    later = env.cluster()
    later.schema = grown
    assert await later.migrate() == {"s1": [3], "s2": [3]}
    for name in ("s1", "s2"):
        assert await (await later.storage(name)).applied_migrations() == [1, 2, 3]
    shard_map = await cluster.current_map()
    assert shard_map.to_dict() == {"version": 1, "ranges": {"-80": "s1", "80-": "s2"}}
    fence = await (await cluster.storage("s2")).fence()
    assert [r.name for r in fence.ranges] == ["80-"] and fence.version == 1


async def test_processes_migrating_at_once_apply_each_migration_once(env: ShardEnv) -> None:
    results = await asyncio.gather(*(env.cluster().migrate() for _ in range(3)))
    for shard in ("s1", "s2"):
        applied = sorted(v for result in results for v in result[shard])
        assert applied == [1, 2]
    assert (await env.cluster().current_map()).version == 1


async def test_rows_live_only_on_the_shard_that_owns_their_key(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    for user_id in range(1, 41):
        assert await router.insert("users", {"id": user_id, "username": f"u{user_id}"}) == {
            "id": user_id,
            "username": f"u{user_id}",
            "bio": None,
            "visits": 0,
        }
    counts = {}
    for name in ("s1", "s2"):
        storage = await router.cluster.storage(name)
        counts[name] = (await storage.row_counts(SCHEMA.tables))["users"]
    expected = sum(1 for i in range(1, 41) if router.shard_for(i) == "s1")
    assert counts == {"s1": expected, "s2": 40 - expected}
    assert 0 < expected < 40
    assert await router.get("users", {"id": 7}) == {
        "id": 7,
        "username": "u7",
        "bio": None,
        "visits": 0,
    }
    assert await router.get("users", {"id": 99}) is None


async def test_updates_upserts_and_deletes(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    await router.insert("users", {"id": 1, "username": "ann"})
    with pytest.raises(DuplicateRowError, match="users"):
        await router.insert("users", {"id": 1, "username": "other"})
    changed = await router.update("users", {"id": 1}, {"bio": "hi", "visits": 3})
    assert changed == {"id": 1, "username": "ann", "bio": "hi", "visits": 3}
    assert await router.update("users", {"id": 2}, {"bio": "x"}) is None
    assert (await router.upsert("users", {"id": 1, "username": "ann2"}))["username"] == "ann2"
    assert (await router.upsert("users", {"id": 2, "username": "bob"}))["username"] == "bob"
    photo = {
        "owner_id": 2,
        "id": 10,
        "title": "t",
        "size_bytes": 3,
        "thumb": b"\x00\xff",
        "created_at": 1.25,
    }
    assert await router.insert("photos", photo) == photo
    assert await router.get("photos", {"owner_id": 2, "id": 10}) == photo
    assert await router.delete("photos", {"owner_id": 2, "id": 10}) is True
    assert await router.delete("photos", {"owner_id": 2, "id": 10}) is False
    assert await router.fetch(1, "SELECT username FROM users WHERE id = $1", (1,)) == [
        {"username": "ann2"}
    ]


async def test_every_write_appends_to_its_shards_change_log_in_the_same_transaction(
    env: ShardEnv,
) -> None:
    await env.cluster().migrate()
    router = await env.router()
    shard = router.shard_for(5)
    await router.insert("users", {"id": 5, "username": "eve"})
    await router.update("users", {"id": 5}, {"visits": 1})
    with pytest.raises(DuplicateRowError):
        await router.insert("users", {"id": 5, "username": "again"})  # rolled back: no change
    await router.delete("users", {"id": 5})
    changes = await router.changes_since(shard, 0)
    assert [(c.table, c.op, c.pk) for c in changes] == [
        ("users", "insert", {"id": 5}),
        ("users", "update", {"id": 5}),
        ("users", "delete", {"id": 5}),
    ]
    assert [c.seq for c in changes] == sorted({c.seq for c in changes})
    assert all(c.keyspace_id == key_hash(5) for c in changes)
    assert changes[1].row is not None and changes[1].row["visits"] == 1
    assert changes[2].row is None
    assert await router.changes_since(shard, changes[0].seq, limit=1) == [changes[1]]
    elsewhere = KeyRange.parse("80-") if key_hash(5) < 0x80 << 56 else KeyRange.parse("-80")
    assert await router.changes_since(shard, 0, elsewhere) == []
    storage = await router.cluster.storage(shard)
    assert await storage.last_seq() == changes[-1].seq


async def test_scatter_merges_counts_orders_and_limits(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    for owner in range(1, 11):
        for photo in range(owner):
            await router.insert(
                "photos",
                {
                    "owner_id": owner,
                    "id": photo,
                    "title": f"p{owner}-{photo}",
                    "size_bytes": owner * 10 + photo,
                    "created_at": float(owner * 100 + photo),
                },
            )
    summary = await router.scatter(
        "SELECT count(*) AS n, sum(size_bytes) AS total, min(created_at) AS first,"
        " max(owner_id) AS top FROM photos WHERE {owned}",
        aggregate={"n": "count", "total": "sum", "first": "min", "top": "max"},
    )
    sizes = [o * 10 + p for o in range(1, 11) for p in range(o)]
    assert summary == [{"n": 55, "total": sum(sizes), "first": 100.0, "top": 10}]
    newest = await router.scatter(
        "SELECT owner_id, id, created_at FROM photos WHERE {owned} AND size_bytes >= $1"
        " ORDER BY created_at DESC LIMIT 3",
        (50,),
        order_by=["-created_at"],
        limit=3,
    )
    assert [(r["owner_id"], r["id"]) for r in newest] == [(10, 9), (10, 8), (10, 7)]
    # A row on a shard that does not own its key (a copy in flight) is not counted twice.
    wrong = "s2" if router.shard_for(3) == "s1" else "s1"
    storage = await router.cluster.storage(wrong)
    spec = SCHEMA.table("photos")
    await storage.write(
        [
            RowWrite(
                "insert",
                spec,
                key_hash(3),
                values={
                    "owner_id": 3,
                    "id": 0,
                    "title": "copy",
                    "size_bytes": 1,
                    "created_at": 0.0,
                    "key_hash": stored_hash(key_hash(3)),
                },
            )
        ],
        fenced=False,
    )
    again = await router.scatter(
        "SELECT count(*) AS n FROM photos AS p WHERE {owned:p}", aggregate={"n": "count"}
    )
    assert again == [{"n": 55}]


async def test_bad_requests_get_clear_errors(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    with pytest.raises(SchemaError, match="shard key"):
        await router.insert("photos", {"id": 1, "title": "x"})
    with pytest.raises(SchemaError, match="not a sharded table"):
        await router.insert("nope", {"id": 1})
    with pytest.raises(SchemaError, match="key column"):
        await router.update("users", {"id": 1}, {"id": 2})
    with pytest.raises(SchemaError, match="primary key"):
        await router.get("photos", {"owner_id": 1})
    with pytest.raises(SchemaError, match="primary key"):
        await router.get("photos", {})
    with pytest.raises(SchemaError, match="primary key"):
        await router.get("users", {"id": 1, "bio": "x"})
    with pytest.raises(SchemaError, match="not a sharded table"):
        await router.get("nope", {"id": 1})
    with pytest.raises(SchemaError, match="set by the router"):
        await router.insert("users", {"id": 1, "username": "x", "key_hash": 0})
    with pytest.raises(ValueError, match=r"\{owned\}"):
        await router.scatter("SELECT count(*) FROM users")
    with pytest.raises(QueryError):
        await router.fetch(1, "SELECT no_such_column FROM users WHERE id = $1", (1,))
    with pytest.raises(QueryError):
        await router.insert("users", {"id": 1, "no_such_column": 2})


async def test_a_shard_refuses_keys_its_fence_does_not_own(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    key = next(k for k in range(100) if router.shard_for(k) == "s2")
    s1 = await router.cluster.storage("s1")
    write = RowWrite(
        "insert",
        SCHEMA.table("users"),
        key_hash(key),
        values={"id": key, "username": "x", "key_hash": stored_hash(key_hash(key))},
    )
    with pytest.raises(StaleMapError, match="s1") as refused:
        await s1.write([write])
    assert refused.value.shard_version == 1
    with pytest.raises(StaleMapError):
        await s1.fetch("SELECT 1 AS one", keyspace_id=key_hash(key))
    with pytest.raises(StaleMapError):
        await s1.fetch("SELECT 1 AS one", ranges=[KeyRange.parse("-")])
    assert await s1.fetch("SELECT 1 AS one", ranges=[KeyRange.parse("-40")]) == [{"one": 1}]


async def test_a_router_with_a_stale_map_is_refused_then_follows_the_move(env: ShardEnv) -> None:
    await env.cluster().migrate()
    fresh = await env.router()
    stale = await env.router()
    keys = [k for k in range(200) if KeyRange.parse("40-80").contains(key_hash(k))][:5]
    for key in keys:
        await stale.insert("users", {"id": key, "username": f"u{key}"})
    op = await Resharder(env.cluster()).move("40-80", "s2")
    assert op.phase == "switched"
    assert stale.shard_map.version == 1 and stale.shard_for(keys[0]) == "s1"
    await stale.update("users", {"id": keys[0]}, {"bio": "written through a stale map"})
    assert stale.shard_map.version == 2 and stale.shard_for(keys[0]) == "s2"
    s1 = await stale.cluster.storage("s1")
    s2 = await stale.cluster.storage("s2")
    [on_s2] = await s2.fetch("SELECT bio FROM users WHERE id = $1", (keys[0],))
    [on_s1] = await s1.fetch("SELECT bio FROM users WHERE id = $1", (keys[0],))
    assert on_s2["bio"] == "written through a stale map" and on_s1["bio"] is None
    # reads follow the move too, and see the write made through the other router
    assert fresh.shard_map.version == 1
    assert (await fresh.get("users", {"id": keys[0]}))["bio"] == "written through a stale map"
    assert fresh.shard_map.version == 2


async def test_a_range_no_shard_accepts_fails_after_the_wait(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    router.stale_wait_s = 0.3
    s1 = await router.cluster.storage("s1")
    await s1.set_fence([KeyRange.parse("-40")], 2)  # as an interrupted cutover leaves it
    key = next(k for k in range(200) if KeyRange.parse("40-80").contains(key_hash(k)))
    started = time.monotonic()
    with pytest.raises(RangeUnavailableError, match="interrupted"):
        await router.insert("users", {"id": key, "username": "x"})
    assert 0.3 <= time.monotonic() - started < 2.0
    other = next(k for k in range(200) if KeyRange.parse("-40").contains(key_hash(k)))
    assert (await router.insert("users", {"id": other, "username": "y"}))["id"] == other


async def test_ids_are_unique_across_routers(env: ShardEnv) -> None:
    await env.cluster().migrate()
    one, two = await env.router(), await env.router()

    async def take(router: ShardRouter, count: int) -> list[int]:
        return [await router.next_id("users") for _ in range(count)]

    got = await asyncio.gather(take(one, 150), take(two, 150), take(one, 30))
    ids = [i for batch in got for i in batch]
    assert len(set(ids)) == len(ids) == 330
    assert min(ids) >= 1


async def test_cached_reads_see_every_write_made_before_them(env: ShardEnv) -> None:
    await env.cluster().migrate()
    router = await env.router()
    await router.insert("users", {"id": 1, "username": "ann"})
    assert (await router.get("users", {"id": 1}, cached=True))["username"] == "ann"
    # A change behind the router's back (no invalidation) proves the next read is a cache hit.
    storage = await router.cluster.storage(router.shard_for(1))
    await storage.write(
        [
            RowWrite(
                "update", SCHEMA.table("users"), key_hash(1), values={"bio": "sneaky"}, pk={"id": 1}
            )
        ],
        fenced=False,
    )
    assert (await router.get("users", {"id": 1}, cached=True))["bio"] is None
    assert (await router.get("users", {"id": 1}))["bio"] == "sneaky"
    for value in ("one", "two", "three"):
        await router.update("users", {"id": 1}, {"bio": value})
        assert (await router.get("users", {"id": 1}, cached=True))["bio"] == value
    rows = await router.fetch(1, "SELECT bio FROM users WHERE id = $1", (1,), cached=True)
    await router.delete("users", {"id": 1})
    assert rows == [{"bio": "three"}]
    assert await router.fetch(1, "SELECT bio FROM users WHERE id = $1", (1,), cached=True) == []
    assert await router.get("users", {"id": 1}, cached=True) is None
