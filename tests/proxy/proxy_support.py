"""Helpers for proxy-core tests: scripted upstreams and a proxy on 127.0.50.x, run on uvloop.

Tests are plain functions calling `run(coroutine)`, so every test gets a fresh uvloop loop
(what production runs) and a hard time limit.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import uvloop

from millions.proxy import Exchange, ProxyServer, ProxySettings, UpstreamPool

T = TypeVar("T")
PROXY_HOST = "127.0.50.1"
UPSTREAM_HOSTS = ("127.0.50.11", "127.0.50.12", "127.0.50.13")


def run(coroutine: Coroutine[Any, Any, T], timeout_s: float = 20.0) -> T:
    async def bounded() -> T:
        async with asyncio.timeout(timeout_s):
            return await coroutine

    return uvloop.run(bounded())


class RoundRobin:
    """A test picker over several pools: round-robin, skipping tried ones; records failures."""

    def __init__(self, pools: list[UpstreamPool]) -> None:
        self.pools = pools
        self.next = 0
        self.failed_pools: list[UpstreamPool] = []
        self.in_flight = 0

    def pick(self, tried: tuple[UpstreamPool, ...]) -> UpstreamPool | None:
        for offset in range(len(self.pools)):
            pool = self.pools[(self.next + offset) % len(self.pools)]
            if pool not in tried:
                self.next = (self.next + offset + 1) % len(self.pools)
                self.in_flight += 1
                return pool
        return None

    def done(self, pool: UpstreamPool) -> None:
        self.in_flight -= 1

    def failed(self, pool: UpstreamPool) -> None:
        self.failed_pools.append(pool)


class Forward:
    def __init__(self, picker: RoundRobin) -> None:
        self.picker = picker

    def handle(self, exchange: Exchange) -> None:
        exchange.forward(self.picker)


@dataclass
class Upstream:
    """A scripted upstream server. `handler(reader, writer, upstream)` serves one connection."""

    host: str
    port: int = 0
    server: asyncio.Server | None = None
    heads: list[bytes] = field(default_factory=list)
    complete: list[bytes] = field(default_factory=list)  # heads whose body arrived whole
    connections: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def read_request(self, reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
        """Read one request (head, body); None at EOF. Understands CL and chunked."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        self.heads.append(head)
        lower = head.lower()
        body = b""
        length = re.search(rb"\r\ncontent-length: *(\d+)", lower)
        if length:
            body = await reader.readexactly(int(length.group(1)))
        elif b"\r\ntransfer-encoding: chunked" in lower:
            pieces = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                pieces.append(await reader.readexactly(size))
                await reader.readexactly(2)
                if size == 0:
                    break
            body = b"".join(pieces)
        self.complete.append(head)
        return head, body


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Upstream], Awaitable[None]]


async def start_upstream(handler: Handler, host: str = UPSTREAM_HOSTS[0]) -> Upstream:
    upstream = Upstream(host)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream.connections += 1
        try:
            await handler(reader, writer, upstream)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    upstream.server = await asyncio.start_server(serve, host, 0)
    upstream.port = upstream.server.sockets[0].getsockname()[1]
    return upstream


def ok_response(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def keep_alive_ok(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: Upstream
) -> None:
    """Answer every request with 200 and the request head as body."""
    while (request := await upstream.read_request(reader)) is not None:
        head, body = request
        writer.write(ok_response(head + body))
        await writer.drain()


async def start_proxy(
    upstreams: list[Upstream] | list[str],
    settings: ProxySettings | None = None,
    host: str = PROXY_HOST,
) -> tuple[ProxyServer, RoundRobin]:
    loop = asyncio.get_running_loop()
    settings = settings or ProxySettings()
    picker_pools: list[UpstreamPool] = []
    proxy = ProxyServer(Forward(RoundRobin(picker_pools)), settings)
    for upstream in upstreams:
        address = upstream if isinstance(upstream, str) else upstream.address
        picker_pools.append(UpstreamPool(address, settings, proxy.deadlines, loop))
    await proxy.start(host, 0)
    handler = proxy.handler
    assert isinstance(handler, Forward)
    return proxy, handler.picker


async def raw_exchange(
    port: int, data: bytes, host: str = PROXY_HOST, wait_s: float = 3.0
) -> bytes:
    """Send `data`, half-close, read until the proxy closes."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    writer.write_eof()
    await writer.drain()
    try:
        async with asyncio.timeout(wait_s):
            return await reader.read(-1)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes], bytes]:
    """One response from a keep-alive connection (CL, chunked or until close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if status < 200 or status in (204, 304):
        return status, headers, b""
    if b"content-length" in headers:
        return status, headers, await reader.readexactly(int(headers[b"content-length"]))
    if headers.get(b"transfer-encoding") == b"chunked":
        pieces = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            pieces.append(await reader.readexactly(size))
            await reader.readexactly(2)
            if size == 0:
                return status, headers, b"".join(pieces)
    return status, headers, await reader.read(-1)


def request(path: str = "/", method: str = "GET", extra: str = "", body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}"
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body
