"""Connections to upstream servers and the keep-alive pool per server.

An `UpstreamConnection` parses responses with httptools' HttpResponseParser and hands the
pieces to the `Exchange` it is attached to; between requests it waits in its server's
`UpstreamPool`. Output to the client is collected during one `data_received` and written
once afterwards: one write per event instead of one per header block and body piece, which
is most of what a proxy spends in the kernel.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from millions.proxy.deadlines import Deadlines
from millions.proxy.http11 import CRLF, HEAD_END, has_content_length, scan_response_headers
from millions.proxy.settings import ProxySettings

if TYPE_CHECKING:
    from millions.proxy.exchange import Exchange

log = logging.getLogger("millions.proxy.upstream")

#: An upstream response head larger than this is treated as a broken response.
MAX_RESPONSE_HEAD = 64 * 1024


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive TCP connection to an upstream server.

    The response head is taken from the received bytes once llhttp has validated it, and
    scanned for the few header lines a proxy must act on (`scan_response_headers`): that
    is one regex pass instead of a Python callback per header line.
    """

    __slots__ = (
        "broken",
        "chunked",
        "closed",
        "complete",
        "deadline",
        "exchange",
        "got_bytes",
        "has_length",
        "head_data",
        "head_done",
        "head_offset",
        "head_pending",
        "head_response",
        "keep_alive",
        "parser",
        "pool",
        "reading_paused",
        "reused",
        "transport",
    )

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.deadline = 0.0
        self.closed = False
        self.reused = False
        self.reading_paused = False
        self.head_data = b""
        self.head_offset = 0
        self.head_pending = b""
        self.head_done = False
        self.head_response = False
        self.has_length = False
        self.chunked = False
        self.keep_alive = False
        self.complete = False
        self.broken = False
        self.got_bytes = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
            if self.transport is not None:
                self.transport.close()

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        transport.set_write_buffer_limits(high=self.pool.settings.write_buffer_high)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:  # an idle connection has nothing to say
            self.close()
            return
        self.got_bytes = True
        pool = self.pool
        now = pool.loop.time()
        self.deadline = now + pool.settings.response_timeout_s
        head_done = self.head_done
        if not head_done:
            pending = self.head_pending
            self.head_data = pending + data if pending else data
            self.head_offset = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.broken = True
        if not head_done:
            if not self.head_done:  # the head continues in the next read
                pending = self.head_data[self.head_offset :]
                if len(pending) > MAX_RESPONSE_HEAD:
                    self.broken = True
                self.head_pending = pending
            elif self.head_pending:
                self.head_pending = b""
            self.head_data = b""
        if self.broken:
            self.exchange = None
            self.close()
            exchange.upstream_broken(self)
        elif self.complete:
            self.exchange = None
            if self.keep_alive and exchange.body_complete and not self.closed:
                if self.head_response:  # the parser still waits for a body that never comes
                    self.parser = httptools.HttpResponseParser(self)
                if pool.closed or len(pool.idle) >= pool.settings.max_idle_per_upstream:
                    self.close()
                else:  # UpstreamPool.release, inlined
                    if self.reading_paused:
                        self.resume_reading()
                    self.deadline = now + pool.settings.upstream_idle_timeout_s
                    pool.idle.append(self)
            else:
                self.close()
            exchange.response_complete(now)  # writes what this read produced
        elif exchange.body_seen:
            exchange.flush()
        # else: only a response head so far; it is held back until the first body byte,
        # so a server that dies right after sending it can still be retried elsewhere

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost does the rest

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        if (
            self.head_done
            and not self.has_length
            and not self.chunked
            and not self.complete
            and not self.head_response
        ):
            # a response delimited by the connection close ends here
            exchange.response_complete(self.pool.loop.time())
        else:
            exchange.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_resumed()

    def deadline_expired(self) -> None:
        exchange = self.exchange
        if exchange is None:  # idle too long in the pool
            self.close()
            return
        self.exchange = None
        self.close()
        exchange.upstream_timed_out(self)

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    # -- httptools callbacks --------------------------------------------------------------

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None or self.head_done:
            self.broken = True
            return
        data = self.head_data
        start = self.head_offset
        while data.startswith(CRLF, start):  # empty lines before a status line
            start += 2
        end = data.find(HEAD_END, start)
        block, chunked, bad = scan_response_headers(data[data.find(CRLF, start) : end])
        parser = self.parser
        status: int = parser.get_status_code()
        if status < 200:
            self.head_offset = end + 4  # the final response follows
            if status == 101:
                self.broken = True
            else:
                exchange.response_interim(status, block)
            return
        self.head_done = True
        if bad:
            self.broken = True
            return
        self.chunked = chunked
        keep_alive = self.keep_alive = parser.should_keep_alive()
        if self.head_response or status == 204 or status == 304:
            delimited = True
        elif chunked:
            delimited = False
        else:
            # llhttp keeps a connection alive only when the body is delimited; otherwise
            # look for the Content-Length line (the body may run until the close)
            delimited = keep_alive or has_content_length(block)
        self.has_length = delimited and not chunked
        exchange.response_head(status, block, delimited)
        if self.head_response:
            self.complete = True

    def on_body(self, data: bytes) -> None:
        if self.complete:
            self.broken = True  # bytes after a HEAD response, or after the end
            return
        exchange = self.exchange
        if exchange is not None:
            if exchange.chunking:
                exchange.response_body(data)
            else:
                exchange.body_seen = True  # Exchange.response_body, inlined
                exchange.out.append(data)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True


class UpstreamPool:
    """Keep-alive connections to one upstream server (`host:port`)."""

    __slots__ = (
        "_connect_tasks",
        "address",
        "closed",
        "connections",
        "deadlines",
        "host",
        "host_header",
        "idle",
        "loop",
        "port",
        "settings",
    )

    def __init__(
        self,
        address: str,
        settings: ProxySettings,
        deadlines: Deadlines,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.host = host.strip("[]")
        self.port = int(port)
        self.host_header = address.encode()
        self.settings = settings
        self.deadlines = deadlines
        self.loop = loop
        self.idle: list[UpstreamConnection] = []
        self.connections: set[UpstreamConnection] = set()
        self.closed = False
        self._connect_tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"UpstreamPool({self.address!r}, idle={len(self.idle)})"

    def connect(self, exchange: Exchange) -> None:
        """Open a new connection; the exchange hears back via upstream_connected or
        upstream_connect_failed."""
        task = self.loop.create_task(self._connect(exchange))
        self._connect_tasks.add(task)
        task.add_done_callback(self._connect_tasks.discard)

    async def _connect(self, exchange: Exchange) -> None:
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                _, protocol = await self.loop.create_connection(
                    lambda: UpstreamConnection(self), self.host, self.port
                )
        except (OSError, TimeoutError) as exc:
            exchange.upstream_connect_failed(self, exc)
            return
        except asyncio.CancelledError:
            exchange.upstream_connect_failed(self, ConnectionAbortedError("pool closed"))
            raise
        conn = protocol
        self.connections.add(conn)
        self.deadlines.add(conn)
        if self.closed:
            conn.close()
            exchange.upstream_connect_failed(self, ConnectionError("pool closed"))
            return
        exchange.upstream_connected(conn)

    def release(self, conn: UpstreamConnection, now: float) -> None:
        """Put a connection whose response is complete back for reuse."""
        if self.closed or len(self.idle) >= self.settings.max_idle_per_upstream:
            conn.close()
            return
        if conn.reading_paused:
            conn.resume_reading()
        conn.deadline = now + self.settings.upstream_idle_timeout_s
        self.idle.append(conn)

    def forget(self, conn: UpstreamConnection) -> None:
        """A connection closed: drop every reference to it."""
        self.connections.discard(conn)
        self.deadlines.discard(conn)
        if self.idle and conn in self.idle:
            self.idle.remove(conn)

    def close(self) -> None:
        """Stop pooling and close every connection, busy ones included."""
        self.closed = True
        for task in list(self._connect_tasks):
            task.cancel()
        for conn in list(self.connections):
            conn.close()
        self.idle.clear()
