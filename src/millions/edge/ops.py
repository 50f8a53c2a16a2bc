"""The edge's ops listener: a minimal HTTP/1.1 server for /healthz, /metrics and /purge.

One request per connection (ops traffic is a scrape or a purge now and then), parsed by
httptools like every other HTTP the edge reads; request bodies are read up to a limit and
handed to the route whole. Written here rather than served by aiohttp's web server, which
costs the edge process several MB of resident memory for three routes (the load balancer
serves its ops routes without a framework too, through the proxy core, whose local
responses do not read request bodies).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import httptools

log = logging.getLogger("millions.edge.ops")

#: Longest request head the ops listener reads.
MAX_HEAD_BYTES = 16 * 1024
#: A connection that has not sent its whole request by then is closed.
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class OpsRequest:
    method: bytes
    path: bytes
    headers: Mapping[bytes, bytes]  # names lower-cased; a repeated field keeps its last value
    body: bytes


@dataclass(frozen=True)
class OpsResponse:
    status: int
    body: bytes
    content_type: bytes = b"text/plain; charset=utf-8"
    headers: tuple[tuple[bytes, bytes], ...] = ()


Route = Callable[[OpsRequest], Awaitable[OpsResponse]]


def text(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> OpsResponse:
    return OpsResponse(status, f"{status} {message}\n".encode(), headers=headers)


class OpsRoutes:
    """Routes by (method, path); HEAD is answered by a GET route without its body."""

    def __init__(self, routes: Mapping[tuple[bytes, bytes], Route], max_body_bytes: int):
        self.routes = dict(routes)
        self.max_body_bytes = max_body_bytes

    async def respond(self, request: OpsRequest) -> OpsResponse:
        method = b"GET" if request.method == b"HEAD" else request.method
        route = self.routes.get((method, request.path))
        if route is not None:
            return await route(request)
        allowed = sorted(m for m, p in self.routes if p == request.path)
        if allowed:
            allow = b", ".join(allowed)
            return text(405, "Method Not Allowed", ((b"Allow", allow),))
        return text(404, "Not Found")


class _OpsConnection(asyncio.Protocol):
    """Reads one request, answers it, closes."""

    def __init__(self, routes: OpsRoutes) -> None:
        self.routes = routes
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: dict[bytes, bytes] = {}
        self.body: list[bytes] = []
        self.body_bytes = 0
        self.head_bytes = 0
        self.answered = False
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT_S, self._timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.answered = True

    def data_received(self, data: bytes) -> None:
        if self.answered:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._answer(text(400, "Bad Request"))
        except httptools.HttpParserError as exc:
            self._answer(text(400, f"Bad Request: {exc}"))

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value
        self._count_head(len(name) + len(value))

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.routes.max_body_bytes:
            self._answer(text(413, "Content Too Large"))
            raise httptools.HttpParserError("body too large")  # stops the parser
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.answered:
            return
        if self.timer is not None:
            self.timer.cancel()
        method = self.parser.get_method()
        path = httptools.parse_url(self.url).path or b"/"
        request = OpsRequest(method, path, self.headers, b"".join(self.body))
        task = asyncio.get_running_loop().create_task(self.routes.respond(request))
        task.add_done_callback(self._route_done)
        self.answered = True  # no second request on this connection

    # plumbing

    def _count_head(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self._answer(text(431, "Request Header Fields Too Large"))
            raise httptools.HttpParserError("head too large")

    def _route_done(self, task: asyncio.Task[OpsResponse]) -> None:
        if task.cancelled():
            self._write(text(503, "Service Unavailable"), head_only=False)
            return
        error = task.exception()
        if error is not None:
            log.error("ops request failed", exc_info=error)
            self._write(text(500, "Internal Server Error"), head_only=False)
            return
        self._write(task.result(), head_only=self.parser.get_method() == b"HEAD")

    def _answer(self, response: OpsResponse) -> None:
        if not self.answered:
            self.answered = True
            self._write(response, head_only=False)

    def _write(self, response: OpsResponse, *, head_only: bool) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        reason = HTTPStatus(response.status).phrase.encode()
        lines = [
            b"HTTP/1.1 %d %s" % (response.status, reason),
            b"Content-Type: " + response.content_type,
            b"Content-Length: %d" % len(response.body),
            b"Connection: close",
            *(name + b": " + value for name, value in response.headers),
        ]
        transport.write(b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else response.body))
        transport.close()

    def _timed_out(self) -> None:
        if not self.answered:
            self._answer(text(408, "Request Timeout"))
        elif self.transport is not None:
            self.transport.close()


class OpsServer:
    """The listener: `start` binds it, `close` stops it and its connections."""

    def __init__(self, routes: OpsRoutes) -> None:
        self.routes = routes
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _OpsConnection(self.routes), host, port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
