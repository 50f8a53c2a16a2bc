"""The auto-splitter (decisions, and the loop on a SQLite cluster) and hot single keys served
from the read cache."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given
from hypothesis import strategies as st
from shard_support import ENGINES, ShardEnv, shard_env

from millions.shards import ShardCluster, ShardRouter
from millions.shards.autosplit import (
    AUTOMATIC_NOTE,
    AutoSplitPolicy,
    AutoSplitter,
    autosplit_forever,
    decide_autosplit,
    started_automatically,
)
from millions.shards.config import HotKeysConfig, ShardsConfig, parse
from millions.shards.hotkeys import HotKeySampler, HotReport, KeyLoad, RangeLoad, keys_to_cache
from millions.shards.keyspace import KeyRange, key_hash
from millions.shards.resharding import Resharder
from millions.shards.workflow import Operation, Phase
from millions.topology.errors import ConfigError

pytestmark = pytest.mark.timeout(90)

POLICY = AutoSplitPolicy(
    enabled=True, threshold_ops_s=100.0, cooldown_s=30.0, cleanup_after_s=10.0, hot_keys_cached=True
)
HALVES = frozenset({"-80", "80-"})
PHASES: tuple[Phase, ...] = get_args(Phase)
USERS = range(1, 121)


def operation(phase: Phase, updated_at: float = 1000.0, *, automatic: bool = False) -> Operation:
    op = Operation(
        id="split-0001",
        kind="split",
        key_range="40-80",
        source="s1",
        target="s3",
        phase=phase,
        owner="host:1",
        started_at=updated_at - 5,
        updated_at=updated_at,
        created_target=True,
    )
    if automatic:
        op.note(updated_at, AUTOMATIC_NOTE)
    return op


def load(*ranges: tuple[str, float], keys: Sequence[KeyLoad] = ()) -> HotReport:
    return HotReport(10.0, tuple(keys), tuple(RangeLoad(name, ops) for name, ops in ranges))


def decide(
    report: HotReport,
    *,
    active: Operation | None = None,
    last_ended_at: float | None = None,
    now: float = 2000.0,
    policy: AutoSplitPolicy = POLICY,
    ranges: frozenset[str] = HALVES,
) -> Any:
    return decide_autosplit(
        policy,
        report,
        ranges,
        active=active,
        automatic=active is not None and started_automatically(active),
        last_ended_at=last_ended_at,
        now=now,
    )


# -- the decision ---------------------------------------------------------------------------


def test_a_range_over_the_threshold_splits_where_its_load_is() -> None:
    decision = decide(load(("-80", 150.0), ("80-", 10.0)))
    assert decision.action == "split"
    assert decision.split is not None and decision.split.key_range == "-80"
    assert decision.split.split_at == 0x40 << 56
    assert "over the 100 ops/s threshold" in decision.reason


def test_nothing_over_the_threshold_is_idle() -> None:
    decision = decide(load(("-80", 90.0), ("80-", 10.0)))
    assert decision.action == "idle" and decision.split is None
    assert "hottest range -80 at 90 ops/s" in decision.reason
    assert decide(load()).reason == "no load reported by any router"


def test_load_of_a_range_that_has_since_split_is_ignored() -> None:
    decision = decide(load(("-80", 500.0)), ranges=frozenset({"-40", "40-80", "80-"}))
    assert decision.action == "idle"


def test_a_key_too_hot_for_any_split_is_served_from_the_cache_instead() -> None:
    celebrity = KeyLoad("celebrity", 0x20 << 56, 140.0, 0.0)
    decision = decide(load(("-80", 150.0), keys=[celebrity]))
    assert decision.action == "idle" and decision.too_hot == (celebrity,)
    assert "'celebrity' alone takes 140 ops/s" in decision.reason
    assert "served from the read cache" in decision.reason
    uncached = AutoSplitPolicy(True, 100.0, 30.0, 10.0, hot_keys_cached=False)
    assert "not cached" in decide(load(("-80", 150.0), keys=[celebrity]), policy=uncached).reason
    # a hot key in one range does not keep another hot range from splitting
    decision = decide(load(("-80", 150.0), ("80-", 120.0), keys=[celebrity]))
    assert decision.action == "split" and decision.split is not None
    assert decision.split.key_range == "80-" and decision.too_hot == (celebrity,)


def test_the_cooldown_runs_from_the_end_of_the_last_operation() -> None:
    hot = load(("-80", 150.0))
    waiting = decide(hot, last_ended_at=1975.0, now=2000.0)
    assert waiting.action == "wait" and "cooling down 5s more" in waiting.reason
    assert waiting.split is not None and waiting.split.key_range == "-80"
    assert decide(hot, last_ended_at=1970.0, now=2000.0).action == "split"
    assert decide(load(("-80", 50.0)), last_ended_at=1999.0).action == "idle"


def test_an_automatic_split_is_cleaned_up_after_its_grace_period() -> None:
    hot = load(("-80", 150.0))
    switched = operation("switched", updated_at=1995.0, automatic=True)
    waiting = decide(hot, active=switched, now=2000.0)
    assert waiting.action == "wait" and "cleanup in 5s" in waiting.reason
    assert waiting.operation == "split-0001"
    cleanup = decide(hot, active=switched, now=2005.0)
    assert cleanup.action == "cleanup" and "deleting the copy on s1" in cleanup.reason
    failed = operation("failed", updated_at=1000.0, automatic=True)
    cancel = decide(hot, active=failed)
    assert cancel.action == "cleanup" and "deleting the partial copy on s3" in cancel.reason


def test_an_operators_operation_is_neither_split_around_nor_cleaned_up() -> None:
    for phase in ("switched", "reversed", "failed"):
        decision = decide(load(("-80", 900.0)), active=operation(phase, updated_at=0.0))
        assert decision.action == "wait" and "an operator's operation" in decision.reason
        assert "`millions shards cleanup` ends it" in decision.reason
    reversed_auto = operation("reversed", updated_at=0.0, automatic=True)
    assert decide(load(), active=reversed_auto).action == "wait"


def test_off_means_off() -> None:
    off = AutoSplitPolicy(False, 100.0, 0.0, 0.0, True)
    switched = operation("switched", 0.0, automatic=True)
    assert decide(load(("-80", 900.0)), policy=off).action == "off"
    assert decide(load(), active=switched, policy=off).action == "off"


def test_automatic_operations_are_known_by_their_note_or_their_id() -> None:
    assert started_automatically(operation("copying", automatic=True))
    assert not started_automatically(operation("copying"))
    assert started_automatically(operation("copying"), {"split-0001"})


@pytest.mark.parametrize(
    ("hot", "message"),
    [
        ({"cache_key_share": 0}, "shards.hot.cache_key_share: Input should be greater than 0"),
        ({"cache_key_share": 1.5}, "shards.hot.cache_key_share: Input should be less than"),
        ({"split_cooldown_s": -1}, "shards.hot.split_cooldown_s: Input should be greater"),
        ({"cleanup_after_s": -1}, "shards.hot.cleanup_after_s: Input should be greater"),
        ({"autosplit_interval_s": 0}, "shards.hot.autosplit_interval_s: Input should be"),
        ({"cache_hot_keys": "sometimes"}, "shards.hot.cache_hot_keys: Input should be"),
    ],
)
def test_bad_auto_split_settings_name_the_key(hot: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse({"hot": hot})
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_the_policy_comes_from_the_config() -> None:
    config = ShardsConfig.model_validate(
        {"hot": {"threshold_ops_s": 7, "split_cooldown_s": 3, "cleanup_after_s": 2}}
    )
    policy = AutoSplitPolicy.from_config(config)
    assert policy == AutoSplitPolicy(False, 7.0, 3.0, 2.0, True)
    assert AutoSplitPolicy.from_config(config, force=True).enabled
    no_cache = config.model_copy(
        update={"cache": config.cache.model_copy(update={"engine": "none"})}
    )
    assert not AutoSplitPolicy.from_config(no_cache).hot_keys_cached


range_names = st.sampled_from(["-40", "40-80", "-80", "80-", "80-c0", "c0-"])


@given(
    ranges=st.lists(
        st.tuples(range_names, st.floats(0, 1000)), max_size=4, unique_by=lambda r: r[0]
    ),
    keys=st.lists(
        st.builds(
            KeyLoad,
            st.text("abc", min_size=1, max_size=3),
            st.integers(0, 2**64 - 1),
            st.floats(0, 1000),
            st.floats(0, 50),
        ),
        max_size=5,
        unique_by=lambda k: k.key,
    ),
    phase=st.none() | st.sampled_from(PHASES),
    automatic=st.booleans(),
    op_age=st.floats(0, 100),
    last_ended_age=st.none() | st.floats(0, 100),
    current=st.frozensets(range_names),
)
def test_decisions_never_break_the_rules(
    ranges: list[tuple[str, float]],
    keys: list[KeyLoad],
    phase: Phase | None,
    automatic: bool,
    op_age: float,
    last_ended_age: float | None,
    current: frozenset[str],
) -> None:
    now = 10_000.0
    active = None if phase is None else operation(phase, now - op_age, automatic=automatic)
    decision = decide(
        load(*ranges, keys=keys),
        active=active,
        last_ended_at=None if last_ended_age is None else now - last_ended_age,
        now=now,
        ranges=current,
    )
    if decision.action == "split":
        assert active is None
        assert last_ended_age is None or last_ended_age >= POLICY.cooldown_s
        assert decision.split is not None and decision.split.key_range in current
        assert decision.split.ops_per_s > POLICY.threshold_ops_s
        assert decision.split.split_at is not None
        assert KeyRange.parse(decision.split.key_range).contains(decision.split.split_at)
    if decision.action == "cleanup":
        assert active is not None and automatic and active.phase in ("switched", "failed")
        assert op_age >= POLICY.cleanup_after_s
    if active is not None:
        assert decision.action in ("wait", "cleanup") and decision.operation == active.id


# -- the loop on a cluster ------------------------------------------------------------------


class Clock:
    """A monotonic clock for samplers, so load is exact instead of timing-dependent."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def hot_config(**hot: object) -> dict[str, object]:
    settings: dict[str, object] = {
        "threshold_ops_s": 20.0,
        "auto_split": True,
        "split_cooldown_s": 3600.0,
        "cleanup_after_s": 0.0,
        "report_interval_s": 5.0,
    }
    return {"hot": HotKeysConfig.model_validate(settings | hot)}


async def seed(router: ShardRouter) -> dict[int, str]:
    bios = {}
    for user in USERS:
        await router.insert("users", {"id": user, "username": f"u{user}", "bio": "v0"})
        bios[user] = "v0"
    return bios


async def make_load(router: ShardRouter, users: Sequence[int], reads_each: int) -> None:
    """`reads_each` reads of every user in `users`, counted over 9.5 s of the sampler's window
    (a fresh sampler on a fake clock), published to the metadata store."""
    clock = Clock()
    router.sampler = HotKeySampler(window_s=10, clock=clock)
    for _ in range(reads_each):
        for user in users:
            await router.get("users", {"id": user})
    clock.now = 9.5
    await router.publish_load()


async def wait_for(events: list[str], predicate: Callable[[str], bool], what: str) -> str:
    deadline = time.monotonic() + 30
    while True:
        found = next((e for e in events if predicate(e)), None)
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"no {what} in {events}"
        await asyncio.sleep(0.02)


async def assert_every_row_once_on_its_owner(env: ShardEnv, bios: dict[int, str]) -> None:
    router = await env.router()
    physical: collections.Counter[int] = collections.Counter()
    for shard in router.shard_map.shards():
        storage = await router.cluster.storage(shard)
        for row in await storage.fetch("SELECT id, bio FROM users"):
            physical[row["id"]] += 1
            assert router.shard_for(row["id"]) == shard, "a row on a shard not owning it"
            assert row["bio"] == bios[row["id"]], "a write was lost"
    assert set(physical) == set(bios) and set(physical.values()) == {1}


@pytest.mark.parametrize("engine", ENGINES)
async def test_the_loop_splits_a_hot_range_cleans_up_and_cools_down(
    engine: str, tmp_path: Path
) -> None:
    async with shard_env(engine, tmp_path, **hot_config()) as env:
        await env.cluster().migrate()
        router = await env.router()
        bios = await seed(router)
        writer = await env.router()
        writer.sampler = None  # its writes are real load on a real clock: keep them out
        lower = [u for u in USERS if KeyRange.parse("-80").contains(key_hash(u))][:6]
        await make_load(router, lower, reads_each=50)  # 300 reads in 9.5 s: 31.6 ops/s

        stop = asyncio.Event()

        async def write() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                user = USERS[n % len(USERS)]
                await writer.update("users", {"id": user}, {"bio": f"v{n}"})
                bios[user] = f"v{n}"
                await asyncio.sleep(0)

        events: list[str] = []
        cluster = env.cluster()
        writing = asyncio.create_task(write())
        loop = asyncio.create_task(
            autosplit_forever(cluster, interval_s=0.05, stop=stop, on_event=events.append)
        )
        try:
            await wait_for(events, lambda e: e.startswith("cleanup done"), "cleanup")
            stop.set()
            await asyncio.wait_for(asyncio.gather(loop, writing), 30)
        finally:
            stop.set()
            await asyncio.gather(loop, writing, return_exceptions=True)
        actions = [e.split(":")[0] for e in events]
        assert actions[:3] == ["split", "split done", "cleanup"], events
        assert "cleanup done" in actions and "split" not in actions[3:]
        assert "-80: 32 ops/s is over the 20 ops/s threshold" in events[0]

        shard_map = await cluster.current_map()
        assert len(shard_map.shards()) == 3
        moved = [r.name for r, shard in shard_map.entries if shard == "s3"]
        assert len(moved) == 1 and KeyRange.parse("-80").contains(KeyRange.parse(moved[0]).start)
        assert 0 < sum(1 for u in lower if KeyRange.parse(moved[0]).contains(key_hash(u))) < 6
        assert await cluster.metadata.active_operation() is None
        (done,) = await cluster.metadata.operations(limit=1)
        assert done.phase == "completed" and started_automatically(done)
        await assert_every_row_once_on_its_owner(env, bios)

        # The same hot keys again, now counted per range of the current map: over the
        # threshold, but the cooldown holds the next split back.
        old_version = router.shard_map.version
        await router.publish_load()
        assert router.shard_map.version > old_version
        await make_load(router, lower, reads_each=100)  # 3 hot keys on each side now
        outcome = await AutoSplitter(cluster, on_event=events.append).step()
        assert outcome.decision.action == "wait", events[-1]
        assert "cooling down" in outcome.decision.reason
        assert await cluster.metadata.active_operation() is None


async def test_no_split_while_an_operators_operation_is_active(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    env.config = env.config.model_copy(update=hot_config(split_cooldown_s=0.0))
    await env.cluster().migrate()
    router = await env.router()
    bios = await seed(router)
    manual = await Resharder(env.cluster()).move("c0-", "s1")  # left switched, not cleaned up
    await make_load(router, [u for u in USERS if KeyRange.parse("-80").contains(key_hash(u))], 5)
    events: list[str] = []
    splitter = AutoSplitter(env.cluster(), on_event=events.append)
    for _ in range(3):
        outcome = await splitter.step()
        assert outcome.decision.action == "wait" and outcome.operation is None
    assert "an operator's operation: no split while an operation is active" in events[-1]
    still = await env.cluster().metadata.active_operation()
    assert still is not None and still.id == manual.id and still.phase == "switched"
    await Resharder(env.cluster()).cleanup()
    split = await splitter.step()
    assert split.decision.action == "split" and split.operation is not None
    assert split.operation.phase == "switched"
    cleaned = await splitter.step()  # no cooldown after cleanup_after_s = 0
    assert cleaned.decision.action == "cleanup" and cleaned.operation is not None
    assert cleaned.operation.phase == "completed"
    await assert_every_row_once_on_its_owner(env, bios)


async def test_a_restarted_auto_splitter_finishes_the_split_it_started(
    sqlite_env: ShardEnv,
) -> None:
    env = sqlite_env
    env.config = env.config.model_copy(update=hot_config(cleanup_after_s=3600.0))
    await env.cluster().migrate()
    router = await env.router()
    bios = await seed(router)
    await make_load(router, [u for u in USERS if KeyRange.parse("80-").contains(key_hash(u))], 5)
    first = await AutoSplitter(env.cluster()).step()
    assert first.decision.action == "split" and first.operation is not None
    waiting = await AutoSplitter(env.cluster()).step()
    assert waiting.decision.action == "wait" and "cleanup in" in waiting.decision.reason
    later = AutoSplitter(env.cluster(), clock=lambda: time.time() + 3600)
    done = await later.step()
    assert done.decision.action == "cleanup" and done.operation is not None
    assert done.operation.phase == "completed"
    await assert_every_row_once_on_its_owner(env, bios)


async def test_no_split_without_the_tables_to_copy(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    env.config = env.config.model_copy(update=hot_config())
    await env.cluster().migrate()
    router = await env.router()
    await seed(router)
    await make_load(router, [u for u in USERS if KeyRange.parse("-80").contains(key_hash(u))], 5)
    blind = ShardCluster(env.config, env.run_dir)  # shards.tables is not set in this config
    try:
        outcome = await AutoSplitter(blind).step()
    finally:
        await blind.close()
    assert outcome.decision.action == "split" and "split refused" in outcome.error
    assert await env.cluster().metadata.active_operation() is None


async def test_the_loop_does_not_run_when_auto_split_is_off(sqlite_env: ShardEnv) -> None:
    await sqlite_env.cluster().migrate()
    events: list[str] = []
    await asyncio.wait_for(
        autosplit_forever(sqlite_env.cluster(), interval_s=0.01, on_event=events.append), 5
    )
    assert events == ["off: hot.auto_split is off; the auto-splitter does not run"]


async def test_the_loop_reports_errors_and_keeps_going(tmp_path: Path) -> None:
    async with shard_env("sqlite", tmp_path, **hot_config()) as env:
        events: list[str] = []
        stop = asyncio.Event()
        loop = asyncio.create_task(
            autosplit_forever(env.cluster(), interval_s=0.01, stop=stop, on_event=events.append)
        )
        try:
            await wait_for(events, lambda e: e.startswith("error") and "migrate" in e, "error")
            await env.cluster().migrate()
            await wait_for(events, lambda e: e.startswith("idle"), "idle round")
        finally:
            stop.set()
            await asyncio.wait_for(loop, 10)


# -- hot single keys served from the read cache ---------------------------------------------


class CountingReads:
    """Wraps a storage's `read_owned` (how single-key reads reach a shard) to count them."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.original(*args, **kwargs)


async def test_a_key_too_hot_for_any_split_is_read_from_the_cache(
    sqlite_env: ShardEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = sqlite_env
    env.config = env.config.model_copy(update=hot_config(auto_split=False))
    await env.cluster().migrate()
    router = await env.router()
    await seed(router)
    await make_load(router, [7], reads_each=300)  # 31.6 ops/s on one key, over 20
    assert router.hot_keys == frozenset({"7"})
    counter = CountingReads((await router.cluster.storage(router.shard_for(7))).read_owned)
    monkeypatch.setattr(await router.cluster.storage(router.shard_for(7)), "read_owned", counter)
    other = next(u for u in USERS if router.shard_for(u) == router.shard_for(7) and u != 7)

    async def bio() -> object:
        row = await router.get("users", {"id": 7})
        return None if row is None else row["bio"]

    for _ in range(5):
        assert await bio() == "v0"
    assert counter.calls == 1  # filled once, then served from the cache
    await router.get("users", {"id": other})
    await router.get("users", {"id": other})
    assert counter.calls == 3  # a key that is not hot reads the shard every time
    await router.get("users", {"id": 7}, cached=False)
    assert counter.calls == 4  # the caller can still insist on the shard

    # read-after-write: the write invalidates, the next read refills with the new row
    await router.update("users", {"id": 7}, {"bio": "after"})
    assert await bio() == "after"
    assert await bio() == "after"
    assert counter.calls == 5
    await router.delete("users", {"id": 7})
    assert await router.get("users", {"id": 7}) is None

    # a router that saw none of the load learns the hot key from everyone's reports
    quiet = await env.router()
    assert quiet.hot_keys == frozenset()
    await quiet.publish_load()
    assert quiet.hot_keys == frozenset({"7"})


async def test_hot_keys_are_not_cached_when_switched_off(sqlite_env: ShardEnv) -> None:
    env = sqlite_env
    env.config = env.config.model_copy(update=hot_config(cache_hot_keys=False))
    await env.cluster().migrate()
    router = await env.router()
    await seed(router)
    await make_load(router, [7], reads_each=300)
    assert router.cache_hot_keys_over_ops_s is None and router.hot_keys == frozenset()


def test_keys_to_cache_takes_keys_surely_over_the_limit() -> None:
    report = load(
        keys=[KeyLoad("a", 1, 30.0, 0.0), KeyLoad("b", 2, 30.0, 15.0), KeyLoad("c", 3, 10.0, 0)]
    )
    assert keys_to_cache(report, 20.0) == frozenset({"a"})
    assert keys_to_cache(report, 5.0) == frozenset({"a", "b", "c"})
