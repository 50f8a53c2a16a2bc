"""Fetching responses from the origin into the edge (the miss and revalidation path).

The proxy core streams an upstream response straight to one client; a cache needs the
response as a value it can decide on, store and share with coalesced waiters. This is a
small HTTP/1.1 client for exactly that: keep-alive connections to one origin, requests
without a body, responses parsed by httptools (llhttp, as the proxy core does), header
bytes as sent, no decompression. It is written here rather than taken from aiohttp because
aiohttp's client costs the edge process about 15 MB of resident memory before it caches
anything (the edge's memory budget is part of the issue's target), and the edge needs none
of what aiohttp adds (cookies, redirects, proxies, TLS, decompression).

A small body is read whole (one value, the fast path). A body larger than `whole_up_to`
bytes, by its Content-Length or, without one, by reading that far, is left to the caller to
read in pieces (`OriginResponse.read_chunk`), so a large object never sits in memory whole:
the connection stops reading from its socket while `PAUSE_AT_BYTES` wait unread, so an
origin faster than the edge's disk and client is held back, not buffered.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence
from types import TracebackType
from typing import cast
from urllib.parse import urlsplit

import httptools

from millions.edge.headers import Header

#: Largest piece `read_chunk` returns.
CHUNK_BYTES = 256 * 1024
#: A connection stops reading its socket while this much body waits unread.
PAUSE_AT_BYTES = 1024 * 1024
#: Connections to the origin at once (requests beyond wait for one to come back).
MAX_CONNECTIONS = 256
#: Idle connections are closed after this long (the origin may close them sooner).
KEEPALIVE_S = 3.0


class OriginError(Exception):
    """The origin could not be reached or sent no usable response (connection refused,
    reset, timeout, malformed, or a body cut short)."""


class _Dropped(OriginError):
    """A kept-alive connection closed before any of the response arrived: the origin
    closed it while idle, and the request is safe to send again on a new one."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection; it reads one response at a time (`begin`)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = 0.0
        self.reusable = False
        self._busy = False
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = False
        self._interim = False
        self._received = False
        self._status = 0
        self._headers: list[Header] = []
        self._delimited = False  # by Content-Length or chunked (else: by the connection's end)
        self._head: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._finished = False
        self._keep_alive = False
        self._error: OriginError | None = None
        self._waiter: asyncio.Future[None] | None = None

    # -- the client's side ---------------------------------------------------------------

    def begin(self, request: bytes, *, head_only: bool) -> asyncio.Future[None]:
        """Send `request`; the future resolves once the response head has arrived."""
        assert self.transport is not None and not self._busy
        self._busy = True
        self.reusable = False
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._interim = self._received = self._finished = self._paused = False
        self._keep_alive = False
        self._delimited = False
        self._status = 0
        self._headers = []
        self._chunks.clear()
        self._buffered = 0
        self._error = None
        self._head = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return self._head

    @property
    def status(self) -> int:
        return self._status

    @property
    def headers(self) -> list[Header]:
        return self._headers

    async def read(self, timeout_s: float) -> bytes:
        """The next piece of the body (at most `CHUNK_BYTES`); b"" at its end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._finished:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout_s):
                    await self._waiter
            except TimeoutError:
                raise OriginError(f"no body data from the origin for {timeout_s:g}s") from None
            finally:
                self._waiter = None
        data = self._chunks.popleft()
        if len(data) > CHUNK_BYTES:
            self._chunks.appendleft(data[CHUNK_BYTES:])
            data = data[:CHUNK_BYTES]
        self._buffered -= len(data)
        if self._paused and self._buffered < PAUSE_AT_BYTES // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def done(self) -> bool:
        """End this response's use of the connection: True when it can carry another."""
        self._busy = False
        keep = (
            self._finished
            and not self._chunks
            and self._error is None
            and not self._head_only  # llhttp would wait for the body a HEAD answer lacks
            and not self.lost
            and self._delimited
            and self._keep_alive
        )
        self.reusable = keep
        if not keep:
            self.close()
        return keep

    def close(self) -> None:
        self.reusable = False
        if self.transport is not None and not self.lost:
            self.transport.close()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self._busy or self._finished:  # bytes nobody asked for: not usable
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(OriginError("the origin switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(OriginError(f"malformed response from the origin: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.reusable = False
        if not self._busy or self._finished:
            return
        if self._head is not None and not self._head.done():
            if not self._received:
                self._fail(_Dropped("the origin closed the connection"))
            else:
                self._fail(OriginError("the origin closed the connection mid-response"))
        elif not self._delimited and not self._head_only:
            self._finish()  # a body without a length ends with its connection
        else:
            self._fail(OriginError("body cut short: the origin closed the connection"))

    def pause_writing(self) -> None:  # requests are small; nothing to hold back
        pass

    def resume_writing(self) -> None:
        pass

    # -- httptools callbacks -------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length" or (
            name == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._delimited = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200:  # an interim response (e.g. 103): wait for the final one
            self._interim = True
            self._headers = []
            self._delimited = False
            return
        self._status = status
        if self._head_only or status in (204, 304):
            self._delimited = True
            if self._head_only:
                self._finished = True
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self._finished:  # a body after a HEAD answer: ignored, the connection is closed
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= PAUSE_AT_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._keep_alive = self._parser.should_keep_alive()  # llhttp resets it right after
        self._finish()

    # -- plumbing ------------------------------------------------------------------------

    def _finish(self) -> None:
        self._finished = True
        if self._head is not None and not self._head.done():
            self._head.set_result(None)
        self._wake()

    def _fail(self, error: OriginError) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class OriginResponse:
    """An origin response: header names lower-cased, values as sent. Times are wall-clock
    seconds: `request_time` when the request left, `response_time` when the response head
    arrived (RFC 9111 §4.2.3).

    When `complete`, `body` is the whole body. Otherwise `body` holds what was read so far
    and the rest comes from `read_chunk()`; `length` is the Content-Length if the origin
    sent one. Close the response when done with it (it is an async context manager);
    closing an unfinished one closes its connection.
    """

    __slots__ = (
        "_client",
        "_connection",
        "body",
        "complete",
        "headers",
        "length",
        "request_time",
        "response_time",
        "status",
    )

    def __init__(
        self,
        status: int,
        headers: list[Header],
        body: bytes,
        *,
        request_time: float,
        response_time: float,
        length: int | None = None,
        stream: tuple[OriginClient, _Connection] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.request_time = request_time
        self.response_time = response_time
        self.length = length if stream is not None else len(body)
        self.complete = stream is None
        self._client: OriginClient | None = None
        self._connection: _Connection | None = None
        if stream is not None:
            self._client, self._connection = stream

    async def read_chunk(self) -> bytes:
        """The next piece of an unfinished body (at most `CHUNK_BYTES`); b"" at its end.
        OriginError if the origin fails or closes before the body is complete."""
        connection, client = self._connection, self._client
        if connection is None or client is None:
            return b""
        try:
            data = await connection.read(client.response_timeout_s)
        except OriginError:
            self.close()
            raise
        if not data:
            self.complete = True
            self._connection = self._client = None
            client.give_back(connection)
        return data

    def close(self) -> None:
        connection, client = self._connection, self._client
        if connection is not None and client is not None:
            self._connection = self._client = None
            connection.close()
            client.give_back(connection)

    async def __aenter__(self) -> OriginResponse:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def parse_origin(origin: str) -> tuple[str, int]:
    """`http://host:port` as (host, port); ValueError for anything else."""
    parts = urlsplit(origin)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"origin must look like http://host:port, not {origin!r}")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"origin must look like http://host:port, not {origin!r}")
    return parts.hostname, parts.port or 80


def _content_length(headers: Sequence[Header]) -> int | None:
    """The Content-Length llhttp accepted (it refuses malformed and conflicting ones)."""
    for name, value in headers:
        if name == b"content-length":
            return int(value)
    return None


class OriginClient:
    """Keep-alive connections to one origin server, at most `MAX_CONNECTIONS` at once."""

    def __init__(self, origin: str, *, connect_timeout_s: float, response_timeout_s: float):
        self.host, self.port = parse_origin(origin)
        self.base = (
            f"http://{self.host}:{self.port}"
            if ":" not in self.host
            else f"http://[{self.host}]:{self.port}"
        )
        self.connect_timeout_s = connect_timeout_s
        self.response_timeout_s = response_timeout_s
        self._idle: list[_Connection] = []
        self._in_use: set[_Connection] = set()
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._closed = False

    async def fetch(
        self,
        method: bytes,
        host: bytes,
        target: bytes,
        headers: Sequence[Header],
        *,
        whole_up_to: int | None = None,
    ) -> OriginResponse:
        """Send one request without a body. The body is read whole unless it is larger
        than `whole_up_to` bytes (None: always whole); then the response is unfinished."""
        request = b"".join(
            [
                method,
                b" ",
                target,
                b" HTTP/1.1\r\nHost: ",
                host,
                b"\r\n",
                *(b"%s: %s\r\n" % (name, value) for name, value in headers),
                b"\r\n",
            ]
        )
        head_only = method == b"HEAD"
        await self._slots.acquire()
        try:
            for attempt in range(2):
                connection = await self._connection(fresh=attempt > 0)
                request_time = time.time()
                try:
                    async with asyncio.timeout(self.response_timeout_s):
                        await connection.begin(request, head_only=head_only)
                except _Dropped:
                    self._discard(connection)
                    continue  # the origin closed a kept-alive connection: once more, anew
                except TimeoutError:
                    connection.close()
                    self._discard(connection)
                    raise OriginError(
                        f"no response from the origin within {self.response_timeout_s:g}s"
                    ) from None
                except BaseException:
                    connection.close()
                    self._discard(connection)
                    raise
                return await self._response(connection, request_time, whole_up_to)
            raise OriginError("the origin closed the connection before answering")
        except BaseException:
            self._slots.release()
            raise

    async def _response(
        self, connection: _Connection, request_time: float, whole_up_to: int | None
    ) -> OriginResponse:
        response_time = time.time()
        status, headers = connection.status, connection.headers
        length = _content_length(headers)
        try:
            pieces: list[bytes] = []
            read = 0
            whole = whole_up_to is None or (length is not None and length <= whole_up_to)
            while whole or length is None:
                data = await connection.read(self.response_timeout_s)
                if not data:
                    self.give_back(connection)
                    return OriginResponse(
                        status,
                        headers,
                        b"".join(pieces),
                        request_time=request_time,
                        response_time=response_time,
                    )
                pieces.append(data)
                read += len(data)
                if whole_up_to is not None and read > whole_up_to and not whole:
                    break  # unknown length, and past the limit: the caller streams the rest
            return OriginResponse(  # the caller reads the rest and closes it
                status,
                headers,
                b"".join(pieces),
                request_time=request_time,
                response_time=response_time,
                length=length,
                stream=(self, connection),
            )
        except BaseException:  # fetch frees the slot
            connection.close()
            self._discard(connection)
            raise

    def give_back(self, connection: _Connection) -> None:
        """A response is done with `connection`: keep it for the next request if it can
        carry one, and free the response's slot (once per response)."""
        if connection not in self._in_use:
            return
        self._in_use.discard(connection)
        if connection.done() and not self._closed:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        self._slots.release()

    def _discard(self, connection: _Connection) -> None:
        """`connection` failed before its response was handed out (the slot stays with
        the request)."""
        self._in_use.discard(connection)
        connection.done()

    async def _connection(self, *, fresh: bool) -> _Connection:
        if self._closed:
            raise OriginError("the origin client is closed")
        now = time.monotonic()
        while self._idle and not fresh:
            connection = self._idle.pop()
            if connection.reusable and now - connection.idle_since < KEEPALIVE_S:
                self._in_use.add(connection)
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                _, connection = await loop.create_connection(_Connection, self.host, self.port)
        except TimeoutError:
            raise OriginError(
                f"could not connect to the origin {self.base} within {self.connect_timeout_s:g}s"
            ) from None
        except OSError as exc:
            raise OriginError(f"could not connect to the origin {self.base}: {exc}") from exc
        self._in_use.add(connection)
        return connection

    async def close(self) -> None:
        self._closed = True
        for connection in [*self._idle, *self._in_use]:
            connection.close()
        self._idle.clear()
