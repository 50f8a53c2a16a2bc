"""Helpers for edge-server tests: a scripted origin (aiohttp) and an edge on 127.0.80.x.

Tests are plain functions calling `run(coroutine)`, so each gets a fresh uvloop loop (what
production runs) and a hard time limit. The origin counts requests per path, records their
headers, answers If-None-Match itself when a route has an ETag, and can hold requests at a
gate (for coalescing) or drop connections (for origin errors).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvloop
from aiohttp import web
from multidict import CIMultiDict

from millions.edge.server import EdgeServer

T = TypeVar("T")
EDGE_HOST = "127.0.80.1"
ORIGIN_HOST = "127.0.80.2"


def run(coroutine: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coroutine

    return uvloop.run(bounded())


def free_port(host: str) -> int:
    """A port free on `host` right now (for a subprocess that must be told its port)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for(condition: Any, timeout_s: float = 5.0) -> None:
    """Poll `condition()` until true; fail after `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


@dataclass
class Route:
    """What the origin answers on one path (any method)."""

    body: bytes = b"hello"
    headers: list[tuple[str, str]] = field(default_factory=list)
    status: int = 200
    drop: bool = False  # close the connection instead of answering


@dataclass
class Seen:
    method: str
    path: str
    headers: CIMultiDict[str]


class Origin:
    """A counting origin server on `host` (ORIGIN_HOST unless told)."""

    def __init__(self, host: str = ORIGIN_HOST) -> None:
        self.host = host
        self.routes: dict[str, Route] = {}
        self.seen: list[Seen] = []
        self.gate: asyncio.Event | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    def count(self, path: str) -> int:
        return sum(1 for seen in self.seen if seen.path == path)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, self.port or 0)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(Seen(request.method, request.path_qs, CIMultiDict(request.headers)))
        if self.gate is not None:
            await self.gate.wait()
        route = self.routes.get(request.path_qs)
        if route is None:
            return web.Response(status=404, text="no route")
        if route.drop:
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        headers: CIMultiDict[str] = CIMultiDict(route.headers)
        etag = headers.get("ETag")
        if etag is not None and etag in request.headers.get("If-None-Match", ""):
            kept = CIMultiDict(
                (k, v) for k, v in headers.items() if k.lower() not in ("content-type",)
            )
            return web.Response(status=304, headers=kept)
        return web.Response(status=route.status, body=route.body, headers=headers)


@asynccontextmanager
async def edge_and_origin(
    max_bytes: int = 1 << 20,
    *,
    disk_bytes: int = 1 << 24,
    cache_dir: Path | None = None,
    edge_host: str = EDGE_HOST,
    origin_host: str = ORIGIN_HOST,
) -> AsyncIterator[tuple[EdgeServer, Origin, httpx.AsyncClient]]:
    origin = Origin(origin_host)
    await origin.start()
    edge = EdgeServer(
        f"http://{origin_host}:{origin.port}",
        (edge_host, 0),
        max_bytes,
        "edge-test",
        cache_dir=cache_dir,
        disk_bytes=disk_bytes,
    )
    await edge.start()
    client = httpx.AsyncClient(base_url=f"http://{edge_host}:{edge.port}", timeout=10.0)
    try:
        yield edge, origin, client
    finally:
        await client.aclose()
        await edge.stop(0.5)
        await origin.stop()
