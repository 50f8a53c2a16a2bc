"""A sharded database as a whole: the metadata store and the shards named in it.

`ShardCluster` opens engines from a `ShardsConfig`, initializes and migrates the shards
(`migrate`), creates shards for splits (`add_shard`) and reports status. The router, the
resharding operations and the CLI all work through one.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from millions.shards.cache.base import ReadCache
from millions.shards.config import CacheConfig, ShardsConfig
from millions.shards.errors import ShardError
from millions.shards.metadata.base import MapRecord, MetadataStore
from millions.shards.schema import ShardSchema, load_schema
from millions.shards.shard_map import ShardMap
from millions.shards.storage.base import ShardLocation, ShardStorage
from millions.shards.workflow import Operation


def open_metadata(location: str, schema: str = "millions_shards") -> MetadataStore:
    """The metadata store at a postgresql:// URL or a SQLite file path (or sqlite:// URL)."""
    if location.startswith(("postgres://", "postgresql://")):
        from millions.shards.metadata.postgres import PostgresMetadataStore

        return PostgresMetadataStore(location, schema)
    from millions.shards.metadata.sqlite import SqliteMetadataStore

    path = location.removeprefix("sqlite://")
    if not path:
        raise ShardError("the metadata store needs a file path or a postgresql:// URL")
    return SqliteMetadataStore(path)


def open_storage(location: ShardLocation) -> ShardStorage:
    if location.engine == "sqlite":
        from millions.shards.storage.sqlite import SqliteShardStorage

        return SqliteShardStorage(location)
    from millions.shards.storage.postgres import PostgresShardStorage

    return PostgresShardStorage(location)


def open_cache(config: CacheConfig) -> ReadCache | None:
    if config.engine == "memory":
        from millions.shards.cache.memory import MemoryReadCache

        return MemoryReadCache(ttl_s=config.ttl_s, max_entries=config.max_entries)
    if config.engine == "redis":
        from millions.shards.cache.redis import RedisReadCache

        return RedisReadCache(config.url, ttl_s=config.ttl_s, prefix=config.prefix)
    return None


@dataclass(frozen=True)
class ShardStatus:
    """One shard as it reports itself (error: it could not be reached)."""

    name: str
    location: str
    ranges: tuple[str, ...]
    fence_ranges: tuple[str, ...] = ()
    fence_version: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    last_seq: int = 0
    migrations: tuple[int, ...] = ()
    error: str = ""

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


@dataclass(frozen=True)
class ClusterStatus:
    shard_map: ShardMap | None
    shards: tuple[ShardStatus, ...]
    operation: Operation | None
    history: tuple[MapRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "map": None if self.shard_map is None else self.shard_map.to_dict(),
            "shards": [
                {
                    "name": s.name,
                    "location": s.location,
                    "ranges": list(s.ranges),
                    "fence": {"ranges": list(s.fence_ranges), "version": s.fence_version},
                    "rows": s.rows,
                    "total_rows": s.total_rows,
                    "changelog_seq": s.last_seq,
                    "migrations": list(s.migrations),
                    "error": s.error,
                }
                for s in self.shards
            ],
            "operation": None if self.operation is None else asdict(self.operation),
            "history": [
                {"version": h.version, "at": h.at, "reason": h.reason} for h in self.history
            ],
        }


class ShardCluster:
    """The metadata store plus a storage handle per shard, opened on first use."""

    def __init__(
        self,
        config: ShardsConfig,
        run_dir: Path,
        schema: ShardSchema | None = None,
        *,
        metadata: MetadataStore | None = None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.schema = schema if schema is not None else load_schema(config.tables)
        self.metadata = metadata or open_metadata(
            config.metadata_location(run_dir), config.metadata_schema
        )
        self._storages: dict[str, ShardStorage] = {}
        self._opening = asyncio.Lock()

    def ready_storage(self, name: str) -> ShardStorage | None:
        """What `storage(name)` returns when that needs no waiting (None: await it)."""
        return self._storages.get(name)

    async def storage(self, name: str) -> ShardStorage:
        """The storage of registered shard `name`."""
        existing = self._storages.get(name)
        if existing is not None:
            return existing
        async with self._opening:
            if name not in self._storages:
                locations = await self.metadata.locations()
                if name not in locations:
                    raise ShardError(f"no shard named {name!r} is registered")
                self._storages[name] = open_storage(locations[name])
            return self._storages[name]

    async def current_map(self) -> ShardMap:
        found = await self.metadata.current_map()
        if found is None:
            raise ShardError("the shards are not initialized yet: run `millions shards migrate`")
        return found

    async def migrate(self) -> dict[str, list[int]]:
        """Register the configured shards, bring every registered shard's schema up to date
        and, the first time, publish the initial map (the configured shards split the
        keyspace evenly). Safe to run from several processes at once; returns the
        migrations applied now, per shard."""
        for spec in self.config.shards:
            await self.metadata.register(self.config.location(spec.name, self.run_dir))
        names = sorted(await self.metadata.locations())
        storages = [await self.storage(name) for name in names]
        applied = await asyncio.gather(*(s.migrate(self.schema) for s in storages))

        async def record_fences(initial: ShardMap) -> None:
            for name in initial.shards():
                await (await self.storage(name)).set_fence(initial.ranges_of(name), initial.version)

        initial = ShardMap.initial([spec.name for spec in self.config.shards])
        await self.metadata.initialize(initial, record_fences)
        return dict(zip(names, applied, strict=True))

    async def add_shard(self, name: str) -> ShardStorage:
        """Register shard `name` at its default location and migrate it (it owns nothing)."""
        await self.metadata.register(self.config.location(name, self.run_dir))
        storage = await self.storage(name)
        await storage.migrate(self.schema)
        return storage

    async def status(self) -> ClusterStatus:
        shard_map = await self.metadata.current_map()
        locations = await self.metadata.locations()
        operation = await self.metadata.active_operation()
        if operation is None:
            recent = await self.metadata.operations(limit=1)
            operation = recent[0] if recent else None
        history = await self.metadata.history(limit=10)

        async def one(name: str) -> ShardStatus:
            ranges = () if shard_map is None else tuple(r.name for r in shard_map.ranges_of(name))
            location = locations[name].describe()
            try:
                storage = await self.storage(name)
                fence = await storage.fence()
                rows = await storage.row_counts(self.schema.tables)
                seq = await storage.last_seq()
                migrations = tuple(await storage.applied_migrations())
            except ShardError as exc:
                return ShardStatus(name, location, ranges, error=str(exc))
            return ShardStatus(
                name,
                location,
                ranges,
                tuple(r.name for r in fence.ranges),
                fence.version,
                rows,
                seq,
                migrations,
            )

        shards = await asyncio.gather(*(one(name) for name in sorted(locations)))
        return ClusterStatus(shard_map, tuple(shards), operation, tuple(history))

    async def close(self) -> None:
        storages, self._storages = list(self._storages.values()), {}
        for storage in storages:
            await storage.close()
        await self.metadata.close()
