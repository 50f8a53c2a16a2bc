"""Test harness for the reference app: lifespan, images, a toy load balancer, helpers.

The apps under test are wrapped in the real `millions.sessions` middleware, exactly as
`millions web` wraps them, with an SQLite session store in the test's directory.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import struct
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
from argon2 import PasswordHasher
from argon2.profiles import CHEAPEST
from PIL import Image
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from millions.sessions.middleware import SessionMiddleware
from millions.sessions.sqlite import SqliteSessionStore

COOKIE = "millions_session"
SESSION_SECRET = "test-secret-for-the-reference-app-suite"
BASE_URL = "http://testserver"
MAX_UPLOAD = 64 * 1024
CHEAP_HASHER = PasswordHasher.from_parameters(CHEAPEST)  # the suite stays fast
PASSWORD = "correct horse battery"


def with_sessions(app: ASGIApp, store: SqliteSessionStore) -> ASGIApp:
    """`app` behind the shared-session middleware, as a web server runs it."""
    return SessionMiddleware(app, store, SESSION_SECRET, cookie_name=COOKIE, ttl_s=1800)


async def me_with_cookie(client: httpx.AsyncClient, cookie_value: str) -> httpx.Response:
    """GET /api/me sending exactly this session cookie (the jar is not used)."""
    return await client.get("/api/me", headers={"cookie": f"{COOKIE}={cookie_value}"})


@asynccontextmanager
async def lifespan(app: ASGIApp, timeout_s: float = 10.0) -> AsyncIterator[dict[str, Any]]:
    """Run the app's ASGI lifespan around the block; yields the lifespan state."""
    state: dict[str, Any] = {}
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": state}

    async def run() -> None:
        await app(scope, inbox.get, outbox.put)

    task = asyncio.create_task(run())
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), timeout_s)
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield state
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        stopped = await asyncio.wait_for(outbox.get(), timeout_s)
        assert stopped["type"] == "lifespan.shutdown.complete", stopped
        await asyncio.wait_for(task, timeout_s)


def with_state(app: ASGIApp, state: dict[str, Any]) -> ASGIApp:
    """Give each request a copy of the lifespan state, as uvicorn does."""

    async def app_with_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return app_with_state


class RoundRobinTransport(httpx.AsyncBaseTransport):
    """A toy load balancer: each request goes to the next server in turn."""

    def __init__(self, servers: Sequence[ASGIApp], raise_app_exceptions: bool = True) -> None:
        self._transports = [
            httpx.ASGITransport(app=server, raise_app_exceptions=raise_app_exceptions)
            for server in servers
        ]
        self._next = itertools.cycle(self._transports)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._next).handle_async_request(request)


@asynccontextmanager
async def serve(
    apps: Sequence[ASGIApp], raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client for `apps` (already wrapped in session middleware), lifespans running."""
    async with AsyncExitStack() as stack:
        states = [await stack.enter_async_context(lifespan(app)) for app in apps]
        servers = [with_state(app, state) for app, state in zip(apps, states, strict=True)]
        transport = RoundRobinTransport(servers, raise_app_exceptions)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            yield client


def image_bytes(fmt: str, size: tuple[int, int] = (37, 23), mode: str = "RGB") -> bytes:
    """A small real image in `fmt` (JPEG, PNG, WEBP, GIF, ...)."""
    image = Image.new(mode, size, (200, 80, 20) if mode == "RGB" else 0)
    for x in range(0, size[0], 3):
        image.putpixel((x, x % size[1]), (10, 200, 90) if mode == "RGB" else 255)
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims `width`x`height` pixels (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", rows)
        + png_chunk(b"IEND", b"")
    )


async def sign_up(client: httpx.AsyncClient, username: str) -> dict[str, Any]:
    """Sign `username` up through the API (which also logs the client in)."""
    response = await client.post("/api/signup", json={"username": username, "password": PASSWORD})
    assert response.status_code == 201, response.text
    document: dict[str, Any] = response.json()
    return document


async def upload(
    client: httpx.AsyncClient, data: bytes, filename: str = "photo.jpg", title: str = ""
) -> httpx.Response:
    """POST /api/photos with `data` as the `photo` file."""
    return await client.post(
        "/api/photos",
        files={"photo": (filename, data, "application/octet-stream")},
        data={"title": title},
    )
