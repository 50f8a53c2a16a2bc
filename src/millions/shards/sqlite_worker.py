"""One `sqlite3` connection confined to one thread, shared by the SQLite shard and metadata
engines.

Each operation is a plain synchronous function of the connection, run on the worker's
thread in a single hop (`run_in_executor`). aiosqlite does the same, but costs several
thread hand-offs per statement; here an operation of any size is exactly one, the SQL
reads as ordinary synchronous code, and several workers (shards) run in parallel threads.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, Unpack

from millions.sqlite_wal import enable_wal

BUSY_TIMEOUT_MS = 10_000
T = TypeVar("T")
Args = TypeVarTuple("Args")


def dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


def transaction(db: sqlite3.Connection, body: Callable[[], T], *, immediate: bool = True) -> T:
    """Run `body` in a transaction (`BEGIN IMMEDIATE` takes the write lock up front)."""
    db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        result = body()
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


class SqliteWorker:
    """A WAL-mode connection to `path`, opened on first use on the worker's own thread.

    `errors` turns a sqlite3 or OS error raised on the thread (opening the connection
    included) into the exception the caller sees; without it they propagate as they are."""

    def __init__(
        self,
        path: Path,
        thread_name: str,
        errors: Callable[[sqlite3.Error | OSError], Exception] | None = None,
    ) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._connection: sqlite3.Connection | None = None
        self._errors = errors
        self.closed = False

    def submit(
        self, operation: Callable[[sqlite3.Connection, Unpack[Args]], T], *args: *Args
    ) -> asyncio.Future[T]:
        """Start `operation(connection, *args)`; the future holds its result. A plain
        function, not a coroutine: a read that awaits this future directly saves a frame."""
        if self.closed:
            closed = sqlite3.OperationalError(f"{self.path} is closed")
            raise closed if self._errors is None else self._errors(closed)
        return asyncio.get_running_loop().run_in_executor(
            self._executor, self._on_connection, operation, *args
        )

    async def run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run `operation` on the connection."""
        return await self.submit(operation)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=False)

    def _on_connection(
        self, operation: Callable[[sqlite3.Connection, Unpack[Args]], T], *args: *Args
    ) -> T:
        try:
            if self._connection is None:
                self._connection = self._connect()
            return operation(self._connection, *args)
        except (sqlite3.Error, OSError) as exc:
            if self._errors is None:
                raise
            raise self._errors(exc) from exc

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            # busy_timeout first: switching to WAL must wait for other processes doing the
            # same at start-up rather than fail.
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            enable_wal(db)
            # NORMAL is durable across process crashes in WAL mode; an OS crash may lose the
            # last commits (a shard's change log loses the same ones, consistently).
            db.execute("PRAGMA synchronous = NORMAL")
        except BaseException:
            db.close()
            raise
        db.row_factory = dict_row
        return db

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
