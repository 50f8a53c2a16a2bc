"""A shard as a schema in a PostgreSQL database (one schema per shard; shards may share a
database or each have their own).

Connections pin `search_path` to the shard's schema, so the app's SQL and migrations name
tables without a schema. A routed write runs in one transaction: it takes the fence row
`FOR SHARE` (a cutover's `UPDATE` of the fence waits for writes in flight, and writes that
come after it see the new fence), writes the row and appends to the change log.

Change-log sequence numbers come from a one-row counter updated at the append, not from a
sequence: a sequence hands out numbers in start order, so a reader could see 11 committed
before 10 and skip 10 for ever. The counter's row lock is held to commit, so numbers are
visible in commit order. It serializes a shard's writes for the last round trip of each
transaction, which is the price of a gap-free log.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from itertools import islice
from typing import Any, TypeVar

import asyncpg

from millions.shards import statements
from millions.shards.errors import (
    DuplicateRowError,
    QueryError,
    ShardError,
    ShardUnavailableError,
    StaleMapError,
)
from millions.shards.keyspace import KeyRange
from millions.shards.rows import RangeDigest, Row
from millions.shards.schema import ShardSchema, TableSpec, check_identifier
from millions.shards.storage.base import (
    Change,
    Fence,
    PromotedCopyError,
    ReplicaStep,
    ReplicationConflictError,
    RowWrite,
    ShardLocation,
    fence_of,
)
from millions.shards.storage.writes import change_record, write_statement

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 30.0
POOL_MAX = 8
T = TypeVar("T")

_UNAVAILABLE = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)
_ERRORS = (asyncpg.PostgresError, asyncpg.DataError, *_UNAVAILABLE)
_SYSTEM_SCHEMA = """
CREATE TABLE IF NOT EXISTS _millions_fence (
    id integer PRIMARY KEY CHECK (id = 1),
    ranges text NOT NULL,
    map_version bigint NOT NULL);
INSERT INTO _millions_fence (id, ranges, map_version) VALUES (1, '[]', 0)
    ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS _millions_changelog_seq (
    id integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL);
INSERT INTO _millions_changelog_seq (id, seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS _millions_changelog (
    seq bigint PRIMARY KEY,
    key_hash bigint NOT NULL,
    table_name text NOT NULL,
    op text NOT NULL,
    pk text NOT NULL,
    row_image text,
    at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS _millions_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS _millions_replication (
    origin text PRIMARY KEY,
    seq bigint NOT NULL,
    at double precision NOT NULL);
"""
_READ_FENCE = "SELECT ranges, map_version FROM _millions_fence WHERE id = 1"
_LOG_CHANGE = (
    "WITH next AS (UPDATE _millions_changelog_seq SET seq = seq + 1 WHERE id = 1 RETURNING seq)"
    " INSERT INTO _millions_changelog (seq, key_hash, table_name, op, pk, row_image, at)"
    " SELECT next.seq, $1, $2, $3, $4, $5, $6 FROM next RETURNING seq"
)
_CHANGES = "SELECT seq, key_hash, table_name, op, pk, row_image, at FROM _millions_changelog"
_LAST_SEQ = "SELECT seq FROM _millions_changelog_seq WHERE id = 1"
_REPLICA_POSITION = "SELECT seq FROM _millions_replication WHERE origin = $1"
_SET_REPLICA_POSITION = (
    "INSERT INTO _millions_replication (origin, seq, at) VALUES ($1, $2, $3)"
    " ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq, at = excluded.at"
)


def _plain(record: Any, skip: int = 0) -> Row:
    """A result row (without its first `skip` columns) with NUMERIC values (what
    PostgreSQL's sum() of integers returns) as int or float, so results (and cached
    results) look the same as on SQLite."""
    row = dict(islice(record.items(), skip, None)) if skip else dict(record)
    for column, value in row.items():
        if isinstance(value, Decimal):
            row[column] = int(value) if value == value.to_integral_value() else float(value)
    return row


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing to undo. The shard's SQL leaves no session state
    (advisory locks are transaction-level, no LISTEN, cursors only inside transactions; an
    open transaction is still rolled back by asyncpg), so asyncpg's default reset query
    (`RESET ALL`, `UNLISTEN *`, ...) would only cost every operation a second round trip."""


class PostgresShardStorage:
    """A `ShardStorage` in one PostgreSQL schema."""

    def __init__(self, location: ShardLocation) -> None:
        if location.engine != "postgres" or not location.url:
            raise ValueError(f"shard {location.name}: a postgres shard needs a database URL")
        self.location = location
        self.schema = check_identifier(location.schema, "shard schema")
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._fenced_reads: dict[str, str] = {}
        self.last_written_seq = 0

    @property
    def name(self) -> str:
        return self.location.name

    # -- the interface ---------------------------------------------------------------------

    async def migrate(self, schema: ShardSchema) -> list[int]:
        applied: list[int] = []

        async def migrate(pool: asyncpg.Pool) -> None:
            async with pool.acquire() as db:
                async with db.transaction():
                    await self._lock(db)
                    await db.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    await db.execute(_SYSTEM_SCHEMA)
                for migration in schema.migrations:
                    sql = migration.sql_for("postgres")
                    async with db.transaction():
                        await self._lock(db)
                        done = await db.fetchval(
                            "SELECT 1 FROM _millions_migrations WHERE version = $1",
                            migration.version,
                        )
                        if done:
                            continue
                        await db.execute(sql)
                        await db.execute(
                            "INSERT INTO _millions_migrations (version, name, applied_at)"
                            " VALUES ($1, $2, $3)",
                            migration.version,
                            migration.name,
                            time.time(),
                        )
                    applied.append(migration.version)

        await self._call(migrate)
        return applied

    async def applied_migrations(self) -> list[int]:
        rows = await self._call(
            lambda pool: pool.fetch("SELECT version FROM _millions_migrations ORDER BY version")
        )
        return [int(row["version"]) for row in rows]

    async def fence(self) -> Fence:
        row = await self._call(lambda pool: pool.fetchrow(_READ_FENCE))
        return self._parse_fence(row)

    async def set_fence(self, ranges: Sequence[KeyRange], version: int) -> None:
        text = Fence(tuple(ranges), version).ranges_text()
        await self._call(
            lambda pool: pool.execute(
                "UPDATE _millions_fence SET ranges = $1, map_version = $2 WHERE id = 1",
                text,
                version,
            )
        )

    async def write(
        self,
        writes: Sequence[RowWrite],
        *,
        fenced: bool = True,
        replica: ReplicaStep | None = None,
    ) -> list[Row | None]:
        prepared = [(w, *write_statement(w)) for w in writes]

        async def write(pool: asyncpg.Pool) -> list[Row | None]:
            images: list[Row | None] = []
            newest = 0
            async with pool.acquire() as db, db.transaction():
                if replica is not None:
                    await self._check_replica_step(db, replica)
                    for table in replica.clear:
                        await db.execute(f"DELETE FROM {statements.quote(table.name)}")
                elif fenced:
                    fence = self._parse_fence(await db.fetchrow(_READ_FENCE + " FOR SHARE"))
                    for item in writes:
                        if not fence.owns(item.keyspace_id):
                            raise StaleMapError(
                                self.name, fence.version, f"keyspace id {item.keyspace_id:#018x}"
                            )
                now = time.time()
                for item, sql, params in prepared:
                    try:
                        found = await db.fetch(sql, *params)
                    except asyncpg.UniqueViolationError as exc:
                        raise DuplicateRowError(item.table.name, str(exc)) from None
                    except asyncpg.IntegrityConstraintViolationError as exc:
                        raise QueryError(f"{item.table.name}: {exc}") from None
                    image: Row | None = dict(found[0]) if found else None
                    if image is not None:
                        newest = int(
                            await db.fetchval(_LOG_CHANGE, *change_record(item, image, now))
                        )
                    images.append(image)
                if replica is not None:
                    await db.execute(_SET_REPLICA_POSITION, replica.origin, replica.position, now)
            self.last_written_seq = max(self.last_written_seq, newest)
            return images

        return await self._call(write)

    async def fetch(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        keyspace_id: int | None = None,
        ranges: Sequence[KeyRange] = (),
        fenced: bool = True,
    ) -> list[Row]:
        if fenced and keyspace_id is not None and not ranges:
            return await self.read_owned(sql, tuple(params), keyspace_id)

        async def fetch(pool: asyncpg.Pool) -> list[Row]:
            async with pool.acquire() as db:
                if not fenced:
                    return [_plain(row) for row in await db.fetch(sql, *params)]
                fence = self._parse_fence(await db.fetchrow(_READ_FENCE))
                if keyspace_id is not None and not fence.owns(keyspace_id):
                    raise StaleMapError(
                        self.name, fence.version, f"keyspace id {keyspace_id:#018x}"
                    )
                if ranges and not fence.owns_all(ranges):
                    names = ", ".join(r.name for r in ranges)
                    raise StaleMapError(self.name, fence.version, f"all of {names}")
                return [_plain(row) for row in await db.fetch(sql, *params)]

        return await self._call(fetch)

    async def read_owned(self, sql: str, params: tuple[Any, ...], keyspace_id: int) -> list[Row]:
        """A single-key read: fence check and read in one statement (one round trip, one
        snapshot), in one coroutine."""
        query = self._fenced_reads.get(sql)
        if query is None:
            query = statements.fenced_read(sql, "postgres")
            if len(self._fenced_reads) < statements.CACHED_STATEMENTS:
                self._fenced_reads[sql] = query
        pool = self._pool
        try:
            if pool is None or self._closed:
                pool = await self._ready_pool()
            records = await pool.fetch(query, *params)
        except _ERRORS as exc:
            raise self._error(exc) from exc
        if not records:
            raise ShardError(f"shard {self.name} is not initialized; run the shard migrations")
        first = records[0]  # the fence's columns, then FOUND_COLUMN, then the read's own
        fence = fence_of(first[0], first[1])
        if not fence.owns(keyspace_id):
            raise StaleMapError(self.name, fence.version, f"keyspace id {keyspace_id:#018x}")
        if first[2] is None:
            return []
        return [_plain(record, skip=3) for record in records]

    async def changes_since(
        self, seq: int, key_range: KeyRange | None = None, *, limit: int = 1000
    ) -> list[Change]:
        where = "seq > $1"
        if key_range is not None:
            where += " AND " + statements.range_predicate(key_range)
        sql = f"{_CHANGES} WHERE {where} ORDER BY seq LIMIT {int(limit)}"
        rows = await self._call(lambda pool: pool.fetch(sql, seq))
        return [
            Change.from_record(
                r["seq"], r["key_hash"], r["table_name"], r["op"], r["pk"], r["row_image"], r["at"]
            )
            for r in rows
        ]

    async def last_seq(self) -> int:
        return int(await self._call(lambda pool: pool.fetchval(_LAST_SEQ)))

    async def replica_position(self, origin: str) -> int | None:
        found = await self._call(lambda pool: pool.fetchval(_REPLICA_POSITION, origin))
        return None if found is None else int(found)

    async def replica_progress(self, origin: str) -> tuple[int, float] | None:
        row = await self._call(
            lambda pool: pool.fetchrow(
                "SELECT seq, at FROM _millions_replication WHERE origin = $1", origin
            )
        )
        return None if row is None else (int(row["seq"]), float(row["at"]))

    async def scan(
        self, table: TableSpec, key_range: KeyRange, after: Sequence[Any] | None, limit: int
    ) -> list[Row]:
        sql = statements.scan(table, key_range, after=after is not None, limit=limit)
        rows = await self._call(lambda pool: pool.fetch(sql, *(after or ())))
        return [dict(row) for row in rows]

    async def count_range(self, table: TableSpec, key_range: KeyRange) -> int:
        sql = statements.count_in_range(table, key_range)
        return int(await self._call(lambda pool: pool.fetchval(sql)))

    async def digest(
        self, tables: Sequence[TableSpec], key_range: KeyRange
    ) -> tuple[int, dict[str, RangeDigest]]:
        async def digest(pool: asyncpg.Pool) -> tuple[int, dict[str, RangeDigest]]:
            async with (
                pool.acquire() as db,
                db.transaction(isolation="repeatable_read", readonly=True),
            ):
                seq = int(await db.fetchval(_LAST_SEQ))
                digests: dict[str, RangeDigest] = {}
                for table in tables:
                    current = digests[table.name] = RangeDigest()
                    sql = statements.select_range(table, key_range)
                    async for record in db.cursor(sql, prefetch=1000):
                        current.add(dict(record))
                return seq, digests

        return await self._call(digest)

    async def delete_range(self, table: TableSpec, key_range: KeyRange, limit: int) -> int:
        pk = ", ".join(statements.quote(c) for c in table.primary_key)
        name = statements.quote(table.name)
        sql = (
            f"DELETE FROM {name} WHERE ({pk}) IN (SELECT {pk} FROM {name}"
            f" WHERE {statements.range_predicate(key_range)} LIMIT {int(limit)})"
        )
        status: str = await self._call(lambda pool: pool.execute(sql))
        return int(status.rsplit(" ", 1)[-1])

    async def row_counts(self, tables: Sequence[TableSpec]) -> dict[str, int]:
        async def count(pool: asyncpg.Pool) -> dict[str, int]:
            return {
                t.name: int(await pool.fetchval(f"SELECT count(*) FROM {statements.quote(t.name)}"))
                for t in tables
            }

        return await self._call(count)

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    # -- plumbing --------------------------------------------------------------------------

    async def _check_replica_step(self, db: asyncpg.Connection, step: ReplicaStep) -> None:
        """Inside the write's transaction: the fence row `FOR SHARE` (a promotion's fence
        update waits for this apply, and applies after it see the new fence) and a lock on
        the copy's position for the origin (two appliers take turns, even before the
        position's row exists)."""
        fence = self._parse_fence(await db.fetchrow(_READ_FENCE + " FOR SHARE"))
        if fence.ranges:
            raise PromotedCopyError(self.name, fence.version)
        await db.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))",
            f"millions_replica:{self.schema}:{step.origin}",
        )
        found = await db.fetchval(_REPLICA_POSITION, step.origin)
        if (None if found is None else int(found)) != step.expected:
            raise ReplicationConflictError(
                f"shard copy {self.name}: position for {step.origin} is {found}, "
                f"not {step.expected}"
            )

    async def _lock(self, db: asyncpg.Connection) -> None:
        await db.execute(
            "SELECT pg_advisory_xact_lock(hashtext($1))", f"millions_shards:{self.schema}"
        )

    def _parse_fence(self, row: Any) -> Fence:
        if row is None:
            raise ShardError(f"shard {self.name} is not initialized; run the shard migrations")
        return fence_of(row["ranges"], int(row["map_version"]))

    async def _call(self, operation: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        try:
            return await operation(await self._ready_pool())
        except _ERRORS as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> ShardError:
        """What a driver error means to the router."""
        if isinstance(exc, asyncpg.DataError):  # a parameter of the wrong type, not sent
            return QueryError(f"shard {self.name}: {exc}")
        if isinstance(exc, asyncpg.UndefinedTableError):
            return ShardError(f"shard {self.name}: {exc}; run the shard migrations first")
        if isinstance(exc, _UNAVAILABLE):
            return ShardUnavailableError(f"shard {self.name}: {exc}")
        return QueryError(f"shard {self.name}: {exc}")

    async def _ready_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise ShardUnavailableError(f"shard {self.name} is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self.location.url,
                    min_size=1,
                    max_size=POOL_MAX,
                    timeout=CONNECT_TIMEOUT_S,
                    command_timeout=COMMAND_TIMEOUT_S,
                    server_settings={"search_path": self.schema},
                    reset=_keep_session,
                )
            return self._pool
