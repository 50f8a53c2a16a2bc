"""Fetching whole responses from the origin into the edge (the miss and revalidation path).

The proxy core streams an upstream response straight to one client; a cache needs the
response as a value it can decide on, store and share with coalesced waiters. aiohttp's
client gives exactly that (keep-alive pool, raw header bytes, no decompression), so the
edge uses it here instead of hand-writing a second HTTP/1.1 client. The cache-hit path
never comes here.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from millions.edge.headers import Header

#: Request fields aiohttp would add on its own; the origin sees only what the client sent.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept-Encoding", "Accept", "Content-Type")


class OriginError(Exception):
    """The origin could not be reached or sent no usable response (connection refused,
    reset, timeout, malformed)."""


@dataclass(frozen=True, slots=True)
class OriginResponse:
    """A complete origin response: header names lower-cased, values as sent. Times are
    wall-clock seconds: `request_time` when the request left, `response_time` when the
    response head arrived (RFC 9111 §4.2.3)."""

    status: int
    headers: list[Header]
    body: bytes
    request_time: float
    response_time: float


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
        self, method: bytes, host: bytes, target: bytes, headers: Sequence[Header]
    ) -> OriginResponse:
        """Send one request without a body and read the whole response."""
        fields: CIMultiDict[str] = CIMultiDict()
        fields["Host"] = host.decode("latin-1")
        for name, value in headers:
            fields.add(name.decode("latin-1"), value.decode("latin-1"))
        request_time = time.time()
        try:
            async with self._client().request(
                method.decode("ascii"),
                URL(self.base + target.decode("latin-1"), encoded=True),
                headers=fields,
                allow_redirects=False,
                compress=None,
            ) as response:
                response_time = time.time()
                body = b"" if method == b"HEAD" else await response.read()
                return OriginResponse(
                    status=response.status,
                    headers=[(name.lower(), value) for name, value in response.raw_headers],
                    body=body,
                    request_time=request_time,
                    response_time=response_time,
                )
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            raise OriginError(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
