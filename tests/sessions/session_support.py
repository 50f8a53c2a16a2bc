"""Test doubles and helpers for the sessions tests.

Service gating comes from tests/services.py.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import redis.asyncio
from starlette.types import ASGIApp, Message

from millions.sessions.base import SessionStore, SessionStoreError, check_ttl, encode_data
from millions.sessions.postgres import PostgresSessionStore
from millions.sessions.redis import RedisSessionStore
from millions.sessions.sqlite import SqliteSessionStore
from services import POSTGRES_URL, REDIS_URL
from services import require_service as require_service

ENGINE_NAMES = ("sqlite", "redis", "postgres")


@dataclass
class Engine:
    """One engine's store factory: every `open()` is another web server on the same data."""

    name: str
    factory: Callable[[], SessionStore]
    unreachable: Callable[[], SessionStore]
    purges_itself: bool
    opened: list[SessionStore] = field(default_factory=list)

    def open(self) -> SessionStore:
        store = self.factory()
        self.opened.append(store)
        return store


def make_engine(name: str, tmp_path: Path) -> Engine:
    if name == "sqlite":
        path = tmp_path / "sessions.sqlite3"
        return Engine(
            name,
            lambda: SqliteSessionStore(path),
            lambda: SqliteSessionStore(tmp_path),  # a directory cannot be opened
            purges_itself=False,
        )
    if name == "redis":
        prefix = f"millions-test:{uuid.uuid4().hex}:"
        return Engine(
            name,
            lambda: RedisSessionStore(REDIS_URL, prefix=prefix),
            lambda: RedisSessionStore("redis://127.0.0.1:1/0", prefix=prefix),
            purges_itself=True,
        )
    table = f"sessions_test_{uuid.uuid4().hex[:16]}"
    return Engine(
        name,
        lambda: PostgresSessionStore(POSTGRES_URL, table=table),
        lambda: PostgresSessionStore("postgresql://postgres@127.0.0.1:1/test", table=table),
        purges_itself=False,
    )


async def remove_backing_data(engine: Engine) -> None:
    for store in engine.opened:
        if isinstance(store, RedisSessionStore):
            client = redis.asyncio.Redis.from_url(REDIS_URL)
            try:
                keys = [key async for key in client.scan_iter(match=store.prefix + "*")]
                if keys:
                    await client.delete(*keys)
            finally:
                await client.aclose()
            return
        if isinstance(store, PostgresSessionStore):
            connection = await asyncpg.connect(POSTGRES_URL)
            try:
                await connection.execute(f'DROP TABLE IF EXISTS "{store.table}"')
            finally:
                await connection.close()
            return


class FakeClock:
    """A settable clock shared by a MemoryStore and the middleware."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryStore:
    """A SessionStore in a dict, on an injectable clock, for middleware tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.rows: dict[str, tuple[str, float]] = {}

    async def load(self, session_id: str) -> dict[str, Any] | None:
        row = self.rows.get(session_id)
        if row is None or row[1] <= self.clock():
            return None
        loaded: dict[str, Any] = json.loads(row[0])
        return loaded

    async def save(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        self.rows[session_id] = (encode_data(data), self.clock() + check_ttl(ttl_s))

    async def touch(self, session_id: str, ttl_s: int) -> None:
        row = self.rows.get(session_id)
        if row is not None and row[1] > self.clock():
            self.rows[session_id] = (row[0], self.clock() + check_ttl(ttl_s))

    async def delete(self, session_id: str) -> None:
        self.rows.pop(session_id, None)

    async def purge_expired(self) -> int:
        expired = [key for key, (_, expires) in self.rows.items() if expires <= self.clock()]
        for key in expired:
            del self.rows[key]
        return len(expired)

    async def count(self) -> int:
        return sum(1 for _, expires in self.rows.values() if expires > self.clock())

    async def close(self) -> None:
        self.rows.clear()


class RecordingStore:
    """Wraps a store and records every operation, in order, as (op, session_id)."""

    def __init__(self, inner: SessionStore, events: list[tuple[str, str]] | None = None) -> None:
        self.inner = inner
        self.events = events if events is not None else []

    def ops(self) -> list[str]:
        return [op for op, _ in self.events]

    async def load(self, session_id: str) -> dict[str, Any] | None:
        self.events.append(("load", session_id))
        return await self.inner.load(session_id)

    async def save(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        self.events.append(("save", session_id))
        await self.inner.save(session_id, data, ttl_s)

    async def touch(self, session_id: str, ttl_s: int) -> None:
        self.events.append(("touch", session_id))
        await self.inner.touch(session_id, ttl_s)

    async def delete(self, session_id: str) -> None:
        self.events.append(("delete", session_id))
        await self.inner.delete(session_id)

    async def purge_expired(self) -> int:
        return await self.inner.purge_expired()

    async def count(self) -> int:
        return await self.inner.count()

    async def close(self) -> None:
        await self.inner.close()


class DownStore:
    """A store whose backend is unreachable: every operation fails."""

    def __init__(self) -> None:
        self.calls = 0

    async def _fail(self) -> Any:
        self.calls += 1
        raise SessionStoreError("connection refused (test)")

    async def load(self, session_id: str) -> dict[str, Any] | None:
        return await self._fail()  # type: ignore[no-any-return]

    async def save(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        await self._fail()

    async def touch(self, session_id: str, ttl_s: int) -> None:
        await self._fail()

    async def delete(self, session_id: str) -> None:
        await self._fail()

    async def purge_expired(self) -> int:
        return await self._fail()  # type: ignore[no-any-return]

    async def count(self) -> int:
        return await self._fail()  # type: ignore[no-any-return]

    async def close(self) -> None:
        return None


async def call_asgi(
    app: ASGIApp,
    scope: dict[str, Any],
    receive_messages: list[Message] | None = None,
    on_send: Callable[[Message], None] | None = None,
) -> list[Message]:
    """Call an ASGI app directly with `scope`; returns every message it sent."""
    pending = list(receive_messages or [{"type": "http.request", "body": b""}])
    sent: list[Message] = []

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if on_send is not None:
            on_send(message)
        sent.append(message)

    await app(scope, receive, send)
    return sent


def http_scope(
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    scheme: str = "http",
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """(name, value, attributes with lower-cased names) of one Set-Cookie header."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attributes: dict[str, str] = {}
    for part in rest:
        key, _, attr_value = part.partition("=")
        attributes[key.lower()] = attr_value
    return name, value, attributes
