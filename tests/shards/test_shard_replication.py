"""Cross-DC replication of the shards: replicas converge under writes, lag is measured,
reads see the reader's own writes, a promotion fences the old primary and counts exactly
the writes it loses, a replicator killed mid-apply resumes without duplicates or gaps, and
a rejoin plus switchover loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from shard_support import ENGINES, SCHEMA, ShardEnv, shard_env

from millions.shards import KeyRange, ShardRouter, StaleMapError, key_hash
from millions.shards.keyspace import stored_hash
from millions.shards.replication import (
    Placement,
    PlacementError,
    ReplicaReader,
    ReplicatedCluster,
    ReplicationCollector,
    Replicator,
    WriteToken,
    choose_source,
    hand_back,
    plan_placement,
    plan_promotions,
    promote,
    rejoin,
    replica_location,
    replication_lag,
)
from millions.shards.replication.placement import lag_of
from millions.shards.replication.replicator import sync_action
from millions.shards.schema import HASH_COLUMN
from millions.shards.storage.base import (
    ReplicaStep,
    ReplicationConflictError,
    RowWrite,
    ShardLocation,
    ShardStorage,
)

pytestmark = pytest.mark.timeout(90)

DCS = ("us-east", "eu-west")
TESTS_DIR = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------


@dataclass
class Repl:
    """A migrated, placed cluster; `cluster()`/`router()` open more processes' views."""

    env: ShardEnv

    def cluster(self) -> ReplicatedCluster:
        cluster = ReplicatedCluster(self.env.config, self.env.run_dir, SCHEMA, dcs=DCS)
        self.env.opened.append(cluster)
        return cluster

    async def router(self) -> ShardRouter:
        router = ShardRouter(self.cluster())
        await router.refresh()
        return router

    def replicator(self, dc: str, **options: Any) -> Replicator:
        return Replicator(self.cluster(), dc, **options)


@contextlib.asynccontextmanager
async def replicated(engine: str, tmp_path: Path, **overrides: object) -> AsyncIterator[Repl]:
    async with shard_env(engine, tmp_path, **overrides) as env:
        repl = Repl(env)
        cluster = repl.cluster()
        await cluster.migrate()
        await cluster.ensure_placement()
        yield repl


@contextlib.asynccontextmanager
async def running(*replicators: Replicator) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop, idle_poll_s=0.01)) for r in replicators]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def caught_up(cluster: ReplicatedCluster, dc: str) -> bool:
    lags = await replication_lag(cluster, dc)
    return bool(lags) and all(lag.changes_behind == 0 and lag.state == "replica" for lag in lags)


async def sync_now(replicator: Replicator) -> None:
    """Run passes until every copy in the replicator's DC is a caught-up replica."""

    async def done() -> bool:
        await replicator.run_once()
        return await caught_up(replicator.cluster, replicator.dc)

    await until(done, 30, f"{replicator.dc} to catch up")


async def assert_copies_equal(cluster: ReplicatedCluster, only: str = "") -> None:
    """Every copy of every shard (or of shard `only`) holds the same rows."""
    placement = await cluster.refresh_placement()
    assert placement is not None
    for name, placed in placement.shards.items():
        if only and name != only:
            continue
        digests = []
        for copy in placed.copies:
            storage = await cluster.copy_storage(name, copy.dc)
            digests.append((await storage.digest(SCHEMA.tables, KeyRange.full()))[1])
        assert all(d == digests[0] for d in digests), f"copies of {name} differ: {digests}"
        assert sum(d.rows for d in digests[0].values()) > 0


def photo(owner: int, photo_id: int) -> dict[str, object]:
    return {
        "owner_id": owner,
        "id": photo_id,
        "title": f"photo {photo_id} of {owner}",
        "size_bytes": photo_id,
        "thumb": bytes([owner % 256]),
        "created_at": float(photo_id),
    }


def owners_on(router: ShardRouter, shard: str, count: int) -> list[int]:
    return list(
        itertools.islice((o for o in itertools.count(1) if router.shard_for(o) == shard), count)
    )


@dataclass
class Ledger:
    acknowledged: set[tuple[int, int]] = field(default_factory=set)


async def insert_writer(
    router: ShardRouter, owners: list[int], lane: int, ledger: Ledger, stop: asyncio.Event
) -> None:
    """Inserts photos with unique ids until `stop`, recording each acknowledged one."""
    for step in itertools.count():
        if stop.is_set():
            return
        owner = owners[step % len(owners)]
        photo_id = lane * 1_000_000 + step
        await router.insert("photos", photo(owner, photo_id))
        ledger.acknowledged.add((owner, photo_id))
        if step % 20 == 0:
            await asyncio.sleep(0)


async def all_photos(router: ShardRouter) -> list[tuple[int, int]]:
    rows = await router.scatter("SELECT owner_id, id FROM photos WHERE {owned}")
    return [(int(r["owner_id"]), int(r["id"])) for r in rows]


# -- the pure rules --------------------------------------------------------------------------


def test_placement_spreads_primaries_and_puts_copies_beside_the_registered_one() -> None:
    registered = {
        "s1": ShardLocation("s1", "sqlite", path="/run/shards/s1.sqlite3"),
        "s2": ShardLocation("s2", "sqlite", path="/run/shards/s2.sqlite3"),
    }
    placement = plan_placement(None, registered, DCS)
    assert placement is not None and placement.version == 1
    s1, s2 = placement.shards["s1"], placement.shards["s2"]
    assert (s1.primary_dc, s2.primary_dc) == ("us-east", "eu-west")
    assert s1.primary.location == registered["s1"]
    assert s1.copy_in("eu-west").location.path == "/run/shards/eu-west/s1.sqlite3"
    assert s1.copy_in("eu-west").state == "syncing"
    assert plan_placement(placement, registered, DCS) is None
    grown = plan_placement(
        placement, {**registered, "s3": ShardLocation("s3", "sqlite", path="/x/s3.sqlite3")}, DCS
    )
    assert grown is not None and grown.version == 2 and grown.shards["s1"] == s1
    assert Placement.from_record(grown.version, grown.to_dict()) == grown
    with pytest.raises(PlacementError):
        plan_placement(None, registered, ["us-east"])
    pg = ShardLocation("s1", "postgres", url="postgresql://h/db", schema="millions_shard_s1")
    assert replica_location(pg, "eu-west").schema == "millions_shard_s1__eu_west"


def test_promotion_needs_a_caught_up_replica() -> None:
    registered = {
        name: ShardLocation(name, "sqlite", path=f"/r/{name}.sqlite3") for name in ("s1", "s3")
    }
    placement = plan_placement(None, registered, DCS)
    assert placement is not None
    ready = placement.next({"s1": placement.shards["s1"].with_state("eu-west", "replica")})
    promotions, stranded = plan_promotions(ready, "us-east")
    assert [(p.shard, p.to_dc) for p in promotions] == [("s1", "eu-west")]
    assert stranded == []
    assert plan_promotions(placement, "us-east")[1] == ["s1"]
    assert plan_promotions(ready, "eu-west") == ([], ["s3"])
    with pytest.raises(PlacementError):
        plan_promotions(ready, "mars")
    three = plan_placement(None, registered, ("a", "b", "c"))
    assert three is not None
    s1 = three.shards["s1"].with_state("b", "replica").with_state("c", "replica")
    moved = s1.with_primary("b", 7, "failed")
    assert [(c.dc, c.state) for c in moved.copies] == [
        ("a", "failed"),
        ("b", "primary"),
        ("c", "syncing"),
    ]
    assert moved.origin == "s1@b#7" != s1.origin


def test_reads_use_the_replica_only_when_it_has_the_readers_writes() -> None:
    registered = {"s1": ShardLocation("s1", "sqlite", path="/r/s1.sqlite3")}
    first = plan_placement(None, registered, DCS)
    assert first is not None
    placed = first.shards["s1"].with_state("eu-west", "replica")
    token = WriteToken()
    assert choose_source(placed, "eu-west", None, 3, 10) == "replica"
    assert choose_source(placed, "eu-west", token, 3, 10) == "replica"
    assert choose_source(placed, "us-east", token, 3, 10) == "primary"
    assert choose_source(placed, "eu-west", token, 3, None) == "primary"
    token.note("s1", placed.origin, 12, 3)
    assert choose_source(placed, "eu-west", token, 3, 11) == "primary"
    assert choose_source(placed, "eu-west", token, 3, 12) == "replica"
    syncing = placed.with_state("eu-west", "syncing")
    assert choose_source(syncing, "eu-west", None, 3, 12) == "primary"
    other = WriteToken()
    other.note("s2", "s2@eu-west#0", 5, 3)
    assert choose_source(placed, "eu-west", other, 3, 0) == "replica"
    assert choose_source(placed, "eu-west", other, 4, 0) == "check_fresh"
    moved = WriteToken()
    moved.note("s1", "s1@eu-west#7", 5, 3)
    assert choose_source(placed, "eu-west", moved, 3, 99) == "check_fresh"
    assert WriteToken.from_text(token.to_text()) == token


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)


@given(
    st.text(max_size=80)
    | _JSON.map(json.dumps)
    | st.fixed_dictionaries({"v": _JSON, "p": _JSON}).map(json.dumps)
    | st.dictionaries(st.text(max_size=3), st.lists(_JSON, max_size=3)).map(
        lambda p: json.dumps({"v": 1, "p": p})
    )
)
@example('{"v": Infinity, "p": {}}')
@example('{"v": 1, "p": []}')
@example('{"v": 1, "p": {"s1": ["o", NaN]}}')
def test_a_write_token_parses_or_is_refused_with_a_value_error(text: str) -> None:
    try:
        token = WriteToken.from_text(text)
    except ValueError:
        return
    assert WriteToken.from_text(token.to_text()) == token


def test_a_copy_is_taken_over_only_once_its_copier_stopped_moving() -> None:
    assert sync_action(None, 100.0) == "resync"
    assert sync_action((0, 1.0), 100.0) == "catch_up"
    assert sync_action((42, 1.0), 100.0) == "catch_up"
    assert sync_action((-7, 99.0), 100.0, claim_stale_s=5) == "wait"
    assert sync_action((-7, 95.0), 100.0, claim_stale_s=5) == "resync"


def test_lag_counts_changes_and_the_age_of_the_oldest() -> None:
    assert lag_of(10, 10, None, 100.0) == (0, 0.0)
    assert lag_of(10, 4, 90.0, 100.0) == (6, 10.0)
    assert lag_of(10, None, 95.0, 100.0) == (10, 5.0)
    assert lag_of(10, -77, 95.0, 100.0) == (10, 5.0)


# -- the metadata record ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_placement_versions_are_published_once(engine: str, tmp_path: Path) -> None:
    async with replicated(engine, tmp_path) as repl:
        one, two = repl.cluster(), repl.cluster()
        placement = await one.refresh_placement()
        assert placement is not None and placement.version == 1
        assert await two.ensure_placement() == placement
        changed = placement.next({})
        await one.publish_placement(changed, "test")
        from millions.shards import MapConflictError

        with pytest.raises(MapConflictError):
            await two.publish_placement(changed, "same version again")
        assert await two.refresh_placement() == changed


# -- replication against real engines ----------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
async def test_replicas_converge_under_concurrent_writes(engine: str, tmp_path: Path) -> None:
    async with replicated(engine, tmp_path) as repl:
        router = await repl.router()
        east, west = repl.replicator("us-east"), repl.replicator("eu-west")
        ledger, stop = Ledger(), asyncio.Event()
        owners = list(range(1, 60))
        async with running(east, west):
            writers = [
                asyncio.create_task(insert_writer(router, owners[lane::3], lane, ledger, stop))
                for lane in range(3)
            ]
            await until(lambda: asyncio.sleep(0, len(ledger.acknowledged) >= 300), 30, "300 writes")
            for user in owners[:20]:
                await router.upsert("users", {"id": user, "username": f"u{user}", "visits": 1})
                await router.update("users", {"id": user}, {"visits": 2})
            await router.delete("photos", {"owner_id": owners[0], "id": 0})
            stop.set()
            await asyncio.gather(*writers)
            await until(lambda: caught_up(east.cluster, "eu-west"), 30, "eu-west")
            await until(lambda: caught_up(west.cluster, "us-east"), 30, "us-east")
        await assert_copies_equal(repl.cluster())
        assert set(await all_photos(router)) == ledger.acknowledged - {(owners[0], 0)}


@pytest.mark.parametrize("engine", ENGINES)
async def test_lag_is_measured_and_exported(engine: str, tmp_path: Path) -> None:
    async with replicated(engine, tmp_path, batch_rows=5) as repl:
        router = await repl.router()
        west = repl.replicator("eu-west", pages_per_pass=1)
        await sync_now(west)
        owners = owners_on(router, "s1", 5)
        for n in range(50):
            await router.insert("photos", photo(owners[n % 5], n))
        lags = {lag.shard: lag for lag in await replication_lag(repl.cluster(), "eu-west")}
        assert lags["s1"].changes_behind == 50
        assert lags["s1"].seconds_behind > 0
        registry = CollectorRegistry()
        registry.register(ReplicationCollector(west))
        await west.run_once()
        text = generate_latest(registry).decode()
        assert 'millions_replication_lag_changes{dc="eu-west",shard="s1"} 45.0' in text
        assert 'millions_replication_lag_seconds{dc="eu-west",shard="s1"}' in text
        await sync_now(west)
        text = generate_latest(registry).decode()
        assert 'millions_replication_lag_changes{dc="eu-west",shard="s1"} 0.0' in text
        assert 'millions_replication_lag_seconds{dc="eu-west",shard="s1"} 0.0' in text


@pytest.mark.parametrize("engine", ENGINES)
async def test_reads_see_the_readers_own_writes(engine: str, tmp_path: Path) -> None:
    async with replicated(engine, tmp_path) as repl:
        router = await repl.router()
        west = repl.replicator("eu-west")
        user = owners_on(router, "s1", 1)[0]
        await router.insert("users", {"id": user, "username": "before"})
        await sync_now(west)
        reader = ReplicaReader(router, "eu-west", placement_refresh_s=0)
        token = WriteToken()
        await reader.update(token, "users", {"id": user}, {"username": "after"})
        # The replicator is stopped: the replica still has the old name.
        seen = await reader.get("users", {"id": user}, token=token)
        assert seen is not None and seen["username"] == "after"
        assert HASH_COLUMN not in seen
        assert reader.primary_reads == 1
        stranger = await reader.get("users", {"id": user})
        assert stranger is not None and stranger["username"] == "before"
        assert reader.local_reads == 1
        await sync_now(west)
        seen = await reader.get("users", {"id": user}, token=WriteToken.from_text(token.to_text()))
        assert seen is not None and seen["username"] == "after"
        assert reader.local_reads == 2


@pytest.mark.parametrize("engine", ENGINES)
async def test_promotion_fences_the_old_primary_and_counts_lost_writes(
    engine: str, tmp_path: Path
) -> None:
    async with replicated(engine, tmp_path) as repl:
        router = await repl.router()
        stale_router = await repl.router()
        stale_reader = await repl.router()
        east, west = repl.replicator("us-east"), repl.replicator("eu-west")
        owners = owners_on(router, "s1", 4)
        for n in range(10):
            await router.insert("photos", photo(owners[n % 4], n))
        first = {"owner_id": owners[0], "id": 0}
        assert await stale_reader.get("photos", first) is not None  # knows the old primary
        await sync_now(west)
        await sync_now(east)
        unreplicated = 37
        for n in range(100, 100 + unreplicated):
            await router.insert("photos", photo(owners[n % 4], n))
        operator = repl.cluster()
        old_primary = await operator.copy_storage("s1", "us-east")
        old_seq = await old_primary.last_seq()

        report = await promote(operator, "us-east")

        assert [(loss.shard, loss.count) for loss in report.losses] == [("s1", unreplicated)]
        assert report.lost_writes == unreplicated and report.stranded == ()
        placement = await operator.refresh_placement()
        assert placement is not None
        assert placement.shards["s1"].primary_dc == "eu-west"
        assert placement.shards["s2"].copy_in("us-east").state == "failed"
        assert placement.lost_total() == (unreplicated, 0)
        registry = CollectorRegistry()
        registry.register(ReplicationCollector(west))
        await west.cluster.refresh_placement()
        text = generate_latest(registry).decode()
        lost_metric = 'millions_replication_lost_writes{failed_dc="us-east",shard="s1"}'
        assert f"{lost_metric} {float(unreplicated)}" in text
        table = SCHEMA.table("photos")
        write = RowWrite(
            "upsert", table, key_hash(owners[0]), values={**photo(owners[0], 999), HASH_COLUMN: 0}
        )
        with pytest.raises(StaleMapError):
            await old_primary.write([write])
        # A router that has not heard of the promotion is refused by the old primary,
        # reloads the map and placement, and writes to the new primary.
        await stale_router.insert("photos", photo(owners[0], 5000))
        await router.insert("photos", photo(owners[1], 5001))
        # A reader whose fast path still names the old primary is refused there too and
        # reads the new one from then on.
        assert await stale_reader.get("photos", {"owner_id": owners[0], "id": 5000}) is not None
        assert await old_primary.last_seq() == old_seq
        new_primary = await operator.copy_storage("s1", "eu-west")
        ready = stale_reader.cluster.ready_storage("s1")
        assert ready is not None and ready.location == new_primary.location
        rows = await new_primary.fetch("SELECT id FROM photos WHERE id >= 5000", fenced=False)
        assert sorted(r["id"] for r in rows) == [5000, 5001]
        again = await promote(operator, "us-east")
        assert again.losses == () and (await operator.refresh_placement()) is not None


async def test_an_unreadable_old_primary_makes_the_loss_unknown(tmp_path: Path) -> None:
    async with replicated("sqlite", tmp_path) as repl:
        router = await repl.router()
        west = repl.replicator("eu-west")
        await router.insert("users", {"id": owners_on(router, "s1", 1)[0], "username": "x"})
        await sync_now(west)
        operator = repl.cluster()
        placement = await operator.refresh_placement()
        assert placement is not None
        old_path = Path(placement.shards["s1"].primary.location.path)
        for suffix in ("", "-wal", "-shm"):
            old_path.with_name(old_path.name + suffix).unlink(missing_ok=True)
        report = await promote(operator, "us-east")
        assert [(loss.shard, loss.count) for loss in report.losses] == [("s1", None)]
        assert report.unknown_losses == ("s1",) and report.unfenced == ("s1",)
        assert report.lost_writes == 0
        assert (await operator.refresh_placement()).lost_total() == (0, 1)  # type: ignore[union-attr]


@pytest.mark.parametrize("engine", ENGINES)
async def test_a_half_done_copy_is_redone_and_two_appliers_never_interleave(
    engine: str, tmp_path: Path
) -> None:
    async with replicated(engine, tmp_path, batch_rows=7) as repl:
        router = await repl.router()
        owners = owners_on(router, "s1", 6)
        for n in range(60):
            await router.insert("photos", photo(owners[n % 6], n))
        operator = repl.cluster()
        placement = await operator.refresh_placement()
        assert placement is not None
        origin = placement.shards["s1"].origin
        replica = await operator.copy_storage("s1", "eu-west")
        await replica.migrate(SCHEMA)
        # A copier died mid-copy: its claim is recorded and the copy holds a row the
        # primary never had.
        junk = photo(owners[0], 999_999)
        step = ReplicaStep(origin, None, -12345)
        write = RowWrite(
            "upsert",
            SCHEMA.table("photos"),
            key_hash(owners[0]),
            values={**junk, HASH_COLUMN: stored_hash(key_hash(owners[0]))},
        )
        await replica.write([write], replica=step)
        with pytest.raises(ReplicationConflictError):
            await replica.write([], replica=ReplicaStep(origin, None, 1))
        ledger, stop = Ledger(), asyncio.Event()
        appliers = [repl.replicator("eu-west", claim_stale_s=0.5) for _ in range(2)]
        async with running(*appliers):
            writer = asyncio.create_task(insert_writer(router, owners, 1, ledger, stop))
            await until(lambda: asyncio.sleep(0, len(ledger.acknowledged) >= 150), 30, "writes")
            stop.set()
            await writer
            await until(lambda: caught_up(operator, "eu-west"), 30, "eu-west")
        await assert_copies_equal(operator, only="s1")
        primary = await operator.copy_storage("s1", "us-east")
        assert await replica.replica_position(origin) == await primary.last_seq()


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def read_metrics(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def change_images(changes: list[Any]) -> list[tuple[str, object, object]]:
    return [(c.table, c.pk, c.row) for c in changes]


async def all_changes(storage: ShardStorage, after: int) -> list[Any]:
    found = []
    while True:
        page = await storage.changes_since(after, limit=5000)
        found.extend(page)
        if len(page) < 5000:
            return found
        after = page[-1].seq


async def test_a_replicator_killed_mid_apply_resumes_without_duplicates_or_gaps(
    tmp_path: Path,
) -> None:
    async with replicated("sqlite", tmp_path, batch_rows=4) as repl:
        router = await repl.router()
        west = repl.replicator("eu-west")
        owners = owners_on(router, "s1", 20)
        await router.insert("users", {"id": owners[0], "username": "seed"})
        await sync_now(west)
        observer = repl.cluster()
        placement = await observer.refresh_placement()
        assert placement is not None
        origin = placement.shards["s1"].origin
        primary = await observer.copy_storage("s1", "us-east")
        replica = await observer.copy_storage("s1", "eu-west")
        start = await replica.replica_position(origin)
        replica_log_start = await replica.last_seq()
        assert start is not None
        for n in range(3000):
            if n % 3 == 2:
                pk = {"owner_id": owners[(n - 2) % 20], "id": n - 2}
                assert await router.update("photos", pk, {"title": f"t{n}"}) is not None
            else:
                await router.insert("photos", photo(owners[n % 20], n))
        end = await primary.last_seq()
        config_file = tmp_path / "millions.toml"
        config_file.write_text(
            f'run_dir = "{repl.env.run_dir}"\n[shards]\nbatch_rows = 4\n'
            'tables = "shard_support:SCHEMA"\n[shards.cache]\nengine = "memory"\n'
        )
        metrics_host = "127.0.140.1"
        metrics_port = free_port(metrics_host)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS_DIR / "shards"), str(TESTS_DIR)]),
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "millions.shards.replication",
            "--config",
            str(config_file),
            "--dc",
            "eu-west",
            "--dcs",
            "us-east,eu-west",
            "--metrics",
            f"{metrics_host}:{metrics_port}",
            env=env,
        )
        try:
            lag_line = 'millions_replication_lag_changes{dc="eu-west",shard="s1"}'

            async def applying_and_exporting_lag() -> bool:
                assert process.returncode is None, "the replicator process exited"
                try:
                    metrics = await asyncio.to_thread(
                        read_metrics, f"http://{metrics_host}:{metrics_port}/metrics"
                    )
                except OSError:
                    return False  # not listening yet
                position = await replica.replica_position(origin)
                return lag_line in metrics and position is not None and position > start + 20

            await until(applying_and_exporting_lag, 30, "the replicator process to apply")
            process.send_signal(signal.SIGKILL)
            await asyncio.wait_for(process.wait(), 10)
        finally:
            if process.returncode is None:
                process.kill()
                await asyncio.wait_for(process.wait(), 10)
        killed_at = await replica.replica_position(origin)
        assert killed_at is not None and start + 20 < killed_at < end
        await sync_now(west)
        assert await replica.replica_position(origin) == end
        applied = await all_changes(replica, replica_log_start)
        source = await all_changes(primary, start)
        assert len(applied) == len(source) == end - start
        assert change_images(applied) == change_images(source)
        await assert_copies_equal(observer, only="s1")


@pytest.mark.parametrize("engine", ENGINES)
async def test_rejoin_and_switchover_lose_nothing_but_the_counted_writes(
    engine: str, tmp_path: Path
) -> None:
    async with replicated(engine, tmp_path) as repl:
        router = await repl.router()
        east, west = repl.replicator("us-east"), repl.replicator("eu-west")
        await sync_now(west)
        await sync_now(east)
        ledger, stop = Ledger(), asyncio.Event()
        owners = list(range(1, 40))
        writers = [
            asyncio.create_task(insert_writer(router, owners[lane::2], lane, ledger, stop))
            for lane in range(2)
        ]
        operator = repl.cluster()
        try:
            # us-east fails: its replicator is gone, writes keep coming (to eu-west soon).
            async with running(west):
                await until(lambda: asyncio.sleep(0, len(ledger.acknowledged) >= 200), 30, "writes")
            report = await promote(operator, "us-east")
            count = len(ledger.acknowledged)
            await until(
                lambda: asyncio.sleep(0, len(ledger.acknowledged) >= count + 200), 30, "writes"
            )
            # us-east returns: its copies resync from the primaries in eu-west, then the
            # shards whose home is us-east switch back while writes go on.
            east = repl.replicator("us-east")
            async with running(east, repl.replicator("eu-west")):
                rejoined = await rejoin(operator, "us-east", wait_s=30)
                assert rejoined.caught_up == rejoined.copies == ("s1", "s2")
                switched = await hand_back(operator, "us-east", max_pause_s=1.0)
                assert [s.shard for s in switched] == ["s1"]
                assert switched[0].pause_s < 1.0
                count = len(ledger.acknowledged)
                await until(
                    lambda: asyncio.sleep(0, len(ledger.acknowledged) >= count + 200), 30, "writes"
                )
                stop.set()
                await asyncio.gather(*writers)
                await until(lambda: caught_up(operator, "us-east"), 30, "us-east")
                await until(lambda: caught_up(operator, "eu-west"), 30, "eu-west")
        finally:
            stop.set()
            await asyncio.gather(*writers, return_exceptions=True)
        placement = await operator.refresh_placement()
        assert placement is not None
        assert {n: p.primary_dc for n, p in placement.shards.items()} == {
            "s1": "us-east",
            "s2": "eu-west",
        }
        stored = await all_photos(router)
        assert len(stored) == len(set(stored))
        lost = ledger.acknowledged - set(stored)
        assert set(stored) <= ledger.acknowledged
        assert len(lost) == report.lost_writes
        await assert_copies_equal(operator)


def test_the_replicator_process_refuses_bad_arguments_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from millions.shards.replication.__main__ import main

    config_file = tmp_path / "millions.toml"
    config_file.write_text(f'run_dir = "{tmp_path}"\n[shards]\n[dcs.us-east]\n[dcs.eu-west]\n')
    for argv, problem in [
        (["--dc", "mars"], "'mars' is not one of the data centers"),
        (["--dc", "us-east", "--metrics", "nowhere"], "--metrics: expected HOST:PORT"),
        (["--dc", "us-east", "--dcs", "us-east"], "two or more distinct data centers"),
    ]:
        assert main(["--config", str(config_file), *argv]) == 2
        err = capsys.readouterr().err
        assert problem in err and err.count("\n") == 1, err
    assert main(["--config", str(tmp_path / "missing.toml"), "--dc", "x"]) == 2
    assert "cannot read config file" in capsys.readouterr().err
