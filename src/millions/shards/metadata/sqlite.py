"""The metadata store in one SQLite file (the embedded default).

Publishing a map is a conditional insert (`WHERE max(version) = version - 1`) under
SQLite's write lock, so two processes cannot both publish the same version. First-time
initialization is serialized across processes with an exclusive `flock` on a file beside
the database, held while each shard's fence is recorded and version 1 is published.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from millions.shards.errors import (
    MapConflictError,
    OperationError,
    ShardError,
    ShardUnavailableError,
)
from millions.shards.metadata.base import LOAD_REPORT_RETENTION_S, MapRecord
from millions.shards.shard_map import ShardMap
from millions.shards.sqlite_worker import SqliteWorker, transaction
from millions.shards.storage.base import ShardLocation
from millions.shards.workflow import Operation

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS _millions_maps ("
    " version INTEGER PRIMARY KEY, map TEXT NOT NULL, reason TEXT NOT NULL, at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _millions_shards ("
    " name TEXT PRIMARY KEY, location TEXT NOT NULL, registered_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _millions_sequences ("
    " name TEXT PRIMARY KEY, next_id INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _millions_operations ("
    " id TEXT PRIMARY KEY, active INTEGER UNIQUE, state TEXT NOT NULL,"
    " started_at REAL NOT NULL, updated_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _millions_load_reports ("
    " reporter TEXT PRIMARY KEY, at REAL NOT NULL, report TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS _millions_placements ("
    " version INTEGER PRIMARY KEY, placement TEXT NOT NULL, reason TEXT NOT NULL,"
    " at REAL NOT NULL)",
)


class SqliteMetadataStore:
    """A `MetadataStore` in one SQLite file shared by every process of the topology."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._worker = SqliteWorker(self.path, "shards-metadata")
        self._ready = False

    async def current_map(self) -> ShardMap | None:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT map FROM _millions_maps ORDER BY version DESC LIMIT 1"
            ).fetchall()
        )
        return ShardMap.from_json(rows[0]["map"]) if rows else None

    async def initialize(
        self, initial: ShardMap, prepare: Callable[[ShardMap], Awaitable[None]]
    ) -> ShardMap:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_file = await asyncio.to_thread(
            self._lock, self.path.with_name(self.path.name + ".lock")
        )
        try:
            current = await self.current_map()
            if current is not None:
                return current
            await prepare(initial)
            await self.publish(initial, "initial map")
            return initial
        finally:
            await asyncio.to_thread(self._unlock, lock_file)

    async def publish(self, new_map: ShardMap, reason: str) -> None:
        await self._publish_next(
            "_millions_maps", "map", new_map.version, new_map.to_json(), reason, "shard map"
        )

    async def history(self, limit: int = 20) -> list[MapRecord]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT version, at, reason FROM _millions_maps ORDER BY version DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [MapRecord(int(r["version"]), float(r["at"]), str(r["reason"])) for r in rows]

    async def locations(self) -> dict[str, ShardLocation]:
        rows = await self._run(
            lambda db: db.execute("SELECT location FROM _millions_shards ORDER BY name").fetchall()
        )
        found = [ShardLocation.from_dict(json.loads(r["location"])) for r in rows]
        return {location.name: location for location in found}

    async def register(self, location: ShardLocation) -> None:
        text = json.dumps(location.to_dict(), sort_keys=True)

        def register(db: sqlite3.Connection) -> str:
            def body() -> str:
                db.execute(
                    "INSERT INTO _millions_shards (name, location, registered_at) VALUES (?, ?, ?)"
                    " ON CONFLICT (name) DO NOTHING",
                    (location.name, text, time.time()),
                )
                rows = db.execute(
                    "SELECT location FROM _millions_shards WHERE name = ?", (location.name,)
                ).fetchall()
                return str(rows[0]["location"])

            return transaction(db, body)

        stored = await self._run(register)
        if json.loads(stored) != json.loads(text):
            existing = ShardLocation.from_dict(json.loads(stored))
            raise ShardError(
                f"shard {location.name} is registered at {existing.describe()}, "
                f"not {location.describe()}; keep its location or give it another name"
            )

    async def reserve_ids(self, sequence: str, count: int) -> int:
        if count < 1:
            raise ValueError("reserve at least one id")

        def reserve(db: sqlite3.Connection) -> int:
            return int(
                transaction(
                    db,
                    lambda: db.execute(
                        "INSERT INTO _millions_sequences (name, next_id) VALUES (?, 1 + ?)"
                        " ON CONFLICT (name) DO UPDATE SET next_id = next_id + ?"
                        " RETURNING next_id",
                        (sequence, count, count),
                    ).fetchall()[0]["next_id"],
                )
            )

        return await self._run(reserve) - count

    async def begin_operation(self, operation: Operation) -> None:
        def begin(db: sqlite3.Connection) -> None:
            transaction(
                db,
                lambda: db.execute(
                    "INSERT INTO _millions_operations (id, active, state, started_at, updated_at)"
                    " VALUES (?, 1, ?, ?, ?)",
                    (
                        operation.id,
                        operation.to_json(),
                        operation.started_at,
                        operation.updated_at,
                    ),
                ),
            )

        try:
            await self._run(begin)
        except sqlite3.IntegrityError:
            active = await self.active_operation()
            what = f"{active.kind} {active.key_range} ({active.phase})" if active else "another"
            raise OperationError(
                f"another resharding operation is active: {what}; "
                "finish it with cleanup (or reverse) first"
            ) from None

    async def save_operation(self, operation: Operation) -> None:
        def save(db: sqlite3.Connection) -> None:
            transaction(
                db,
                lambda: db.execute(
                    "UPDATE _millions_operations SET active = ?, state = ?, updated_at = ?"
                    " WHERE id = ?",
                    (
                        1 if operation.active else None,
                        operation.to_json(),
                        operation.updated_at,
                        operation.id,
                    ),
                ),
            )

        await self._run(save)

    async def claim_operation(self, operation: Operation, seen_updated_at: float) -> bool:
        def claim(db: sqlite3.Connection) -> int:
            return transaction(
                db,
                lambda: (
                    db.execute(
                        "UPDATE _millions_operations SET state = ?, updated_at = ?"
                        " WHERE id = ? AND updated_at = ? AND active = 1",
                        (operation.to_json(), operation.updated_at, operation.id, seen_updated_at),
                    ).rowcount
                ),
            )

        return await self._run(claim) == 1

    async def active_operation(self) -> Operation | None:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT state FROM _millions_operations WHERE active = 1"
            ).fetchall()
        )
        return Operation.from_json(rows[0]["state"]) if rows else None

    async def operations(self, limit: int = 10) -> list[Operation]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT state FROM _millions_operations ORDER BY started_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        )
        return [Operation.from_json(r["state"]) for r in rows]

    async def save_load_report(self, reporter: str, report: dict[str, Any], at: float) -> None:
        text = json.dumps(report, separators=(",", ":"))

        def save(db: sqlite3.Connection) -> None:
            def body() -> None:
                db.execute(
                    "INSERT INTO _millions_load_reports (reporter, at, report) VALUES (?, ?, ?)"
                    " ON CONFLICT (reporter) DO UPDATE SET at = excluded.at,"
                    " report = excluded.report",
                    (reporter, at, text),
                )
                db.execute(
                    "DELETE FROM _millions_load_reports WHERE at < ?",
                    (at - LOAD_REPORT_RETENTION_S,),
                )

            transaction(db, body)

        await self._run(save)

    async def load_reports(self, newer_than: float) -> list[dict[str, Any]]:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT report FROM _millions_load_reports WHERE at > ? ORDER BY reporter",
                (newer_than,),
            ).fetchall()
        )
        return [json.loads(r["report"]) for r in rows]

    async def current_placement(self) -> tuple[int, dict[str, Any]] | None:
        rows = await self._run(
            lambda db: db.execute(
                "SELECT version, placement FROM _millions_placements ORDER BY version DESC LIMIT 1"
            ).fetchall()
        )
        return (int(rows[0]["version"]), json.loads(rows[0]["placement"])) if rows else None

    async def publish_placement(self, version: int, record: dict[str, Any], reason: str) -> None:
        text = json.dumps(record, sort_keys=True)
        await self._publish_next(
            "_millions_placements", "placement", version, text, reason, "placement"
        )

    async def _publish_next(
        self, table: str, column: str, version: int, text: str, reason: str, what: str
    ) -> None:
        """Insert version `version` of a versioned record (the map, the placement) only if
        it follows the latest one; MapConflictError when another process got there first."""

        def publish(db: sqlite3.Connection) -> int:
            return transaction(
                db,
                lambda: (
                    db.execute(
                        f"INSERT INTO {table} (version, {column}, reason, at) SELECT ?, ?, ?, ?"
                        f" WHERE (SELECT coalesce(max(version), 0) FROM {table}) = ?",
                        (version, text, reason, time.time(), version - 1),
                    ).rowcount
                ),
            )

        try:
            inserted = await self._run(publish)
        except sqlite3.IntegrityError:
            inserted = 0
        if inserted != 1:
            raise MapConflictError(
                f"cannot publish {what} version {version}: the current version is not its "
                f"predecessor (another process changed the {what})"
            )

    async def close(self) -> None:
        await self._worker.close()

    # -- plumbing --------------------------------------------------------------------------

    @staticmethod
    def _lock(path: Path) -> Any:
        handle = path.open("a")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        except BaseException:
            handle.close()
            raise
        return handle

    @staticmethod
    def _unlock(handle: Any) -> None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        finally:
            handle.close()

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run on the store's thread; IntegrityError propagates, other errors are wrapped."""
        try:
            if not self._ready:
                await self._worker.run(
                    lambda db: transaction(db, lambda: [db.execute(s) for s in _SCHEMA])
                )
                self._ready = True
            return await self._worker.run(operation)
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise ShardUnavailableError(f"shard metadata store {self.path}: {exc}") from exc
