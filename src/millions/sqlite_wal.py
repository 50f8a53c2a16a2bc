"""Switching a shared SQLite file to WAL mode when several processes open it at once.

SQLite answers `PRAGMA journal_mode = WAL` with "database is locked" at once, without
calling the busy handler, while another connection holds the lock the switch needs:
typically another process (a second web server, worker or router) making the same
switch on a new file at start-up. The remedy is to retry for a bounded time; every
SQLite engine of millions opens its files through these two functions.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

WAL_SWITCH_TIMEOUT_S = 10.0
_PRAGMA = "PRAGMA journal_mode = WAL"


def _retry_delays(timeout_s: float) -> Iterator[float]:
    """Growing pauses between attempts until `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while time.monotonic() < deadline:
        yield delay
        delay = min(delay * 2, 0.1)


def _lock_contention(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def enable_wal(db: sqlite3.Connection, timeout_s: float = WAL_SWITCH_TIMEOUT_S) -> None:
    """Put `db`'s file in WAL mode, waiting out other processes doing the same."""
    for delay in _retry_delays(timeout_s):
        try:
            db.execute(_PRAGMA).fetchall()
            return
        except sqlite3.OperationalError as exc:
            if not _lock_contention(exc):
                raise
            time.sleep(delay)
    db.execute(_PRAGMA).fetchall()  # the last try: its error, if any, is the caller's


async def enable_wal_async(
    execute: Callable[[str], Awaitable[Any]], timeout_s: float = WAL_SWITCH_TIMEOUT_S
) -> None:
    """`enable_wal` for an async driver (`execute` runs one statement, e.g. aiosqlite's
    `Connection.execute_fetchall`)."""
    for delay in _retry_delays(timeout_s):
        try:
            await execute(_PRAGMA)
            return
        except sqlite3.OperationalError as exc:
            if not _lock_contention(exc):
                raise
            await asyncio.sleep(delay)
    await execute(_PRAGMA)
