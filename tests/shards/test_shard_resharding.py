"""Online resharding while writers write: nothing lost, nothing duplicated, a short pause;
reverse, cleanup, recovery from an interrupted cutover, refusal to switch on a bad copy."""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from dataclasses import dataclass, field

import pytest
from shard_support import SCHEMA, ShardEnv

from millions.shards import (
    HotKeySampler,
    KeyRange,
    OperationError,
    Progress,
    RangeUnavailableError,
    Resharder,
    ShardRouter,
    VerificationError,
    key_hash,
)
from millions.shards.workflow import Operation

pytestmark = pytest.mark.timeout(60)

USERS = range(1, 241)


@dataclass
class Ledger:
    """What the writers were told succeeded."""

    photos: set[tuple[int, int]] = field(default_factory=set)
    deleted: set[tuple[int, int]] = field(default_factory=set)
    visits: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    writes: int = 0


async def seed(router: ShardRouter, ledger: Ledger) -> None:
    for user in USERS:
        await router.insert("users", {"id": user, "username": f"u{user}"})
        ledger.visits[user] = 0
        for photo in range(3):
            await router.insert("photos", photo_row(user, photo))
            ledger.photos.add((user, photo))


def photo_row(owner: int, photo: int) -> dict[str, object]:
    return {
        "owner_id": owner,
        "id": photo,
        "title": f"photo {photo} of {owner}",
        "size_bytes": owner * 1000 + photo,
        "thumb": bytes([owner % 256, photo % 256]),
        "created_at": float(photo),
    }


async def writer(
    router: ShardRouter, lane: int, lanes: int, ledger: Ledger, stop: asyncio.Event
) -> None:
    """Inserts, updates and deletes on its own users until `stop`, recording what succeeded."""
    mine = [user for user in USERS if user % lanes == lane]
    next_photo = itertools.count(1000)
    for step in itertools.count():
        if stop.is_set():
            return
        user = mine[step % len(mine)]
        started = time.monotonic()
        if step % 3 == 0:
            photo = next(next_photo)
            await router.insert("photos", photo_row(user, photo))
            ledger.photos.add((user, photo))
        elif step % 3 == 1:
            await router.update("users", {"id": user}, {"visits": ledger.visits[user] + 1})
            ledger.visits[user] += 1
        else:
            alive = sorted(p for p in ledger.photos - ledger.deleted if p[0] == user)
            if alive:
                assert await router.delete("photos", {"owner_id": user, "id": alive[0][1]})
                ledger.deleted.add(alive[0])
        ledger.latencies.append(time.monotonic() - started)
        ledger.writes += 1
        await asyncio.sleep(0)


async def assert_everything_acknowledged_is_there_once(env: ShardEnv, ledger: Ledger) -> None:
    router = await env.router()
    expected = ledger.photos - ledger.deleted
    listed = await router.scatter("SELECT owner_id, id FROM photos WHERE {owned}")
    keys = [(row["owner_id"], row["id"]) for row in listed]
    assert len(keys) == len(set(keys)), "a photo is listed twice"
    assert set(keys) == expected
    physical: collections.Counter[tuple[int, int]] = collections.Counter()
    for shard in router.shard_map.shards():
        storage = await router.cluster.storage(shard)
        for row in await storage.fetch("SELECT owner_id, id FROM photos"):
            physical[(row["owner_id"], row["id"])] += 1
            assert router.shard_for(row["owner_id"]) == shard, "a row on a shard not owning it"
    assert set(physical) == expected and set(physical.values()) == {1}
    visits = await router.scatter("SELECT id, visits FROM users WHERE {owned}")
    assert {row["id"]: row["visits"] for row in visits} == ledger.visits


async def run_with_writers(
    routers: list[ShardRouter], ledger: Ledger
) -> tuple[asyncio.Event, list[asyncio.Task[None]]]:
    stop = asyncio.Event()
    lanes = 4
    tasks = [
        asyncio.create_task(writer(routers[lane % len(routers)], lane, lanes, ledger, stop))
        for lane in range(lanes)
    ]
    return stop, tasks


async def wait_for_writes(ledger: Ledger, count: int) -> None:
    target = ledger.writes + count
    deadline = time.monotonic() + 10
    while ledger.writes < target:
        assert time.monotonic() < deadline, "writers made no progress"
        await asyncio.sleep(0.01)


async def test_a_split_under_concurrent_writes_keeps_every_write_exactly_once(
    env: ShardEnv,
) -> None:
    await env.cluster().migrate()
    routers = [await env.router(), await env.router()]
    ledger = Ledger()
    await seed(routers[0], ledger)
    phases: list[str] = []
    seen_elsewhere: set[str] = set()

    def progress(report: Progress) -> None:
        if not phases or phases[-1] != report.phase:
            phases.append(report.phase)

    observer = env.cluster()  # another process's view of the metadata store
    resharding_done = asyncio.Event()

    async def observe() -> None:
        while not resharding_done.is_set():
            active = await observer.metadata.active_operation()
            if active is not None:
                seen_elsewhere.add(active.phase)
            await asyncio.sleep(0.001)

    watcher = asyncio.create_task(observe())
    stop, writers = await run_with_writers(routers, ledger)
    await wait_for_writes(ledger, 100)
    op = await Resharder(env.cluster(), progress).split("s1")
    resharding_done.set()
    await watcher
    await wait_for_writes(ledger, 100)  # writes after the cutover, through stale maps
    stop.set()
    await asyncio.gather(*writers)

    assert op.phase == "switched" and (op.source, op.target, op.key_range) == ("s1", "s3", "40-80")
    assert phases == ["copying", "catching_up", "verifying", "cutting_over", "switched"]
    assert seen_elsewhere and seen_elsewhere <= {
        "copying",
        "catching_up",
        "verifying",
        "cutting_over",
        "switched",
    }
    assert op.rows_copied > 0 and op.changes_applied > 0  # writes landed mid-copy too
    assert [r.shard_map.version for r in routers] == [2, 2]  # refused, then followed
    assert len(op.pauses_s) == 1 and op.pauses_s[0] < 1.0
    assert max(ledger.latencies) < 3.0
    status = await observer.status()
    assert status.operation is not None and status.operation.phase == "switched"
    assert status.shard_map is not None and status.shard_map.to_dict()["ranges"] == {
        "-40": "s1",
        "40-80": "s3",
        "80-": "s2",
    }
    sizes = {s.name: s.rows for s in status.shards}
    assert sizes["s3"]["photos"] > 0

    cleaned = await Resharder(env.cluster()).cleanup()
    assert cleaned.phase == "completed"
    await assert_everything_acknowledged_is_there_once(env, ledger)
    with pytest.raises(OperationError, match="no resharding operation is active"):
        await Resharder(env.cluster()).reverse()


async def test_move_reverse_and_forth_under_writes_then_cleanup(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    await env.cluster().migrate()
    routers = [await env.router()]
    ledger = Ledger()
    await seed(routers[0], ledger)
    stop, writers = await run_with_writers(routers, ledger)
    resharder = Resharder(env.cluster())
    await wait_for_writes(ledger, 50)
    moved = await resharder.move(KeyRange.parse("80-c0"), "s1")
    await wait_for_writes(ledger, 50)
    back = await resharder.reverse()
    assert back.phase == "reversed"
    assert (await env.cluster().current_map()).to_dict()["ranges"] == {"-80": "s1", "80-": "s2"}
    await wait_for_writes(ledger, 50)
    forth = await resharder.reverse()
    assert forth.phase == "switched" and moved.id == back.id == forth.id
    await wait_for_writes(ledger, 50)
    stop.set()
    await asyncio.gather(*writers)
    assert len(forth.pauses_s) == 3 and max(forth.pauses_s) < 1.0
    assert (await resharder.cleanup()).phase == "completed"
    await assert_everything_acknowledged_is_there_once(env, ledger)
    final = await env.cluster().current_map()
    assert final.to_dict()["ranges"] == {"-c0": "s1", "c0-": "s2"}


async def test_a_copy_that_differs_is_never_switched_to(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    await env.cluster().migrate()
    router = await env.router()
    ledger = Ledger()
    await seed(router, ledger)
    cluster = env.cluster()
    target = await cluster.storage("s2")
    honest_digest = target.digest

    async def corrupted_digest(tables, key_range):  # type: ignore[no-untyped-def]
        await target.delete_range(SCHEMA.table("photos"), key_range, 1)  # a row goes missing
        return await honest_digest(tables, key_range)

    target.digest = corrupted_digest  # type: ignore[method-assign]
    with pytest.raises(VerificationError, match="photos"):
        await Resharder(cluster).move("40-80", "s2")
    op = await cluster.metadata.active_operation()
    assert op is not None and op.phase == "failed" and "differs" in op.error
    assert (await cluster.current_map()).version == 1
    with pytest.raises(OperationError, match="another resharding operation is active"):
        await Resharder(cluster).move("-40", "s2")
    assert (await Resharder(env.cluster()).cleanup()).phase == "cancelled"
    s2_rows = await (await cluster.storage("s2")).fetch("SELECT owner_id FROM photos")
    assert all(router.shard_for(row["owner_id"]) == "s2" for row in s2_rows)
    await assert_everything_acknowledged_is_there_once(env, ledger)


async def test_a_cutover_over_its_pause_budget_is_rolled_back(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    await env.cluster().migrate()
    router = await env.router()
    ledger = Ledger()
    await seed(router, ledger)
    cluster = env.cluster()
    with pytest.raises(OperationError, match="could not cut"):
        await Resharder(cluster, max_pause_s=1e-9).move("40-80", "s2")
    shard_map = await cluster.current_map()
    assert shard_map.version == 4  # three rolled-back attempts, each releasing waiting routers
    assert shard_map.to_dict()["ranges"] == {"-80": "s1", "80-": "s2"}
    for name, owned in (("s1", ["-80"]), ("s2", ["80-"])):
        fence = await (await cluster.storage(name)).fence()
        assert [r.name for r in fence.ranges] == owned and fence.version == 4
    op = await cluster.metadata.active_operation()
    assert op is not None and op.phase == "failed"
    await router.update("users", {"id": 1}, {"bio": "still writable"})
    assert (await Resharder(cluster).cleanup()).phase == "cancelled"
    await assert_everything_acknowledged_is_there_once(env, ledger)


async def interrupted_cutover(env: ShardEnv, *, map_switched: bool) -> tuple[Operation, int]:
    """Leave a move of 40-80 from s1 to s2 as a process that died mid-cutover would."""
    cluster = env.cluster()
    op = await Resharder(cluster).move("40-80", "s2")
    if not map_switched:
        # roll the world back to "fenced on s1, granted on s2, map not yet published"
        previous = await cluster.current_map()
        await (await cluster.storage("s2")).set_fence([KeyRange.parse("80-")], previous.version)
        republished = previous.reassign(KeyRange.parse("40-80"), "s1")
        await cluster.metadata.publish(republished, "test: undo the switch")
        await (await cluster.storage("s1")).set_fence(
            [KeyRange.parse("-40")], republished.version + 1
        )
        await (await cluster.storage("s2")).set_fence(
            [KeyRange.parse("40-")], republished.version + 1
        )
    op.phase = "cutting_over"
    op.updated_at = time.time() - 60
    await cluster.metadata.save_operation(op)
    key = next(k for k in USERS if KeyRange.parse("40-80").contains(key_hash(k)))
    return op, key


async def test_reverse_resolves_a_cutover_interrupted_before_the_map_switched(
    sqlite_env: ShardEnv,
) -> None:
    env = sqlite_env
    await env.cluster().migrate()
    router = await env.router()
    ledger = Ledger()
    await seed(router, ledger)
    _, key = await interrupted_cutover(env, map_switched=False)
    router.stale_wait_s = 0.2
    with pytest.raises(RangeUnavailableError):
        await router.update("users", {"id": key}, {"bio": "x"})
    cluster = env.cluster()
    with pytest.raises(OperationError, match="run reverse first"):
        await Resharder(cluster).cleanup()
    restored = await Resharder(cluster).reverse()
    assert restored.phase == "reversed"
    await router.update("users", {"id": key}, {"visits": 5})
    ledger.visits[key] = 5
    assert router.shard_for(key) == "s1"
    assert (await Resharder(cluster).cleanup()).phase == "cancelled"
    await assert_everything_acknowledged_is_there_once(env, ledger)


async def test_reverse_resolves_a_cutover_interrupted_after_the_map_switched(
    sqlite_env: ShardEnv,
) -> None:
    env = sqlite_env
    await env.cluster().migrate()
    router = await env.router()
    ledger = Ledger()
    await seed(router, ledger)
    _, key = await interrupted_cutover(env, map_switched=True)
    await router.update("users", {"id": key}, {"visits": 7})  # served by s2 now
    ledger.visits[key] = 7
    assert router.shard_for(key) == "s2"
    reversed_op = await Resharder(env.cluster()).reverse()
    assert reversed_op.phase == "reversed"
    assert (await router.get("users", {"id": key}))["visits"] == 7
    assert router.shard_for(key) == "s1"
    assert (await Resharder(env.cluster()).cleanup()).phase == "cancelled"
    await assert_everything_acknowledged_is_there_once(env, ledger)


async def test_bad_resharding_requests_are_refused(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    await env.cluster().migrate()
    resharder = Resharder(env.cluster())
    with pytest.raises(OperationError, match="more than one shard"):
        await resharder.move("40-c0", "s2")
    with pytest.raises(OperationError, match="already on s1"):
        await resharder.move("40-80", "s1")
    with pytest.raises(OperationError, match="no shard named 's9'"):
        await resharder.move("40-80", "s9")
    with pytest.raises(OperationError, match="owns no range"):
        await resharder.split("s9")
    with pytest.raises(OperationError, match="exists"):
        await resharder.split("s1", new_shard="s2")
    with pytest.raises(OperationError, match="does not own"):
        await resharder.split("s1", at=0x90 << 56)
    with pytest.raises(OperationError, match="no resharding operation is active"):
        await resharder.cleanup()
    assert await env.cluster().metadata.active_operation() is None


async def test_a_hot_range_is_split_where_its_load_is_when_asked(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    await env.cluster().migrate()
    router = await env.router()
    ledger = Ledger()
    await seed(router, ledger)
    clock = [0.0]
    router.sampler = HotKeySampler(window_s=10, clock=lambda: clock[0])
    hot_users = [u for u in USERS if KeyRange.parse("-80").contains(key_hash(u))][:6]
    for _ in range(50):
        for user in hot_users:
            await router.get("users", {"id": user})
    await router.get("users", {"id": next(u for u in USERS if router.shard_for(u) == "s2")})
    clock[0] = 9.5  # the window still holds the first slice
    report = router.hot(top=10)
    assert {k.key for k in report.keys[:6]} == {str(u) for u in hot_users}
    assert [(r.key_range, r.ops_per_s) for r in report.ranges] == [
        ("-80", 300 / 9.5),
        ("80-", 1 / 9.5),
    ]
    resharder = Resharder(env.cluster())
    assert await resharder.split_hot(report) is None  # auto_split is off by default
    op = await resharder.split_hot(report, force=True)
    assert op is None  # 32 ops/s is far below the 2500 ops/s threshold
    resharder.cluster.config = resharder.cluster.config.model_copy(
        update={"hot": resharder.cluster.config.hot.model_copy(update={"threshold_ops_s": 20.0})}
    )
    op = await resharder.split_hot(report, force=True)
    assert op is not None and op.phase == "switched" and op.source == "s1"
    lower, upper = KeyRange.parse(op.key_range), sorted(key_hash(u) for u in hot_users)
    moved = sum(1 for h in upper if lower.contains(h))
    assert 0 < moved < len(hot_users)  # split between the hot keys, not at the middle
    await Resharder(env.cluster()).cleanup()
    await assert_everything_acknowledged_is_there_once(env, ledger)
