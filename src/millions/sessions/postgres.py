"""Sessions in PostgreSQL: one row per session in a table the store creates itself.

Expiry is an absolute `timestamptz` computed with the database's clock (`now()`), so web
servers whose clocks disagree still agree on which sessions are live. Expired rows are
invisible to `load`/`count` and deleted by `purge_expired`, which `save` also runs every
`purge_interval_s` (a minute) per process so the table does not grow without bound.

`CREATE TABLE IF NOT EXISTS` alone is not safe when several processes start at once
(two of them can both decide to create it and one fails on the catalog's unique index),
so creation runs under a transaction-scoped advisory lock named after the table.

The pool is opened on first use: the constructor is synchronous (`open_store`), and a
database that is down at start-up then only fails requests (503) until it is back.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from millions.sessions.base import SessionStoreError, check_ttl, decode_data, encode_data

DEFAULT_TABLE = "millions_sessions"
TIMEOUT_S = 5.0
POOL_MIN = 1
POOL_MAX = 10
PURGE_INTERVAL_S = 60.0
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)

T = TypeVar("T")


class PostgresSessionStore:
    """A `SessionStore` in a PostgreSQL table `(id, data, expires_at)`."""

    def __init__(
        self, url: str, table: str = DEFAULT_TABLE, *, purge_interval_s: float = PURGE_INTERVAL_S
    ) -> None:
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(f"table name must be a plain SQL identifier, got {table!r}")
        self.url = url
        self.table = table
        self.purge_interval_s = purge_interval_s
        name = f'"{table}"'
        self._create = (
            f"CREATE TABLE IF NOT EXISTS {name} ("
            " id text PRIMARY KEY,"
            " data text NOT NULL,"
            " expires_at timestamptz NOT NULL)",
            f'CREATE INDEX IF NOT EXISTS "{table}_expires_at" ON {name} (expires_at)',
        )
        self._load = f"SELECT data FROM {name} WHERE id = $1 AND expires_at > now()"
        self._save = (
            f"INSERT INTO {name} (id, data, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3))"
            " ON CONFLICT (id) DO UPDATE"
            " SET data = excluded.data, expires_at = excluded.expires_at"
        )
        self._touch = (
            f"UPDATE {name} SET expires_at = now() + make_interval(secs => $2)"
            " WHERE id = $1 AND expires_at > now()"
        )
        self._delete = f"DELETE FROM {name} WHERE id = $1"
        self._purge = f"DELETE FROM {name} WHERE expires_at <= now()"
        self._count = f"SELECT count(*) FROM {name} WHERE expires_at > now()"
        self._pool: asyncpg.Pool | None = None
        self._opening = asyncio.Lock()
        self._closed = False
        self._next_purge = time.monotonic() + purge_interval_s

    async def load(self, session_id: str) -> dict[str, Any] | None:
        stored = await self._call(lambda pool: pool.fetchval(self._load, session_id))
        return None if stored is None else decode_data(stored)

    async def save(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        encoded = encode_data(data)
        seconds = float(check_ttl(ttl_s))
        await self._call(lambda pool: pool.execute(self._save, session_id, encoded, seconds))
        if time.monotonic() >= self._next_purge:
            self._next_purge = time.monotonic() + self.purge_interval_s
            await self.purge_expired()

    async def touch(self, session_id: str, ttl_s: int) -> None:
        seconds = float(check_ttl(ttl_s))
        await self._call(lambda pool: pool.execute(self._touch, session_id, seconds))

    async def delete(self, session_id: str) -> None:
        await self._call(lambda pool: pool.execute(self._delete, session_id))

    async def purge_expired(self) -> int:
        status: str = await self._call(lambda pool: pool.execute(self._purge))
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"

    async def count(self) -> int:
        return int(await self._call(lambda pool: pool.fetchval(self._count)))

    async def close(self) -> None:
        self._closed = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def _call(self, operation: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        """Run one statement on a pooled connection; driver errors become SessionStoreError."""
        try:
            return await operation(await self._ready_pool())
        except _DRIVER_ERRORS as exc:
            raise SessionStoreError(f"postgres session store: {exc}") from exc

    async def _ready_pool(self) -> asyncpg.Pool:
        if self._closed:
            raise SessionStoreError("postgres session store is closed")
        if self._pool is not None:
            return self._pool
        async with self._opening:
            if self._pool is None:
                pool = await asyncpg.create_pool(
                    self.url,
                    min_size=POOL_MIN,
                    max_size=POOL_MAX,
                    timeout=TIMEOUT_S,
                    command_timeout=TIMEOUT_S,
                )
                try:
                    await self._create_table(pool)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
            return self._pool

    async def _create_table(self, pool: asyncpg.Pool) -> None:
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.table)
            for statement in self._create:
                await connection.execute(statement)
