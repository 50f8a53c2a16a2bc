"""The WAL switch every SQLite engine uses waits out a lock held by another connection,
where a bare `PRAGMA journal_mode = WAL` fails at once with "database is locked"."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import aiosqlite
import pytest

from millions.sqlite_wal import enable_wal, enable_wal_async

pytestmark = pytest.mark.timeout(30)


def locked_for(path: Path, seconds: float) -> threading.Thread:
    """Hold an exclusive lock on `path` for `seconds` in another thread, as another process
    switching the same new file would."""
    ready = threading.Event()

    def hold() -> None:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")
        ready.set()
        threading.Event().wait(seconds)
        holder.execute("COMMIT")
        holder.close()

    thread = threading.Thread(target=hold)
    thread.start()
    assert ready.wait(5)
    return thread


def test_a_bare_switch_fails_while_locked_and_enable_wal_waits(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    holder = locked_for(path, 0.3)
    db = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        db.execute("PRAGMA journal_mode = WAL")
    enable_wal(db)
    holder.join()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_the_async_switch_waits_too(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    holder = locked_for(path, 0.3)

    async def switch() -> str:
        async with aiosqlite.connect(path, timeout=0, isolation_level=None) as db:
            await enable_wal_async(db.execute_fetchall)
            rows = list(await db.execute_fetchall("PRAGMA journal_mode"))
            return str(rows[0][0])

    assert asyncio.run(switch()) == "wal"
    holder.join()


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "x.sqlite3")
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        enable_wal(db)
