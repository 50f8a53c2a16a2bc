"""Fetching responses from the origin into the edge (the miss and revalidation path).

The proxy core streams an upstream response straight to one client; a cache needs the
response as a value it can decide on, store and share with coalesced waiters. aiohttp's
client gives exactly that (keep-alive pool, raw header bytes, no decompression), so the
edge uses it here instead of hand-writing a second HTTP/1.1 client. The cache-hit path
never comes here.

A small body is read whole (one value, the fast path). A body larger than `whole_up_to`
bytes, by its Content-Length or, without one, by reading that far, is left to the caller
to read in pieces (`OriginResponse.read_chunk`), so a large object never sits in memory
whole. aiohttp's stream reader pauses the socket when its buffer is full, so an origin
faster than the edge's disk and client is held back, not buffered.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from millions.edge.headers import Header

#: Request fields aiohttp would add on its own; the origin sees only what the client sent.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")

#: Largest piece `read_chunk` returns.
CHUNK_BYTES = 256 * 1024

_FAILURES = (TimeoutError, aiohttp.ClientError, OSError, ValueError)


class OriginError(Exception):
    """The origin could not be reached or sent no usable response (connection refused,
    reset, timeout, malformed, or a body cut short)."""


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
        "_response",
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
        stream: aiohttp.ClientResponse | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.request_time = request_time
        self.response_time = response_time
        self.length = length if stream is not None else len(body)
        self.complete = stream is None
        self._response = stream

    async def read_chunk(self) -> bytes:
        """The next piece of an unfinished body (at most `CHUNK_BYTES`); b"" at its end.
        OriginError if the origin fails or closes before the body is complete."""
        response = self._response
        if response is None:
            return b""
        try:
            data = await response.content.read(CHUNK_BYTES)
        except _FAILURES as exc:
            self.close()
            raise OriginError(f"body cut short: {type(exc).__name__}: {exc}") from exc
        if not data:
            self.complete = True
            self._response = None
            response.release()
        return data

    def close(self) -> None:
        response = self._response
        if response is not None:
            self._response = None
            response.close()

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


class OriginClient:
    """Keep-alive connections to one origin server."""

    def __init__(self, origin: str, *, connect_timeout_s: float, response_timeout_s: float):
        host, port = parse_origin(origin)
        self.base = f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"
        self.timeout = aiohttp.ClientTimeout(
            connect=connect_timeout_s, sock_read=response_timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=3.0),
                timeout=self.timeout,
                auto_decompress=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return session

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
        fields: CIMultiDict[str] = CIMultiDict()
        fields["Host"] = host.decode("latin-1")
        for name, value in headers:
            fields.add(name.decode("latin-1"), value.decode("latin-1"))
        request_time = time.time()
        response: aiohttp.ClientResponse | None = None
        try:
            response = await self._client().request(
                method.decode("ascii"),
                URL(self.base + target.decode("latin-1"), encoded=True),
                headers=fields,
                allow_redirects=False,
                compress=None,
            )
            response_time = time.time()
            status = response.status
            lines = [(name.lower(), value) for name, value in response.raw_headers]
            length = response.content_length
            if method == b"HEAD" or status < 200 or status in (204, 304):
                response.release()
                return OriginResponse(
                    status, lines, b"", request_time=request_time, response_time=response_time
                )
            if whole_up_to is None or (length is not None and length <= whole_up_to):
                body = await response.read()
                return OriginResponse(
                    status, lines, body, request_time=request_time, response_time=response_time
                )
            pieces: list[bytes] = []
            read = 0
            if length is None:  # unknown length: read up to the limit to see if it ends
                while read <= whole_up_to:
                    data = await response.content.read(CHUNK_BYTES)
                    if not data:
                        response.release()
                        return OriginResponse(
                            status,
                            lines,
                            b"".join(pieces),
                            request_time=request_time,
                            response_time=response_time,
                        )
                    pieces.append(data)
                    read += len(data)
            unfinished = OriginResponse(
                status,
                lines,
                b"".join(pieces),
                request_time=request_time,
                response_time=response_time,
                length=length,
                stream=response,
            )
            return unfinished  # the caller closes it
        except BaseException as exc:
            if response is not None:
                response.close()
            if isinstance(exc, _FAILURES):
                raise OriginError(f"{type(exc).__name__}: {exc}") from exc
            raise

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
