"""Shard router overhead, throughput by shard count, and resharding rate, on SQLite and
PostgreSQL.

    .venv/bin/python bench/shards/bench.py [--engines sqlite,postgres] [--part all]
        [--duration 5] [--rounds 3] [--keys 10000] [--clients 16]
        [--reshard-users 20000] [--photos-per-user 4]
        [--pg-url postgresql://postgres@127.0.0.1:5432/test]

The tables are the reference app's (`millions.app.schema:APP_SCHEMA`); single-key reads and
writes go to `users` by id, the resharding preload also fills `photos`.

- `latency`: one client reading one `users` row by primary key, back to back. "direct" is the
  plain driver on the shard's own connection: for SQLite the plain statement run on the shard
  storage's `SqliteWorker` (its one connection, on its own thread, one hop per read), for
  PostgreSQL `pool.fetch` on the shard storage's asyncpg pool. "router" is `ShardRouter.get`
  with the default config (hot-key sampling on, the read cache consulted only for hot keys,
  so never here): hashing, the map lookup, sampling and the shard's fence check. "router,
  sampling off" is a second router without a sampler on the same cluster. All of these share
  one connection, so only the code differs (separate threads or pools were measured to differ
  by up to 1.5x in hop latency on this VM). Extra information: "direct, separate connection"
  (the plain statement on a connection of its own: a second `SqliteWorker`, or an asyncpg
  pool set up like the engine's, with no reset query on release), "direct, asyncpg default
  pool" (PostgreSQL: asyncpg's default pool, which runs a reset query, one more round trip,
  on every release) and "router cached" (`get(..., cached=True)` through the in-process
  memory read cache, filled with every key first, so every read is a hit). Each step runs
  one read of every variant in a shuffled order, so all see the same machine noise; p50/p99
  are over all rounds. Target: router p50 <= 1.15x direct p50.
- `throughput`: `--clients` concurrent clients in one process, 80% `get` / 20% `update` of a
  random user, through the router (default config, no cache reads), with 1, 2 and 4 shards;
  the three clusters take turns each round, medians reported.
- `reshard`: 2 shards preloaded with `--reshard-users` users and `--photos-per-user` photos
  each; the same 80/20 load runs in this process while another process (like
  `millions shards split`) runs `Resharder.split("s1")`, moving half of s1's range onto a new
  shard. Reports rows copied per second in the copy phase, the whole operation's time, the
  cutover's write pause, and the load's throughput, p50 and worst latency before and during.

PostgreSQL shards live in uniquely named schemas of `--pg-url`, dropped at the end. Not part of
CI; uses uvloop like the servers do.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import uvloop
from rich.console import Console
from rich.table import Table

from millions.app.schema import APP_SCHEMA
from millions.shards import Progress, Resharder, ShardRouter, ShardsConfig
from millions.shards.config import CacheConfig, ShardSpec
from millions.shards.keyspace import key_hash, stored_hash
from millions.shards.schema import HASH_COLUMN
from millions.shards.sqlite_worker import SqliteWorker
from millions.shards.storage.base import RowWrite

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
USERS = APP_SCHEMA.table("users")
PHOTOS = APP_SCHEMA.table("photos")
DIRECT_SQLITE = 'SELECT * FROM "users" WHERE "id" = ?1'
DIRECT_POSTGRES = 'SELECT * FROM "users" WHERE "id" = $1'
LOAD_BATCH = 500
READ_SHARE = 0.8
console = Console(width=140)


# -- clusters ---------------------------------------------------------------------------------


@dataclass
class Bench:
    engine: str
    pg_url: str
    workdir: Path
    prefixes: list[str] = field(default_factory=list)

    def config(self, shards: int, *, cache: bool = False) -> ShardsConfig:
        names = [ShardSpec(name=f"s{i + 1}") for i in range(shards)]
        cache_config = (
            CacheConfig(engine="memory", ttl_s=86_400, max_entries=1_000_000)
            if cache
            else CacheConfig(engine="none")
        )
        if self.engine == "sqlite":
            directory = self.workdir / uuid.uuid4().hex[:8]
            return ShardsConfig(
                engine="sqlite", directory=str(directory), shards=names, cache=cache_config
            )
        prefix = f"bench_{uuid.uuid4().hex[:10]}_"
        self.prefixes.append(prefix)
        return ShardsConfig(
            engine="postgres",
            url=self.pg_url,
            schema_prefix=prefix,
            metadata_schema=f"{prefix}meta",
            shards=names,
            cache=cache_config,
        )

    @asynccontextmanager
    async def router(self, config: ShardsConfig) -> AsyncIterator[ShardRouter]:
        from millions.shards import ShardCluster

        cluster = ShardCluster(config, self.workdir, APP_SCHEMA)
        try:
            await cluster.migrate()
        finally:
            await cluster.close()
        router = await ShardRouter.open(config, self.workdir, APP_SCHEMA)
        try:
            yield router
        finally:
            await router.close()

    async def drop_schemas(self) -> None:
        if not self.prefixes:
            return
        db = await asyncpg.connect(self.pg_url)
        try:
            for prefix in self.prefixes:
                names = await db.fetch(
                    "SELECT nspname FROM pg_namespace WHERE starts_with(nspname, $1)", prefix
                )
                for row in names:
                    await db.execute(f'DROP SCHEMA "{row["nspname"]}" CASCADE')
        finally:
            await db.close()


async def keep_session(connection: asyncpg.Connection) -> None:
    """No reset query when a connection goes back to the pool, as the shard engine does."""


def user_row(user_id: int) -> dict[str, Any]:
    return {
        "id": user_id,
        "username": f"user{user_id}",
        "password_hash": f"pbkdf2${user_id:032x}",
        "created_at": 1_700_000_000.0 + user_id,
    }


def photo_row(owner_id: int, photo_id: int) -> dict[str, Any]:
    return {
        "owner_id": owner_id,
        "id": photo_id,
        "owner_username": f"user{owner_id}",
        "title": f"photo {photo_id} of user {owner_id}",
        "content_type": "image/jpeg",
        "width": 1024,
        "height": 768,
        "size_bytes": 123_456,
        "sha256": f"{photo_id:064x}",
        "created_at": 1_700_000_000.0 + photo_id,
        "processed": 1,
        "queued": 1,
    }


async def preload(router: ShardRouter, users: int, photos_per_user: int = 0) -> int:
    """Insert users (and photos) in batches straight into their owning shards (fenced
    writes, change-logged like any router write); returns the rows written."""
    by_shard: dict[str, list[RowWrite]] = {}
    written = 0

    async def flush(shard: str) -> None:
        nonlocal written
        batch = by_shard.pop(shard, [])
        if batch:
            storage = await router.cluster.storage(shard)
            await storage.write(batch)
            written += len(batch)

    def add(table: Any, key: int, row: dict[str, Any]) -> str:
        keyspace_id = key_hash(key)
        shard = router.shard_map.shard_for(keyspace_id)
        values = {**row, HASH_COLUMN: stored_hash(keyspace_id)}
        by_shard.setdefault(shard, []).append(RowWrite("insert", table, keyspace_id, values))
        return shard

    photo_id = 0
    for user_id in range(1, users + 1):
        shard = add(USERS, user_id, user_row(user_id))
        for _ in range(photos_per_user):
            photo_id += 1
            add(PHOTOS, user_id, photo_row(user_id, photo_id))
        if len(by_shard[shard]) >= LOAD_BATCH:
            await flush(shard)
    for shard in list(by_shard):
        await flush(shard)
    return written


# -- measuring ---------------------------------------------------------------------------------


def percentile(samples: list[int], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] / 1000.0


@dataclass
class LoadResult:
    ops: int = 0
    errors: int = 0
    worst_ms: float = 0.0
    latencies: list[int] = field(default_factory=list)


async def mixed_load(
    router: ShardRouter, keys: int, clients: int, stop: asyncio.Event, result: LoadResult
) -> None:
    """`clients` concurrent clients doing 80% reads / 20% updates of random users until
    `stop` is set."""

    async def client(seed: int) -> None:
        rng = random.Random(seed)
        clock = time.perf_counter_ns
        while not stop.is_set():
            key = rng.randint(1, keys)
            started = clock()
            try:
                if rng.random() < READ_SHARE:
                    await router.get("users", {"id": key})
                else:
                    await router.update(
                        "users", {"id": key}, {"password_hash": f"v{rng.getrandbits(32):x}"}
                    )
            except Exception as exc:  # counted and shown: the load must not fail
                result.errors += 1
                if result.errors <= 3:
                    console.print(f"[red]load error: {type(exc).__name__}: {exc}")
                continue
            elapsed = clock() - started
            result.ops += 1
            result.latencies.append(elapsed)
            result.worst_ms = max(result.worst_ms, elapsed / 1e6)

    await asyncio.gather(*(client(seed) for seed in range(clients)))


async def run_load_for(router: ShardRouter, keys: int, clients: int, seconds: float) -> LoadResult:
    stop = asyncio.Event()
    result = LoadResult()
    task = asyncio.create_task(mixed_load(router, keys, clients, stop, result))
    await asyncio.sleep(seconds)
    stop.set()
    await task
    return result


# -- the parts ---------------------------------------------------------------------------------


async def interleaved(
    variants: Mapping[str, Callable[[int], Awaitable[Any]]], keys: int, seconds: float, seed: int
) -> dict[str, list[int]]:
    """One read of each variant per step, in a shuffled order, for `seconds`: each variant
    sees the same machine noise. The latencies in ns, per variant."""
    samples: dict[str, list[int]] = {name: [] for name in variants}
    rng = random.Random(seed)
    order = list(variants.items())
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9)
    while clock() < end:
        rng.shuffle(order)
        for name, operation in order:
            key = rng.randint(1, keys)
            started = clock()
            await operation(key)
            samples[name].append(clock() - started)
    return samples


async def latency_part(bench: Bench, args: argparse.Namespace) -> list[dict[str, Any]]:
    config = bench.config(1, cache=True)
    async with bench.router(config) as router:
        await preload(router, args.keys)
        # Sampling off, on the same cluster: every variant but the "separate connection"
        # ones reads through the very same connection (SQLite: the shard's one connection
        # on its thread; PostgreSQL: the shard's pool), so only the code differs. Separate
        # threads were measured to differ from each other by up to 1.5x in hop latency on
        # this VM, which would otherwise decide the ratio.
        plain = ShardRouter(router.cluster, stale_wait_s=config.stale_wait_s)
        await plain.refresh()
        storage = await router.cluster.storage("s1")
        location = storage.location
        extra: dict[str, Callable[[int], Awaitable[Any]]] = {}
        closers: list[Callable[[], Awaitable[None]]] = []
        if bench.engine == "sqlite":
            shard_worker: SqliteWorker = storage._worker  # type: ignore[attr-defined]
            worker = SqliteWorker(Path(location.path), "bench-direct")

            async def direct(key: int) -> Any:
                return await shard_worker.run(
                    lambda db: db.execute(DIRECT_SQLITE, (key,)).fetchall()
                )

            async def direct_separate(key: int) -> Any:
                return await worker.run(lambda db: db.execute(DIRECT_SQLITE, (key,)).fetchall())

            closers.append(worker.close)
        else:
            settings = {"search_path": location.schema}
            await storage.last_seq()  # opens the shard's pool
            shard_pool: asyncpg.Pool = storage._pool  # type: ignore[attr-defined]
            # A pool set up like the engine's (no reset query on release), and asyncpg's
            # defaults (a reset round trip on every release) as extra information.
            pool = await asyncpg.create_pool(
                location.url, min_size=1, max_size=8, server_settings=settings, reset=keep_session
            )
            default_pool = await asyncpg.create_pool(
                location.url, min_size=1, max_size=8, server_settings=settings
            )

            async def direct(key: int) -> Any:
                return await shard_pool.fetch(DIRECT_POSTGRES, key)

            async def direct_separate(key: int) -> Any:
                return await pool.fetch(DIRECT_POSTGRES, key)

            async def direct_default_pool(key: int) -> Any:
                return await default_pool.fetch(DIRECT_POSTGRES, key)

            extra["direct, asyncpg default pool"] = direct_default_pool
            closers += [pool.close, default_pool.close]
        extra["direct, separate connection"] = direct_separate

        async def routed(key: int) -> Any:
            return await router.get("users", {"id": key})

        async def routed_unsampled(key: int) -> Any:
            return await plain.get("users", {"id": key})

        async def cached(key: int) -> Any:
            return await router.get("users", {"id": key}, cached=True)

        variants = {
            "direct": direct,
            "router": routed,
            "router, sampling off": routed_unsampled,
            "router cached": cached,
            **extra,
        }
        samples: dict[str, list[int]] = {name: [] for name in variants}
        round_ratios: list[float] = []
        try:
            for key in range(1, args.keys + 1):  # every key in the read cache
                await router.get("users", {"id": key}, cached=True)
            await interleaved(variants, args.keys, 1.0, seed=0)  # warm up
            for round_index in range(args.rounds):
                found = await interleaved(variants, args.keys, args.duration, seed=round_index + 1)
                for name, latencies in found.items():
                    samples[name].extend(latencies)
                p50 = {name: percentile(latencies, 0.5) for name, latencies in found.items()}
                round_ratios.append(p50["router"] / p50["direct"])
                console.print(
                    f"{bench.engine} latency round {round_index + 1}: "
                    + ", ".join(f"{n} p50 {v:.1f} us" for n, v in p50.items())
                )
        finally:
            for close in closers:
                await close()
    return [
        {
            "engine": bench.engine,
            "variant": name,
            "p50_us": percentile(found, 0.5),
            "p99_us": percentile(found, 0.99),
            "ops_s": len(found) * 1e9 / sum(found),
            "round_ratios": round_ratios,
        }
        for name, found in samples.items()
    ]


async def throughput_part(bench: Bench, args: argparse.Namespace) -> list[dict[str, Any]]:
    results: dict[int, list[float]] = {}
    routers: dict[int, ShardRouter] = {}
    contexts = []
    try:
        for shards in (1, 2, 4):
            context = bench.router(bench.config(shards))
            routers[shards] = await context.__aenter__()
            contexts.append(context)
            await preload(routers[shards], args.keys)
            await run_load_for(routers[shards], args.keys, args.clients, 0.5)  # warm up
            results[shards] = []
        for round_index in range(args.rounds):
            for shards, router in routers.items():
                load = await run_load_for(router, args.keys, args.clients, args.duration)
                if load.errors:
                    console.print(f"[red]{load.errors} errors with {shards} shard(s)")
                results[shards].append(load.ops / args.duration)
                console.print(
                    f"{bench.engine} throughput round {round_index + 1}: {shards} shard(s) "
                    f"{results[shards][-1]:,.0f} ops/s"
                )
    finally:
        for context in reversed(contexts):
            await context.__aexit__(None, None, None)
    return [
        {
            "engine": bench.engine,
            "shards": shards,
            "ops_s": statistics.median(rates),
            "rounds": rates,
        }
        for shards, rates in results.items()
    ]


async def split_in_child(config: ShardsConfig, run_dir: Path) -> dict[str, Any]:
    """Split s1 from another process (as `millions shards split` would): the resharder does not
    share this process's event loop with the load."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--split-child",
        config.model_dump_json(),
        str(run_dir),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await child.communicate()
    if child.returncode != 0:
        raise RuntimeError(f"the split process exited with {child.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


async def split_child(config_json: str, run_dir: str) -> int:
    """The child's side of `split_in_child`: one split, its numbers as a JSON line."""
    from millions.shards import ShardCluster

    config = ShardsConfig.model_validate_json(config_json)
    cluster = ShardCluster(config, Path(run_dir), APP_SCHEMA)
    copying: list[float] = []

    def progress(report: Progress) -> None:
        if report.phase == "copying":
            copying.append(time.monotonic())

    try:
        started = time.monotonic()
        operation = await Resharder(cluster, progress).split("s1")
        split_s = time.monotonic() - started
        counts = await (await cluster.storage(operation.target)).row_counts(APP_SCHEMA.tables)
    finally:
        await cluster.close()
    copy_s = copying[-1] - copying[0] if len(copying) > 1 else split_s
    print(
        json.dumps(
            {
                "rows_copied": operation.rows_copied,
                "rows_on_target": sum(counts.values()),
                "copy_s": copy_s,
                "split_s": split_s,
                "changes_applied": operation.changes_applied,
                "pauses_s": operation.pauses_s,
            }
        )
    )
    return 0


async def reshard_part(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    config = bench.config(2)
    async with bench.router(config) as router:
        started = time.monotonic()
        rows = await preload(router, args.reshard_users, args.photos_per_user)
        console.print(
            f"{bench.engine} reshard: preloaded {rows:,} rows in {time.monotonic() - started:.1f}s"
        )
        before = await run_load_for(router, args.reshard_users, args.clients, args.duration)
        stop = asyncio.Event()
        during = LoadResult()
        load = asyncio.create_task(
            mixed_load(router, args.reshard_users, args.clients, stop, during)
        )
        await asyncio.sleep(0.5)
        load_started = time.monotonic()
        split = await split_in_child(config, bench.workdir)
        stop.set()
        await load
        during_s = time.monotonic() - load_started + 0.5
    return {
        "engine": bench.engine,
        "preloaded_rows": rows,
        **split,
        "copy_rows_s": split["rows_copied"] / max(split["copy_s"], 1e-9),
        "pause_ms": [p * 1000 for p in split["pauses_s"]],
        "before_ops_s": before.ops / args.duration,
        "before_p50_ms": percentile(before.latencies, 0.5) / 1000,
        "before_worst_ms": before.worst_ms,
        "during_ops_s": during.ops / during_s,
        "during_p50_ms": percentile(during.latencies, 0.5) / 1000,
        "during_worst_ms": during.worst_ms,
        "during_errors": during.errors,
    }


# -- output ------------------------------------------------------------------------------------


def print_latency(rows: list[dict[str, Any]]) -> None:
    table = Table(title="single-key read latency (one client, variants interleaved)")
    for column in ("engine", "variant", "p50 us", "p99 us", "reads/s", "p50 vs direct"):
        table.add_column(column, justify="left" if column in ("engine", "variant") else "right")
    direct = {r["engine"]: r["p50_us"] for r in rows if r["variant"] == "direct"}
    for r in rows:
        ratio = r["p50_us"] / direct[r["engine"]]
        table.add_row(
            r["engine"],
            r["variant"],
            f"{r['p50_us']:.1f}",
            f"{r['p99_us']:.1f}",
            f"{r['ops_s']:,.0f}",
            f"{ratio:.2f}x",
        )
    console.print(table)
    for r in rows:
        if r["variant"] == "router":
            ratio = r["p50_us"] / direct[r["engine"]]
            verdict = "met" if ratio <= 1.15 else "NOT met"
            rounds = " / ".join(f"{x:.2f}" for x in r["round_ratios"])
            console.print(
                f"{r['engine']}: router p50 {ratio:.2f}x direct (target <= 1.15x): {verdict};"
                f" per round {rounds}"
            )


def print_throughput(rows: list[dict[str, Any]], clients: int) -> None:
    table = Table(title=f"router throughput, {clients} clients, 80% get / 20% update")
    for column in ("engine", "shards", "ops/s (median)", "rounds"):
        table.add_column(column, justify="left" if column == "engine" else "right")
    for r in rows:
        table.add_row(
            r["engine"],
            str(r["shards"]),
            f"{r['ops_s']:,.0f}",
            " / ".join(f"{x:,.0f}" for x in r["rounds"]),
        )
    console.print(table)


def print_reshard(rows: list[dict[str, Any]], clients: int) -> None:
    table = Table(title=f"split s1 (from another process) under {clients} clients' 80/20 load")
    table.add_column("")
    for r in rows:
        table.add_column(r["engine"], justify="right")
    lines: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("rows preloaded (users + photos)", lambda r: f"{r['preloaded_rows']:,}"),
        ("rows copied", lambda r: f"{r['rows_copied']:,} ({r['rows_on_target']:,} on target)"),
        ("copy phase s", lambda r: f"{r['copy_s']:.1f}"),
        ("copy rows/s", lambda r: f"{r['copy_rows_s']:,.0f}"),
        ("whole split s", lambda r: f"{r['split_s']:.1f}"),
        ("changes replayed", lambda r: f"{r['changes_applied']:,}"),
        ("write pause ms", lambda r: " / ".join(f"{p:.1f}" for p in r["pause_ms"])),
        (
            "load ops/s before / during",
            lambda r: f"{r['before_ops_s']:,.0f} / {r['during_ops_s']:,.0f}",
        ),
        (
            "load p50 ms before / during",
            lambda r: f"{r['before_p50_ms']:.2f} / {r['during_p50_ms']:.2f}",
        ),
        (
            "load worst ms before / during",
            lambda r: f"{r['before_worst_ms']:.0f} / {r['during_worst_ms']:.0f}",
        ),
        ("load errors during", lambda r: str(r["during_errors"])),
    ]
    for label, cell in lines:
        table.add_row(label, *(cell(r) for r in rows))
    console.print(table)


async def amain(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="millions-shards-bench-"))
    latency: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    reshard: list[dict[str, Any]] = []
    try:
        for engine in args.engines.split(","):
            bench = Bench(engine, args.pg_url, workdir)
            try:
                if args.part in ("all", "latency"):
                    latency += await latency_part(bench, args)
                if args.part in ("all", "throughput"):
                    throughput += await throughput_part(bench, args)
                if args.part in ("all", "reshard"):
                    reshard.append(await reshard_part(bench, args))
            finally:
                await bench.drop_schemas()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if latency:
        print_latency(latency)
    if throughput:
        print_throughput(throughput, args.clients)
    if reshard:
        print_reshard(reshard, args.clients)
    print(json.dumps({"latency": latency, "throughput": throughput, "reshard": reshard}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument(
        "--part", choices=("all", "latency", "throughput", "reshard"), default="all"
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=10_000, help="users for latency/throughput")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--reshard-users", type=int, default=20_000)
    parser.add_argument("--photos-per-user", type=int, default=4)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--split-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.split_child:
        return uvloop.run(split_child(*args.split_child))
    for engine in args.engines.split(","):
        if engine not in ("sqlite", "postgres"):
            parser.error(f"unknown engine {engine!r}: use sqlite and/or postgres")
    return uvloop.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())
