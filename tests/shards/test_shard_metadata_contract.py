"""The metadata store contract, run on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from shard_support import drop_schemas, require_service

from millions.shards import MapConflictError, OperationError, ShardError, ShardMap
from millions.shards.cluster import open_metadata
from millions.shards.keyspace import KeyRange
from millions.shards.metadata.base import MetadataStore
from millions.shards.storage.base import ShardLocation
from millions.shards.workflow import Operation
from services import POSTGRES_URL

pytestmark = pytest.mark.timeout(30)

Opener = Callable[[], MetadataStore]


@pytest.fixture(params=["sqlite", "postgres"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    opened: list[MetadataStore] = []
    tag = f"shmeta_{uuid.uuid4().hex[:10]}"
    if request.param == "postgres":
        require_service("postgres")
        location = POSTGRES_URL
    else:
        location = str(tmp_path / "metadata.sqlite3")

    def opener() -> MetadataStore:
        store = open_metadata(location, tag)
        opened.append(store)
        return store

    try:
        yield opener
    finally:
        for store in opened:
            await store.close()
        if request.param == "postgres":
            await drop_schemas(tag)


def an_operation(op_id: str, phase: str = "copying") -> Operation:
    now = time.time()
    return Operation(op_id, "move", "40-80", "s1", "s2", phase, "test:1", now, now)  # type: ignore[arg-type]


async def test_initialize_publishes_version_one_once(open_store: Opener) -> None:
    prepared: list[ShardMap] = []

    async def prepare(initial: ShardMap) -> None:
        await asyncio.sleep(0.05)  # widen the race window
        prepared.append(initial)

    stores = [open_store() for _ in range(3)]
    assert await stores[0].current_map() is None
    wanted = ShardMap.initial(["s1", "s2"])
    results = await asyncio.gather(*(s.initialize(wanted, prepare) for s in stores))
    assert results == [wanted] * 3
    assert prepared == [wanted]
    assert await stores[1].current_map() == wanted
    other = ShardMap.initial(["x"])
    assert await stores[2].initialize(other, prepare) == wanted


async def test_publishing_needs_the_next_version(open_store: Opener) -> None:
    one, two = open_store(), open_store()
    first = ShardMap.initial(["s1", "s2"])
    await one.publish(first, "initial map")
    second = first.reassign(KeyRange.parse("40-80"), "s3")
    with pytest.raises(MapConflictError):
        await one.publish(second.bumped(), "skips a version")
    await one.publish(second, "move 40-80")
    with pytest.raises(MapConflictError):
        await two.publish(first.bumped(), "lost the race")
    assert await two.current_map() == second
    history = await two.history()
    assert [(h.version, h.reason) for h in history] == [(2, "move 40-80"), (1, "initial map")]


async def test_the_shard_registry(open_store: Opener) -> None:
    store = open_store()
    s1 = ShardLocation("s1", "sqlite", path="/data/s1.sqlite3")
    s2 = ShardLocation("s2", "postgres", url="postgresql://u:secret@db/x", schema="shard_s2")
    await store.register(s1)
    await store.register(s2)
    await store.register(s1)
    assert await open_store().locations() == {"s1": s1, "s2": s2}
    with pytest.raises(ShardError, match=r"registered at /data/s1\.sqlite3"):
        await store.register(ShardLocation("s1", "sqlite", path="/elsewhere.sqlite3"))
    assert "secret" not in s2.describe()


async def test_id_blocks_never_overlap(open_store: Opener) -> None:
    stores = [open_store() for _ in range(3)]
    assert await stores[0].reserve_ids("users", 10) == 1
    assert await stores[1].reserve_ids("users", 5) == 11
    assert await stores[1].reserve_ids("photos", 5) == 1
    firsts = await asyncio.gather(*(s.reserve_ids("users", 100) for s in stores * 4))
    blocks = sorted(firsts)
    assert blocks == [16 + 100 * i for i in range(12)]
    with pytest.raises(ValueError):
        await stores[0].reserve_ids("users", 0)


async def test_one_active_operation_at_a_time(open_store: Opener) -> None:
    store, other = open_store(), open_store()
    assert await store.active_operation() is None
    first = an_operation("move-1")
    await store.begin_operation(first)
    with pytest.raises(OperationError, match=r"move 40-80 \(copying\)"):
        await other.begin_operation(an_operation("move-2"))
    first.phase = "switched"
    first.pauses_s.append(0.01)
    await store.save_operation(first)
    assert await other.active_operation() == first
    first.phase = "completed"
    await store.save_operation(first)
    assert await other.active_operation() is None
    third = an_operation("move-3")
    await other.begin_operation(third)
    assert [op.id for op in await store.operations()] == ["move-3", "move-1"]


async def test_only_one_process_can_take_an_operation_over(open_store: Opener) -> None:
    store = open_store()
    await store.begin_operation(an_operation("move-1"))
    seen = await store.active_operation()
    assert seen is not None
    first, second = Operation.from_json(seen.to_json()), Operation.from_json(seen.to_json())
    first.owner, first.updated_at = "a:1", seen.updated_at + 1
    second.owner, second.updated_at = "b:2", seen.updated_at + 2
    results = await asyncio.gather(
        open_store().claim_operation(first, seen.updated_at),
        open_store().claim_operation(second, seen.updated_at),
    )
    assert sorted(results) == [False, True]
    winner = first if results[0] else second
    assert await store.active_operation() == winner


async def test_load_reports_replace_per_reporter(open_store: Opener) -> None:
    store = open_store()
    now = time.time()
    await store.save_load_report("a", {"n": 1}, now - 30)
    await store.save_load_report("b", {"n": 2}, now)
    await store.save_load_report("a", {"n": 3}, now)
    assert await open_store().load_reports(now - 10) == [{"n": 3}, {"n": 2}]
    assert await store.load_reports(now + 1) == []
