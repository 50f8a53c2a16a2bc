"""The embedded session store: one SQLite file shared by every web server process.

Several processes open the same file at once, so the database runs in WAL mode (readers
never wait for the writer), with a busy timeout (a writer waits its turn instead of
failing with "database is locked") and every operation is a single autocommitted
statement, so write locks are held for microseconds.

Each store owns one `sqlite3` connection confined to one worker thread and runs every
operation there as a single call (`run_in_executor`). aiosqlite does the same thing, but
costs several thread hand-offs per statement (execute, fetch, close the cursor); here a
load or save is exactly one hop and the SQL reads as plain synchronous code.

Expiry is an absolute unix time per row; rows past it are invisible to `load`/`count`
and deleted by `purge_expired`, which `save` also runs every `purge_interval_s` (a
minute) so the file does not grow without bound when nobody calls it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from millions.sessions.base import SessionStoreError, check_ttl, decode_data, encode_data
from millions.sqlite_wal import enable_wal

DEFAULT_FILE_NAME = "sessions.sqlite3"
BUSY_TIMEOUT_MS = 5000
PURGE_INTERVAL_S = 60.0

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS sessions ("
    " id TEXT PRIMARY KEY NOT NULL,"
    " data TEXT NOT NULL,"
    " expires_at REAL NOT NULL"
    ") WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions (expires_at)",
)
_LOAD = "SELECT data FROM sessions WHERE id = ? AND expires_at > ?"
_SAVE = (
    "INSERT INTO sessions (id, data, expires_at) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET data = excluded.data, expires_at = excluded.expires_at"
)
_TOUCH = "UPDATE sessions SET expires_at = ? WHERE id = ? AND expires_at > ?"
_DELETE = "DELETE FROM sessions WHERE id = ?"
_PURGE = "DELETE FROM sessions WHERE expires_at <= ?"
_COUNT = "SELECT count(*) FROM sessions WHERE expires_at > ?"

T = TypeVar("T")


def path_from_url(url: str, run_dir: Path) -> Path:
    """The database file named by `SessionsConfig.url` (empty: inside the run directory)."""
    if not url:
        return run_dir / DEFAULT_FILE_NAME
    if url.startswith("sqlite://"):
        url = url.removeprefix("sqlite://")
        if not url:
            raise ValueError("sqlite:// needs a file path, e.g. sqlite:///var/run/s.sqlite3")
    return Path(url)


class SqliteSessionStore:
    """A `SessionStore` in one SQLite file that many processes may share."""

    def __init__(self, path: str | Path, *, purge_interval_s: float = PURGE_INTERVAL_S) -> None:
        self.path = Path(path)
        self.purge_interval_s = purge_interval_s
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sessions-sqlite")
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._next_purge = time.time() + purge_interval_s

    async def load(self, session_id: str) -> dict[str, Any] | None:
        rows = await self._run(lambda db: db.execute(_LOAD, (session_id, time.time())).fetchall())
        return decode_data(rows[0][0]) if rows else None

    async def save(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        encoded = encode_data(data)
        check_ttl(ttl_s)

        def save(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(_SAVE, (session_id, encoded, now + ttl_s))
            if now >= self._next_purge:
                self._next_purge = now + self.purge_interval_s
                db.execute(_PURGE, (now,))

        await self._run(save)

    async def touch(self, session_id: str, ttl_s: int) -> None:
        check_ttl(ttl_s)

        def touch(db: sqlite3.Connection) -> None:
            now = time.time()
            db.execute(_TOUCH, (now + ttl_s, session_id, now))

        await self._run(touch)

    async def delete(self, session_id: str) -> None:
        await self._run(lambda db: db.execute(_DELETE, (session_id,)))

    async def purge_expired(self) -> int:
        return await self._run(lambda db: db.execute(_PURGE, (time.time(),)).rowcount)

    async def count(self) -> int:
        rows = await self._run(lambda db: db.execute(_COUNT, (time.time(),)).fetchall())
        return int(rows[0][0])

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=False)

    async def _run(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run one operation on the store's thread; driver errors become SessionStoreError."""
        if self._closed:
            raise SessionStoreError(f"sqlite session store {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._on_connection, operation
            )
        except (sqlite3.Error, OSError) as exc:
            raise SessionStoreError(f"sqlite session store {self.path}: {exc}") from exc

    def _on_connection(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        if self._connection is None:
            self._connection = self._connect()
        return operation(self._connection)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=True
        )
        try:
            # busy_timeout first: switching to WAL and creating the table must wait for
            # other processes doing the same at start-up rather than fail.
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            enable_wal(db)
            # NORMAL is durable across process crashes in WAL mode; only an OS crash or power
            # loss may drop the last commits, an acceptable price for sessions.
            db.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                db.execute(statement)
        except BaseException:
            db.close()
            raise
        return db

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
