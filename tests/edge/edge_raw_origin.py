"""A raw asyncio origin for edge tests that need control over the wire: every byte it
receives is kept (`received`), every request it parses is recorded, and a handler
coroutine writes each response itself (pace, gates, cut-offs, reflected headers).

Requests are parsed with httptools, as a real server would; the raw bytes let a test look
for a smuggled request however the origin's parser would have read it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools


@dataclass
class RawRequest:
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


Handler = Callable[[RawRequest, asyncio.StreamWriter], Awaitable[None]]


def response_bytes(
    body: bytes, headers: tuple[tuple[bytes, bytes], ...] = (), status: bytes = b"200 OK"
) -> bytes:
    head = b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(body)
    for name, value in headers:
        head += name + b": " + value + b"\r\n"
    return head + b"\r\n" + body


async def cacheable_echo(request: RawRequest, writer: asyncio.StreamWriter) -> None:
    """200, cacheable, with the request line and header values in the body (a
    reflecting origin: what an unkeyed header would poison, if it could)."""
    lines = [request.method + b" " + request.target]
    lines += [name + b": " + value for name, value in request.headers]
    writer.write(response_bytes(b"\n".join(lines), ((b"Cache-Control", b"max-age=600"),)))
    await writer.drain()


@dataclass
class _Parsing:
    pending: list[RawRequest] = field(default_factory=list)
    parser: httptools.HttpRequestParser | None = None
    method: bytes = b""
    url: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        self.method = self.parser.get_method()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.pending.append(RawRequest(self.method, self.url, self.headers, b"".join(self.body)))
        self.url = b""
        self.headers = []
        self.body = []


class RawOrigin:
    """Listens on `host`; `handler` answers each parsed request (default: cacheable_echo)."""

    def __init__(self, host: str, handler: Handler = cacheable_echo) -> None:
        self.host = host
        self.handler = handler
        self.port = 0
        self.received = b""
        self.requests: list[RawRequest] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def count(self, target: bytes) -> int:
        return sum(1 for request in self.requests if request.target == target)

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for writer in list(self._writers):
                writer.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        parsing = _Parsing()
        parser = parsing.parser = httptools.HttpRequestParser(parsing)
        try:
            while data := await reader.read(65536):
                self.received += data
                try:
                    parser.feed_data(data)
                except httptools.HttpParserError:
                    return
                while parsing.pending:
                    request = parsing.pending.pop(0)
                    self.requests.append(request)
                    await self.handler(request, writer)
                    if writer.is_closing():
                        return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
