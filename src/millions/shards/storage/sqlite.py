"""A shard in one SQLite file, shared by every process that routes to it.

The file runs in WAL mode (readers never wait for the writer) with a busy timeout (a writer
waits its turn). Writes run in `BEGIN IMMEDIATE` transactions: the fence check, the row
write and the change-log append hold the database's single write lock together, so a fence
change (a cutover) is ordered strictly before or after each write, and change-log sequence
numbers (`AUTOINCREMENT`, never reused) grow in commit order.

Each storage object runs its operations on its own `SqliteWorker` thread, so the shards of
a scatter query are read in parallel.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

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
from millions.shards.schema import ShardSchema, TableSpec
from millions.shards.sqlite_worker import SqliteWorker, transaction
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

T = TypeVar("T")

_SYSTEM_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _millions_fence ("
    " id INTEGER PRIMARY KEY CHECK (id = 1),"
    " ranges TEXT NOT NULL,"
    " map_version INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO _millions_fence (id, ranges, map_version) VALUES (1, '[]', 0)",
    "CREATE TABLE IF NOT EXISTS _millions_changelog ("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " key_hash INTEGER NOT NULL,"
    " table_name TEXT NOT NULL,"
    " op TEXT NOT NULL,"
    " pk TEXT NOT NULL,"
    " row_image TEXT,"
    " at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _millions_migrations ("
    " version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " applied_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _millions_replication ("
    " origin TEXT PRIMARY KEY,"
    " seq INTEGER NOT NULL,"
    " at REAL NOT NULL)",
)
_READ_FENCE = "SELECT ranges, map_version FROM _millions_fence WHERE id = 1"
_SET_FENCE = "UPDATE _millions_fence SET ranges = ?, map_version = ? WHERE id = 1"
_LOG_CHANGE = (
    "INSERT INTO _millions_changelog (key_hash, table_name, op, pk, row_image, at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_CHANGES = "SELECT seq, key_hash, table_name, op, pk, row_image, at FROM _millions_changelog"
_LAST_SEQ = "SELECT coalesce(max(seq), 0) AS seq FROM _millions_changelog"
_REPLICA_POSITION = "SELECT seq FROM _millions_replication WHERE origin = ?"
_SET_REPLICA_POSITION = (
    "INSERT INTO _millions_replication (origin, seq, at) VALUES (?, ?, ?)"
    " ON CONFLICT (origin) DO UPDATE SET seq = excluded.seq, at = excluded.at"
)
_UNAVAILABLE = {
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_CANTOPEN",
    "SQLITE_FULL",
    "SQLITE_NOTADB",
    "SQLITE_CORRUPT",
    "SQLITE_READONLY",
    "SQLITE_PERM",
}


def split_statements(script: str) -> list[str]:
    """A script's statements, split where SQLite itself says a statement is complete."""
    found: list[str] = []
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\r\n;"):
                found.append(pending.strip())
            pending = ""
    if pending.strip(" \t\r\n;"):
        found.append(pending.strip().removesuffix(";"))
    return found


class SqliteShardStorage:
    """A `ShardStorage` in one SQLite file."""

    def __init__(self, location: ShardLocation) -> None:
        if location.engine != "sqlite" or not location.path:
            raise ValueError(f"shard {location.name}: a sqlite shard needs a file path")
        self.location = location
        self.path = Path(location.path)
        self._worker = SqliteWorker(self.path, f"shard-{location.name}", self._error)
        self._fenced_reads: dict[str, str] = {}
        self.last_written_seq = 0

    @property
    def name(self) -> str:
        return self.location.name

    # -- the interface ---------------------------------------------------------------------

    async def migrate(self, schema: ShardSchema) -> list[int]:
        def migrate(db: sqlite3.Connection) -> list[int]:
            transaction(db, lambda: [db.execute(s) for s in _SYSTEM_SCHEMA])
            applied: list[int] = []
            for migration in schema.migrations:
                script = split_statements(migration.sql_for("sqlite"))

                def apply(
                    version: int = migration.version,
                    name: str = migration.name,
                    script: list[str] = script,
                ) -> None:
                    done = db.execute(
                        "SELECT 1 FROM _millions_migrations WHERE version = ?", (version,)
                    ).fetchall()
                    if done:
                        return
                    for statement in script:
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO _millions_migrations (version, name, applied_at)"
                        " VALUES (?, ?, ?)",
                        (version, name, time.time()),
                    )
                    applied.append(version)

                transaction(db, apply)
            return applied

        return await self._run(migrate)

    async def applied_migrations(self) -> list[int]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT version FROM _millions_migrations ORDER BY version"
            ).fetchall()
        )
        return [int(row["version"]) for row in rows]

    async def fence(self) -> Fence:
        return await self._run(self._read_fence)

    async def set_fence(self, ranges: Sequence[KeyRange], version: int) -> None:
        text = Fence(tuple(ranges), version).ranges_text()

        def set_fence(db: sqlite3.Connection) -> None:
            transaction(db, lambda: db.execute(_SET_FENCE, (text, version)))

        await self._run(set_fence)

    async def write(
        self,
        writes: Sequence[RowWrite],
        *,
        fenced: bool = True,
        replica: ReplicaStep | None = None,
    ) -> list[Row | None]:
        prepared = [
            (w, statements.to_sqlite(sql), params)
            for w in writes
            for sql, params in [write_statement(w)]
        ]

        def write(db: sqlite3.Connection) -> list[Row | None]:
            def body() -> tuple[list[Row | None], int]:
                if replica is not None:
                    self._check_replica_step(db, replica)
                    for table in replica.clear:
                        db.execute(f"DELETE FROM {statements.quote(table.name)}")
                elif fenced:
                    fence = self._read_fence(db)
                    for item in writes:
                        if not fence.owns(item.keyspace_id):
                            raise StaleMapError(
                                self.name, fence.version, f"keyspace id {item.keyspace_id:#018x}"
                            )
                now = time.time()
                images: list[Row | None] = []
                newest = 0
                for item, sql, params in prepared:
                    try:
                        found = db.execute(sql, params).fetchall()
                    except sqlite3.IntegrityError as exc:
                        if "UNIQUE" in str(exc) or "PRIMARY KEY" in str(exc):
                            raise DuplicateRowError(item.table.name, str(exc)) from None
                        raise QueryError(f"{item.table.name}: {exc}") from None
                    image: Row | None = found[0] if found else None
                    if image is not None:
                        logged = db.execute(_LOG_CHANGE, change_record(item, image, now))
                        newest = logged.lastrowid or newest
                    images.append(image)
                if replica is not None:
                    db.execute(_SET_REPLICA_POSITION, (replica.origin, replica.position, now))
                return images, newest

            images, newest = transaction(db, body)
            self.last_written_seq = max(self.last_written_seq, newest)
            return images

        return await self._run(write)

    async def fetch(
        self,
        sql: str,
        params: Sequence[Any] = (),
        *,
        keyspace_id: int | None = None,
        ranges: Sequence[KeyRange] = (),
        fenced: bool = True,
    ) -> list[Row]:
        values = tuple(params)
        if fenced and keyspace_id is not None and not ranges:
            return await self.read_owned(sql, values, keyspace_id)
        query = statements.to_sqlite(sql)

        def fetch(db: sqlite3.Connection) -> list[Row]:
            def body() -> list[Row]:
                if not fenced:
                    unchecked: list[Row] = db.execute(query, values).fetchall()
                    return unchecked
                fence = self._read_fence(db)
                if keyspace_id is not None and not fence.owns(keyspace_id):
                    raise StaleMapError(
                        self.name, fence.version, f"keyspace id {keyspace_id:#018x}"
                    )
                if ranges and not fence.owns_all(ranges):
                    names = ", ".join(r.name for r in ranges)
                    raise StaleMapError(self.name, fence.version, f"all of {names}")
                rows: list[Row] = db.execute(query, values).fetchall()
                return rows

            return transaction(db, body, immediate=False)

        return await self._run(fetch)

    def read_owned(
        self, sql: str, params: tuple[Any, ...], keyspace_id: int
    ) -> Awaitable[list[Row]]:
        """A single-key read: fence check and read in one statement (one snapshot), run on
        the worker's thread in one call (no coroutine frames between the router and it)."""
        query = self._fenced_reads.get(sql)
        if query is None:
            query = statements.to_sqlite(statements.fenced_read(sql, "sqlite"))
            if len(self._fenced_reads) < statements.CACHED_STATEMENTS:
                self._fenced_reads[sql] = query
        return self._worker.submit(self._read_owned, query, params, keyspace_id)

    def _read_owned(
        self, db: sqlite3.Connection, query: str, params: tuple[Any, ...], keyspace_id: int
    ) -> list[Row]:
        found = statements.split_fenced_read(db.execute(query, params).fetchall())
        if found is None:
            raise self._uninitialized()
        fence = fence_of(found[0], found[1])
        if not fence.owns(keyspace_id):
            raise StaleMapError(self.name, fence.version, f"keyspace id {keyspace_id:#018x}")
        return found[2]

    async def changes_since(
        self, seq: int, key_range: KeyRange | None = None, *, limit: int = 1000
    ) -> list[Change]:
        where = "seq > ?"
        if key_range is not None:
            where += " AND " + statements.range_predicate(key_range)
        sql = f"{_CHANGES} WHERE {where} ORDER BY seq LIMIT {int(limit)}"
        rows = await self._run(lambda db: db.execute(sql, (seq,)).fetchall())
        return [
            Change.from_record(
                r["seq"], r["key_hash"], r["table_name"], r["op"], r["pk"], r["row_image"], r["at"]
            )
            for r in rows
        ]

    async def last_seq(self) -> int:
        rows = await self._run(lambda db: db.execute(_LAST_SEQ).fetchall())
        return int(rows[0]["seq"])

    async def replica_position(self, origin: str) -> int | None:
        rows = await self._run(lambda db: db.execute(_REPLICA_POSITION, (origin,)).fetchall())
        return int(rows[0]["seq"]) if rows else None

    async def replica_progress(self, origin: str) -> tuple[int, float] | None:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT seq, at FROM _millions_replication WHERE origin = ?", (origin,)
            ).fetchall()
        )
        return (int(rows[0]["seq"]), float(rows[0]["at"])) if rows else None

    async def scan(
        self, table: TableSpec, key_range: KeyRange, after: Sequence[Any] | None, limit: int
    ) -> list[Row]:
        sql = statements.to_sqlite(
            statements.scan(table, key_range, after=after is not None, limit=limit)
        )
        params = tuple(after or ())
        return await self._run(lambda db: db.execute(sql, params).fetchall())

    async def count_range(self, table: TableSpec, key_range: KeyRange) -> int:
        sql = statements.count_in_range(table, key_range)
        rows = await self._run(lambda db: db.execute(sql).fetchall())
        return int(next(iter(rows[0].values())))

    async def digest(
        self, tables: Sequence[TableSpec], key_range: KeyRange
    ) -> tuple[int, dict[str, RangeDigest]]:
        def digest(db: sqlite3.Connection) -> tuple[int, dict[str, RangeDigest]]:
            def body() -> tuple[int, dict[str, RangeDigest]]:
                seq = int(db.execute(_LAST_SEQ).fetchall()[0]["seq"])
                digests: dict[str, RangeDigest] = {}
                for table in tables:
                    current = digests[table.name] = RangeDigest()
                    for row in db.execute(statements.select_range(table, key_range)):
                        current.add(row)
                return seq, digests

            return transaction(db, body, immediate=False)

        return await self._run(digest)

    async def delete_range(self, table: TableSpec, key_range: KeyRange, limit: int) -> int:
        pk = ", ".join(statements.quote(c) for c in table.primary_key)
        name = statements.quote(table.name)
        sql = (
            f"DELETE FROM {name} WHERE ({pk}) IN (SELECT {pk} FROM {name}"
            f" WHERE {statements.range_predicate(key_range)} LIMIT {int(limit)})"
        )

        def delete(db: sqlite3.Connection) -> int:
            return transaction(db, lambda: db.execute(sql).rowcount)

        return await self._run(delete)

    async def row_counts(self, tables: Sequence[TableSpec]) -> dict[str, int]:
        def count(db: sqlite3.Connection) -> dict[str, int]:
            return {
                t.name: int(
                    db.execute(f"SELECT count(*) AS n FROM {statements.quote(t.name)}").fetchall()[
                        0
                    ]["n"]
                )
                for t in tables
            }

        return await self._run(count)

    async def close(self) -> None:
        await self._worker.close()

    # -- plumbing --------------------------------------------------------------------------

    def _check_replica_step(self, db: sqlite3.Connection, step: ReplicaStep) -> None:
        fence = self._read_fence(db)
        if fence.ranges:
            raise PromotedCopyError(self.name, fence.version)
        rows = db.execute(_REPLICA_POSITION, (step.origin,)).fetchall()
        found = int(rows[0]["seq"]) if rows else None
        if found != step.expected:
            raise ReplicationConflictError(
                f"shard copy {self.name}: position for {step.origin} is {found}, "
                f"not {step.expected}"
            )

    def _read_fence(self, db: sqlite3.Connection) -> Fence:
        rows = db.execute(_READ_FENCE).fetchall()
        if not rows:
            raise self._uninitialized()
        return fence_of(rows[0]["ranges"], int(rows[0]["map_version"]))

    def _uninitialized(self) -> ShardError:
        return ShardError(f"shard {self.name} is not initialized; run the shard migrations")

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        return await self._worker.submit(operation)

    def _error(self, exc: sqlite3.Error | OSError) -> ShardError:
        """What a sqlite3 or OS error on the shard's thread means to the router."""
        if self._worker.closed:
            return ShardUnavailableError(f"shard {self.name} ({self.path}) is closed")
        if isinstance(exc, OSError) or (
            getattr(exc, "sqlite_errorname", "") in _UNAVAILABLE
            or (isinstance(exc, sqlite3.OperationalError) and "unable to open" in str(exc))
        ):
            return ShardUnavailableError(f"shard {self.name} ({self.path}): {exc}")
        return QueryError(f"shard {self.name}: {exc}")
