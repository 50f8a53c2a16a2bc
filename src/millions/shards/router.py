"""The shard router: what an app calls to read and write sharded rows.

Single-key reads and writes go to the shard owning the key's keyspace id in the router's
cached map. The shard checks its own fence; when it refuses (`StaleMapError`: the range
moved, or is moving), the router reloads the map from the metadata store — polling while a
cutover's short pause lasts — and retries, so an app never sees a moved range. Scatter
queries run on every shard at once, each restricted to the ranges the router believes the
shard owns (`{owned}` in the SQL), and are merged (ORDER BY, LIMIT, count/sum/min/max).

Reads marked `cached=True` go through the read cache, tagged with their shard key; every
write invalidates its key's tag after it commits (see `cache.base` for why no read can
re-fill an older value after that). Reads of a key too hot for any split (the celebrity
problem: over `cache_hot_keys_over_ops_s` across all routers, by their load reports) go
through the cache too unless the caller passes `cached=False`; the router relearns that set
each time it stores its load report.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import operator
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from millions.shards import statements
from millions.shards.cache.base import ReadCache
from millions.shards.cluster import ShardCluster, open_cache
from millions.shards.config import ShardsConfig
from millions.shards.errors import (
    RangeUnavailableError,
    SchemaError,
    ShardUnavailableError,
    StaleMapError,
)
from millions.shards.hotkeys import HotKeySampler, HotReport, fresh_since, keys_to_cache
from millions.shards.keyspace import KeyRange, ShardKey, key_hash, key_text, stored_hash
from millions.shards.merge import Aggregate, merge_results
from millions.shards.rows import Row, decode_rows, encode_rows
from millions.shards.schema import HASH_COLUMN, ShardSchema, TableSpec
from millions.shards.shard_map import ShardMap
from millions.shards.storage.base import Change, RowWrite, ShardStorage
from millions.shards.storage.writes import pk_values

T = TypeVar("T")
log = logging.getLogger("millions.shards")
ID_BLOCK = 100
POLL_S = 0.01


def _public(row: Row) -> Row:
    """A row as the app sees it: without the router's `key_hash` column."""
    return {column: value for column, value in row.items() if column != HASH_COLUMN}


class ShardRouter:
    """Routes reads and writes by shard key; see the module docstring."""

    def __init__(
        self,
        cluster: ShardCluster,
        *,
        cache: ReadCache | None = None,
        sampler: HotKeySampler | None = None,
        stale_wait_s: float = 5.0,
        report_interval_s: float = 1.0,
        cache_hot_keys_over_ops_s: float | None = None,
    ) -> None:
        self.cluster = cluster
        self.schema: ShardSchema = cluster.schema
        self.cache = cache
        self.sampler = sampler
        self.stale_wait_s = stale_wait_s
        self.report_interval_s = report_interval_s
        self.cache_hot_keys_over_ops_s = cache_hot_keys_over_ops_s
        self.hot_keys: frozenset[str] = frozenset()
        self.reporter = f"{uuid.uuid4().hex[:12]}"
        self._map: ShardMap | None = None
        self._refresh_lock = asyncio.Lock()
        self._ids: dict[str, tuple[int, int]] = {}
        # table -> (shard key column, the primary key's values of a pk mapping, the SELECT)
        self._pk_reads: dict[
            str, tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]], str]
        ] = {}
        self._ids_lock = asyncio.Lock()
        self._next_report = time.monotonic() + report_interval_s
        self._report_task: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls,
        config: ShardsConfig,
        run_dir: Path,
        schema: ShardSchema | None = None,
        *,
        cluster: ShardCluster | None = None,
    ) -> ShardRouter:
        """A router on the cluster `config` describes (or on `cluster`, e.g. a
        `ReplicatedCluster`, which the router then closes); the cluster must be migrated."""
        if cluster is None:
            cluster = ShardCluster(config, run_dir, schema)
        sampler = None
        if config.hot.enabled:
            sampler = HotKeySampler(
                window_s=config.hot.window_s,
                capacity=config.hot.top_k,
                sample_rate=config.hot.sample_rate,
            )
        hot = config.hot
        router = cls(
            cluster,
            cache=open_cache(config.cache),
            sampler=sampler,
            stale_wait_s=config.stale_wait_s,
            report_interval_s=hot.report_interval_s,
            cache_hot_keys_over_ops_s=(
                hot.threshold_ops_s * hot.cache_key_share if hot.cache_hot_keys else None
            ),
        )
        try:
            await router.refresh()
        except BaseException:
            await router.close()
            raise
        return router

    # -- the map ---------------------------------------------------------------------------

    @property
    def shard_map(self) -> ShardMap:
        if self._map is None:
            raise RuntimeError("the router has no map yet: await router.refresh() first")
        return self._map

    async def refresh(self) -> ShardMap:
        """Reload the shard map from the metadata store."""
        self._map = await self.cluster.current_map()
        return self._map

    def shard_for(self, key: ShardKey) -> str:
        """The shard owning `key` in this router's map."""
        return self.shard_map.shard_for(key_hash(key))

    # -- single-key reads ------------------------------------------------------------------

    async def get(
        self, table: str, pk: Mapping[str, Any], *, cached: bool | None = None
    ) -> Row | None:
        """The row of `table` with primary key `pk` (which includes the shard key); `cached`
        as for `fetch`."""
        read = self._pk_reads.get(table)
        if read is None:
            read = self._pk_read(table)
        shard_key, values_of, sql = read
        try:
            params = values_of(pk)
        except KeyError:
            params = ()
        if not params or len(params) != len(pk):  # a missing or an extra column: say which
            params = tuple(pk_values(self.schema.table(table), pk))
        key = pk[shard_key]
        try:
            rows = await self._read(key, sql, params, cached)
        except StaleMapError:
            rows = await self._follow(key, sql, params)
        if not rows:
            return None
        row = rows[0]  # a fresh dict from the shard or the cache: no copy needed
        row.pop(HASH_COLUMN, None)
        return row

    async def fetch(
        self, key: ShardKey, sql: str, params: Sequence[Any] = (), *, cached: bool | None = None
    ) -> list[Row]:
        """Run a read on the shard owning `key`; the SQL (`$1` placeholders) must only
        touch rows of that key, e.g. `WHERE owner_id = $1`. `cached=True` reads through
        the read cache, `False` always reads the shard, None (default) uses the cache only
        for keys in `hot_keys`."""
        values = tuple(params)
        try:
            return await self._read(key, sql, values, cached)
        except StaleMapError:
            return await self._follow(key, sql, values)

    def _pk_read(
        self, table: str
    ) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]], str]:
        spec = self.schema.table(table)
        columns = spec.primary_key
        values_of: Callable[[Mapping[str, Any]], tuple[Any, ...]]
        if len(columns) == 1:
            (column,) = columns

            def values_of(pk: Mapping[str, Any]) -> tuple[Any, ...]:
                return (pk[column],)
        else:  # itemgetter gives a tuple for two or more columns
            values_of = cast(
                Callable[[Mapping[str, Any]], tuple[Any, ...]], operator.itemgetter(*columns)
            )
        read = (spec.shard_key, values_of, statements.select_by_pk(spec))
        self._pk_reads[table] = read
        return read

    def _read(
        self, key: ShardKey, sql: str, params: tuple[Any, ...], cached: bool | None
    ) -> Awaitable[list[Row]]:
        """A single-key read, as an awaitable: straight from the owner's storage when the
        map names it and it is open (no coroutine of the router's own on the way), else
        through the cache or `_fetch_owned`."""
        keyspace_id = key_hash(key)
        key_range, shard = self.shard_map.entry_for(keyspace_id)
        if self.sampler is not None:
            self._sample(key, keyspace_id, key_range)
        if self.cache is not None and cached is not False and (cached or self.hot_keys):
            tag = key_text(key)
            if cached or tag in self.hot_keys:
                return self._cached(
                    tag, sql, params, lambda: self._fetch_owned(keyspace_id, sql, params)
                )
        storage = self.cluster.ready_storage(shard)
        if storage is None:
            return self._fetch_owned(keyspace_id, sql, params)
        return storage.read_owned(sql, params, keyspace_id)  # StaleMapError: see `_follow`

    async def _follow(self, key: ShardKey, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """The read after the shard refused it: on the owner, following the map."""
        keyspace_id = key_hash(key)
        return await self._on_owner(
            keyspace_id, lambda storage: storage.read_owned(sql, params, keyspace_id)
        )

    async def _fetch_owned(self, keyspace_id: int, sql: str, params: tuple[Any, ...]) -> list[Row]:
        """A read on the owner of `keyspace_id` by the current map, opening its storage."""
        storage = await self.cluster.storage(self.shard_map.shard_for(keyspace_id))
        return await storage.read_owned(sql, params, keyspace_id)

    # -- single-key writes -----------------------------------------------------------------

    async def insert(self, table: str, row: Mapping[str, Any]) -> Row:
        """Insert a row (DuplicateRowError when its primary key exists); returns it as
        stored, with columns the database filled in."""
        return await self._write_row("insert", table, row)

    async def upsert(self, table: str, row: Mapping[str, Any]) -> Row:
        """Insert a row or replace the row with its primary key."""
        return await self._write_row("upsert", table, row)

    async def update(
        self, table: str, pk: Mapping[str, Any], values: Mapping[str, Any]
    ) -> Row | None:
        """Change non-key columns of the row with primary key `pk`; None when absent."""
        spec = self.schema.table(table)
        pk_values(spec, pk)
        if not values:
            raise SchemaError("update needs at least one column to change")
        fixed = [c for c in values if c in spec.primary_key or c == HASH_COLUMN]
        if fixed:
            raise SchemaError(f"update cannot change key column(s) {', '.join(fixed)}")
        key = pk[spec.shard_key]
        write = RowWrite("update", spec, key_hash(key), values=dict(values), pk=dict(pk))
        image = await self._write(key, write)
        return None if image is None else _public(image)

    async def delete(self, table: str, pk: Mapping[str, Any]) -> bool:
        """Delete the row with primary key `pk`; False when there was none."""
        spec = self.schema.table(table)
        pk_values(spec, pk)
        key = pk[spec.shard_key]
        write = RowWrite("delete", spec, key_hash(key), pk=dict(pk))
        return await self._write(key, write) is not None

    # -- many shards -----------------------------------------------------------------------

    async def scatter(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        order_by: Sequence[str] = (),
        limit: int | None = None,
        aggregate: Mapping[str, Aggregate] | None = None,
    ) -> list[Row]:
        """Run `sql` on every shard concurrently and merge the rows.

        The SQL must say where `{owned}` (or `{owned:alias}`) rows are: it becomes each
        shard's `key_hash` range predicate, so rows still being copied or not yet cleaned
        up are never counted twice. `order_by` names result columns (`-col`: descending),
        `limit` caps the merged rows, `aggregate` maps result columns to count/sum/min/max
        (each shard then returns one row of partial aggregates).
        """
        statements.substitute_owned(sql, ())
        deadline: float | None = None
        while True:
            shard_map = self.shard_map
            owners = shard_map.shards()
            results = await asyncio.gather(
                *(self._scatter_one(s, shard_map.ranges_of(s), sql, params) for s in owners),
                return_exceptions=True,
            )
            stale = next((r for r in results if isinstance(r, StaleMapError)), None)
            failed = next((r for r in results if isinstance(r, BaseException)), None)
            if stale is not None and failed is stale:
                deadline = deadline or time.monotonic() + self.stale_wait_s
                await self._await_newer_map(shard_map.version, deadline, "a scatter query")
                continue
            if failed is not None:
                raise failed
            parts = [r for r in results if isinstance(r, list)]
            return merge_results(parts, order_by=order_by, limit=limit, aggregate=aggregate)

    async def _scatter_one(
        self, shard: str, ranges: Sequence[KeyRange], sql: str, params: Sequence[Any]
    ) -> list[Row]:
        storage = await self.cluster.storage(shard)
        return await storage.fetch(statements.substitute_owned(sql, ranges), params, ranges=ranges)

    # -- ids, the change log, load -----------------------------------------------------------

    async def next_id(self, sequence: str) -> int:
        """A new id of `sequence` (1, 2, ...), unique across every router; ids are handed out
        in blocks, so they grow but have gaps across processes."""
        async with self._ids_lock:
            next_id, end = self._ids.get(sequence, (0, 0))
            if next_id >= end:
                next_id = await self.cluster.metadata.reserve_ids(sequence, ID_BLOCK)
                end = next_id + ID_BLOCK
            self._ids[sequence] = (next_id + 1, end)
            return next_id

    async def changes_since(
        self, shard: str, seq: int, key_range: KeyRange | None = None, *, limit: int = 1000
    ) -> list[Change]:
        """Shard `shard`'s change-log rows after `seq` (within `key_range`), oldest first."""
        storage = await self.cluster.storage(shard)
        return await storage.changes_since(seq, key_range, limit=limit)

    def hot(self, top: int = 20) -> HotReport:
        """This router's hottest keys and ranges over the sampling window."""
        if self.sampler is None:
            return HotReport(0.0, (), ())
        return self.sampler.report(top)

    async def publish_load(self) -> None:
        """Store this router's load report in the metadata store (for `shards hot` and the
        auto-splitter), relearn the hot keys to serve from the cache from every router's
        fresh report, and catch up with the current map so that load is counted per range
        of the current map (a router whose keys did not move would otherwise never see a
        split)."""
        if self.sampler is None:
            return
        report = self.sampler.report(top=self.sampler.capacity)
        over = self.cache_hot_keys_over_ops_s if self.cache is not None else None
        if over is not None:
            self.hot_keys = keys_to_cache(report, over)
        now = time.time()
        await self.cluster.metadata.save_load_report(self.reporter, report.to_dict(), now)
        if over is not None:
            stored = await self.cluster.metadata.load_reports(
                fresh_since(now, self.report_interval_s)
            )
            fleet = HotReport.merge(
                (HotReport.from_dict(r) for r in stored), top=self.sampler.capacity
            )
            self.hot_keys = keys_to_cache(fleet, over)
        latest = await self.cluster.current_map()
        if latest.version > self.shard_map.version:
            self._map = latest

    async def close(self) -> None:
        if self._report_task is not None:
            self._report_task.cancel()
            await asyncio.gather(self._report_task, return_exceptions=True)
        if self.cache is not None:
            await self.cache.close()
        await self.cluster.close()

    # -- plumbing --------------------------------------------------------------------------

    async def _write_row(
        self, op: Literal["insert", "upsert"], table: str, row: Mapping[str, Any]
    ) -> Row:
        spec: TableSpec = self.schema.table(table)
        if spec.shard_key not in row:
            raise SchemaError(f"{table} rows need their shard key column {spec.shard_key!r}")
        if HASH_COLUMN in row:
            raise SchemaError(f"{HASH_COLUMN} is set by the router, leave it out")
        key = row[spec.shard_key]
        keyspace_id = key_hash(key)
        values = {**row, HASH_COLUMN: stored_hash(keyspace_id)}
        image = await self._write(key, RowWrite(op, spec, keyspace_id, values=values))
        if image is None:
            raise SchemaError(f"{op} into {table} returned no row")
        return _public(image)

    async def _write(self, key: ShardKey, write: RowWrite) -> Row | None:
        if self.sampler is not None:
            self._sample(key, write.keyspace_id, self.shard_map.entry_for(write.keyspace_id)[0])
        images = await self._on_owner(write.keyspace_id, lambda storage: storage.write([write]))
        if self.cache is not None:
            try:
                await self.cache.invalidate(key_text(key))
            except ShardUnavailableError as exc:
                log.warning(
                    "read cache invalidation failed; cached reads of %r may be stale "
                    "until their TTL: %s",
                    key_text(key),
                    exc,
                )
        return images[0]

    async def _on_owner(
        self, keyspace_id: int, operation: Callable[[ShardStorage], Awaitable[T]]
    ) -> T:
        """Run `operation` on the owner of `keyspace_id`, following the map as it moves."""
        deadline: float | None = None
        while True:
            shard_map = self.shard_map
            storage = await self.cluster.storage(shard_map.shard_for(keyspace_id))
            try:
                return await operation(storage)
            except StaleMapError:
                deadline = deadline or time.monotonic() + self.stale_wait_s
                await self._await_newer_map(
                    shard_map.version, deadline, f"keyspace id {keyspace_id:#018x}"
                )

    async def _await_newer_map(self, used_version: int, deadline: float, what: str) -> None:
        """Return once the map is newer than `used_version`, polling the metadata store."""
        while True:
            if self.shard_map.version > used_version:
                return
            async with self._refresh_lock:
                if self.shard_map.version > used_version:
                    return
                await self.refresh()
                if self.shard_map.version > used_version:
                    return
            if time.monotonic() >= deadline:
                raise RangeUnavailableError(
                    f"no shard accepts {what}: the shards' fences and the shard map (version "
                    f"{used_version}) disagree for over {self.stale_wait_s:.1f}s — a resharding "
                    "operation was interrupted; see `millions shards status`, then reverse it"
                )
            await asyncio.sleep(POLL_S)

    async def _cached(
        self, tag: str, sql: str, params: Sequence[Any], load: Callable[[], Awaitable[list[Row]]]
    ) -> list[Row]:
        assert self.cache is not None
        query = hashlib.blake2b(repr((sql, tuple(params))).encode(), digest_size=16).hexdigest()
        try:
            lookup = await self.cache.get(tag, query)
        except ShardUnavailableError as exc:
            log.warning("read cache unavailable, reading the shard: %s", exc)
            return await load()
        if lookup.value is not None:
            return decode_rows(lookup.value)
        rows = await load()
        try:
            await self.cache.fill(tag, query, encode_rows(rows), lookup.token)
        except ShardUnavailableError as exc:
            log.warning("read cache fill failed: %s", exc)
        return rows

    def _sample(self, key: ShardKey, keyspace_id: int, key_range: KeyRange) -> None:
        assert self.sampler is not None
        now = time.monotonic()
        self.sampler.record(key, keyspace_id, key_range.name, now)
        if now >= self._next_report and (self._report_task is None or self._report_task.done()):
            self._next_report = now + self.report_interval_s
            self._report_task = asyncio.create_task(self._publish_quietly())

    async def _publish_quietly(self) -> None:
        try:
            await self.publish_load()
        except ShardUnavailableError as exc:
            log.warning("could not store the hot-key load report: %s", exc)
