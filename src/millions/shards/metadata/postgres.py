"""The metadata store in a PostgreSQL schema (for topologies whose shards are PostgreSQL).

Tables are created on first use under a transaction-scoped advisory lock (two processes
starting at once must not both create them). Publishing a map is a conditional insert
whose version is the primary key, so concurrent publishers of one version cannot both win.
First-time initialization holds a session advisory lock while shard fences are recorded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from millions.shards.errors import (
    MapConflictError,
    OperationError,
    ShardError,
    ShardUnavailableError,
)
from millions.shards.metadata.base import LOAD_REPORT_RETENTION_S, MapRecord
from millions.shards.schema import check_identifier
from millions.shards.shard_map import ShardMap
from millions.shards.storage.base import ShardLocation
from millions.shards.workflow import Operation

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 10.0
T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _millions_maps (
    version bigint PRIMARY KEY, map text NOT NULL, reason text NOT NULL,
    at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS _millions_shards (
    name text PRIMARY KEY, location text NOT NULL, registered_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS _millions_sequences (name text PRIMARY KEY, next_id bigint NOT NULL);
CREATE TABLE IF NOT EXISTS _millions_operations (
    id text PRIMARY KEY, active integer UNIQUE, state text NOT NULL,
    started_at double precision NOT NULL, updated_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS _millions_load_reports (
    reporter text PRIMARY KEY, at double precision NOT NULL, report text NOT NULL);
CREATE TABLE IF NOT EXISTS _millions_placements (
    version bigint PRIMARY KEY, placement text NOT NULL, reason text NOT NULL,
    at double precision NOT NULL);
"""
_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)


class PostgresMetadataStore:
    """A `MetadataStore` in one PostgreSQL schema."""

    def __init__(self, url: str, schema: str = "millions_shards") -> None:
        self.url = url
        self.schema = check_identifier(schema, "metadata schema")
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def current_map(self) -> ShardMap | None:
        text = await self._call(
            lambda pool: pool.fetchval(
                "SELECT map FROM _millions_maps ORDER BY version DESC LIMIT 1"
            )
        )
        return None if text is None else ShardMap.from_json(text)

    async def initialize(
        self, initial: ShardMap, prepare: Callable[[ShardMap], Awaitable[None]]
    ) -> ShardMap:
        async def initialize(pool: asyncpg.Pool) -> ShardMap:
            async with pool.acquire() as db:
                key = f"millions_shards_init:{self.schema}"
                await db.execute("SELECT pg_advisory_lock(hashtext($1))", key)
                try:
                    current = await self.current_map()
                    if current is not None:
                        return current
                    await prepare(initial)
                    await self.publish(initial, "initial map")
                    return initial
                finally:
                    await db.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

        return await self._call(initialize)

    async def publish(self, new_map: ShardMap, reason: str) -> None:
        await self._publish_next(
            "_millions_maps", "map", new_map.version, new_map.to_json(), reason, "shard map"
        )

    async def _publish_next(
        self, table: str, column: str, version: int, text: str, reason: str, what: str
    ) -> None:
        """Insert version `version` of a versioned record (the map, the placement) only if
        it follows the latest one; MapConflictError when another process got there first."""
        try:
            status: str = await self._call(
                lambda pool: pool.execute(
                    f"INSERT INTO {table} (version, {column}, reason, at)"
                    " SELECT $1, $2, $3, $4"
                    f" WHERE (SELECT coalesce(max(version), 0) FROM {table}) = $5",
                    version,
                    text,
                    reason,
                    time.time(),
                    version - 1,
                )
            )
        except asyncpg.UniqueViolationError:
            status = "INSERT 0 0"
        if status != "INSERT 0 1":
            raise MapConflictError(
                f"cannot publish {what} version {version}: the current version is not its "
                f"predecessor (another process changed the {what})"
            )

    async def history(self, limit: int = 20) -> list[MapRecord]:
        rows = await self._call(
            lambda pool: pool.fetch(
                "SELECT version, at, reason FROM _millions_maps ORDER BY version DESC LIMIT $1",
                limit,
            )
        )
        return [MapRecord(int(r["version"]), float(r["at"]), str(r["reason"])) for r in rows]

    async def locations(self) -> dict[str, ShardLocation]:
        rows = await self._call(
            lambda pool: pool.fetch("SELECT location FROM _millions_shards ORDER BY name")
        )
        found = [ShardLocation.from_dict(json.loads(r["location"])) for r in rows]
        return {location.name: location for location in found}

    async def register(self, location: ShardLocation) -> None:
        text = json.dumps(location.to_dict(), sort_keys=True)

        async def register(pool: asyncpg.Pool) -> str:
            async with pool.acquire() as db, db.transaction():
                await db.execute(
                    "INSERT INTO _millions_shards (name, location, registered_at)"
                    " VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
                    location.name,
                    text,
                    time.time(),
                )
                stored: str = await db.fetchval(
                    "SELECT location FROM _millions_shards WHERE name = $1", location.name
                )
                return stored

        stored = await self._call(register)
        if json.loads(stored) != json.loads(text):
            existing = ShardLocation.from_dict(json.loads(stored))
            raise ShardError(
                f"shard {location.name} is registered at {existing.describe()}, "
                f"not {location.describe()}; keep its location or give it another name"
            )

    async def reserve_ids(self, sequence: str, count: int) -> int:
        if count < 1:
            raise ValueError("reserve at least one id")
        next_id = await self._call(
            lambda pool: pool.fetchval(
                "INSERT INTO _millions_sequences (name, next_id) VALUES ($1, 1 + $2)"
                " ON CONFLICT (name) DO UPDATE"
                " SET next_id = _millions_sequences.next_id + $2 RETURNING next_id",
                sequence,
                count,
            )
        )
        return int(next_id) - count

    async def begin_operation(self, operation: Operation) -> None:
        try:
            await self._call(
                lambda pool: pool.execute(
                    "INSERT INTO _millions_operations (id, active, state, started_at, updated_at)"
                    " VALUES ($1, 1, $2, $3, $4)",
                    operation.id,
                    operation.to_json(),
                    operation.started_at,
                    operation.updated_at,
                )
            )
        except asyncpg.UniqueViolationError:
            active = await self.active_operation()
            what = f"{active.kind} {active.key_range} ({active.phase})" if active else "another"
            raise OperationError(
                f"another resharding operation is active: {what}; "
                "finish it with cleanup (or reverse) first"
            ) from None

    async def save_operation(self, operation: Operation) -> None:
        await self._call(
            lambda pool: pool.execute(
                "UPDATE _millions_operations SET active = $1, state = $2, updated_at = $3"
                " WHERE id = $4",
                1 if operation.active else None,
                operation.to_json(),
                operation.updated_at,
                operation.id,
            )
        )

    async def claim_operation(self, operation: Operation, seen_updated_at: float) -> bool:
        status: str = await self._call(
            lambda pool: pool.execute(
                "UPDATE _millions_operations SET state = $1, updated_at = $2"
                " WHERE id = $3 AND updated_at = $4 AND active = 1",
                operation.to_json(),
                operation.updated_at,
                operation.id,
                seen_updated_at,
            )
        )
        return status == "UPDATE 1"

    async def active_operation(self) -> Operation | None:
        text = await self._call(
            lambda pool: pool.fetchval("SELECT state FROM _millions_operations WHERE active = 1")
        )
        return None if text is None else Operation.from_json(text)

    async def operations(self, limit: int = 10) -> list[Operation]:
        rows = await self._call(
            lambda pool: pool.fetch(
                "SELECT state FROM _millions_operations ORDER BY started_at DESC LIMIT $1", limit
            )
        )
        return [Operation.from_json(r["state"]) for r in rows]

    async def save_load_report(self, reporter: str, report: dict[str, Any], at: float) -> None:
        text = json.dumps(report, separators=(",", ":"))

        async def save(pool: asyncpg.Pool) -> None:
            async with pool.acquire() as db, db.transaction():
                await db.execute(
                    "INSERT INTO _millions_load_reports (reporter, at, report) VALUES ($1, $2, $3)"
                    " ON CONFLICT (reporter) DO UPDATE SET at = excluded.at,"
                    " report = excluded.report",
                    reporter,
                    at,
                    text,
                )
                await db.execute(
                    "DELETE FROM _millions_load_reports WHERE at < $1",
                    at - LOAD_REPORT_RETENTION_S,
                )

        await self._call(save)

    async def load_reports(self, newer_than: float) -> list[dict[str, Any]]:
        rows = await self._call(
            lambda pool: pool.fetch(
                "SELECT report FROM _millions_load_reports WHERE at > $1 ORDER BY reporter",
                newer_than,
            )
        )
        return [json.loads(r["report"]) for r in rows]

    async def current_placement(self) -> tuple[int, dict[str, Any]] | None:
        row = await self._call(
            lambda pool: pool.fetchrow(
                "SELECT version, placement FROM _millions_placements ORDER BY version DESC LIMIT 1"
            )
        )
        return None if row is None else (int(row["version"]), json.loads(row["placement"]))

    async def publish_placement(self, version: int, record: dict[str, Any], reason: str) -> None:
        text = json.dumps(record, sort_keys=True)
        await self._publish_next(
            "_millions_placements", "placement", version, text, reason, "placement"
        )

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- plumbing --------------------------------------------------------------------------

    async def _call(self, operation: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """Run on a pooled connection; unique violations propagate, other errors are wrapped."""
        try:
            return await operation(await self._ready_pool())
        except asyncpg.UniqueViolationError:
            raise
        except _UNAVAILABLE as exc:
            raise ShardUnavailableError(f"shard metadata store: {exc}") from exc
        except asyncpg.PostgresError as exc:
            raise ShardUnavailableError(f"shard metadata store: {exc}") from exc

    async def _ready_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise ShardUnavailableError("shard metadata store is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self.url,
                    min_size=1,
                    max_size=4,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=COMMAND_TIMEOUT_S,
                    server_settings={"search_path": self.schema},
                )
                try:
                    async with pool.acquire() as db, db.transaction():
                        await db.execute(
                            "SELECT pg_advisory_xact_lock(hashtext($1))",
                            f"millions_shards_meta:{self.schema}",
                        )
                        await db.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                        await db.execute(_SCHEMA)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
            return self._pool
