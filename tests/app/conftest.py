"""Fixtures for the reference app: web servers over a temporary data dir, a client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from app_harness import CHEAP_HASHER, MAX_UPLOAD, serve, with_sessions
from starlette.types import ASGIApp

from millions.app import create_app
from millions.sessions.sqlite import SqliteSessionStore


@pytest.fixture
async def make_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., ASGIApp]]:
    """Factory for a web server named `component`: the app over the test's data dir behind
    the session middleware, with its own store connection to the test's session file."""
    stores: list[SqliteSessionStore] = []

    def make(component: str = "web-test-1", max_upload_bytes: int = MAX_UPLOAD) -> ASGIApp:
        monkeypatch.setenv("MILLIONS_COMPONENT", component)
        app = create_app(tmp_path / "data", max_upload_bytes, password_hasher=CHEAP_HASHER)
        stores.append(SqliteSessionStore(tmp_path / "sessions.sqlite3"))
        return with_sessions(app, stores[-1])

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def client(make_app: Callable[..., ASGIApp]) -> AsyncIterator[httpx.AsyncClient]:
    async with serve([make_app()]) as http:
        yield http
