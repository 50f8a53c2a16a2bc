"""One request and its response: answered locally or forwarded upstream with retries.

The exchange is driven by callbacks from the client connection (request head and body
pieces) and from the upstream connection (response pieces); it never runs as a task,
because creating and scheduling a task per request would cost more than the rest of the
forwarding path. The parsed request lives in the exchange itself (one object per request).

Retry rules (RFC 9110 section 9.2.2): a failed connect never sent anything, so it is always
retried on another server. A connection that failed after the request was sent but before
any response byte arrived is retried only for an idempotent method whose body (if any) is
still fully held in memory. Nothing is retried once a response byte has arrived.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from millions.proxy.bodies import FileSender, ResponseStream
from millions.proxy.http11 import (
    CHUNKED_HEADER,
    CHUNKED_LINE,
    CLOSE_LINE,
    COLON_SP,
    CONNECTION_CLOSE,
    CONNECTION_KEEP_ALIVE,
    CONTINUE_100,
    CRLF,
    HEAD_END,
    IDEMPOTENT_METHODS,
    KEEP_ALIVE_LINE,
    LAST_CHUNK,
    chunk_size_line,
    content_length_line,
    local_response,
    status_line,
    status_start,
)
from millions.proxy.upstream import UpstreamConnection, UpstreamPool

if TYPE_CHECKING:
    from millions.proxy.server import HttpServerProtocol

log = logging.getLogger("millions.proxy")

#: Bodies of local responses at least this big are written beside their head, not joined.
GATHER_WRITE_BYTES = 32 * 1024

# exchange states
PARSING_HEAD = -1  # the request head is still being read
WAITING = 0  # parsed; not started (pipelined behind another) or not decided yet
FORWARDING = 1  # request going upstream, no response byte sent to the client yet
RESPONDING = 2  # response head sent to the client
DONE = 3

_SP = b" "
_VERSION_HOST = b" HTTP/1.1\r\nHost: "
_EMPTY: tuple[UpstreamPool, ...] = ()
_HEAD = b"HEAD"


class UpstreamPicker(Protocol):
    """Chooses the server for each attempt and hears how it went (the load balancer)."""

    def pick(self, tried: tuple[UpstreamPool, ...]) -> UpstreamPool | None:
        """A server not in `tried`, counted as busy until `done`; None if there is none."""
        ...

    def done(self, pool: UpstreamPool) -> None:
        """The attempt on `pool` ended (whatever the outcome)."""
        ...

    def failed(self, pool: UpstreamPool) -> None:
        """`pool` refused a connection or reset a fresh one: a sign the server is down."""
        ...


class RequestHandler(Protocol):
    """Decides what to do with each request once its head is parsed."""

    def handle(self, exchange: Exchange) -> None:
        """Call `exchange.respond(...)` or `exchange.forward(picker)`."""
        ...


class Exchange:
    """One request on a client connection and the response that answers it.

    Request fields (set by the strict parser): `method`, `target` (origin-form), `host`,
    `http11`, `keep_alive`, `content_length` (-1 when absent), `chunked`, `head_lines`
    (the end-to-end headers as a flat `[name, b": ", value, b"\\r\\n", ...]` list ready to
    be joined), `forwarded_for` (incoming X-Forwarded-For), `request_id` (a well-formed
    incoming X-Request-Id), `expect_continue`.
    """

    __slots__ = (
        "attempts",
        "body_complete",
        "body_pending",
        "body_pending_size",
        "body_retained",
        "body_retained_size",
        "body_seen",
        "chunked",
        "chunking",
        "client",
        "close_after",
        "conn",
        "connection_tokens",
        "content_length",
        "expect_continue",
        "forwarded_for",
        "head_lines",
        "host",
        "http11",
        "keep_alive",
        "method",
        "out",
        "picker",
        "pool",
        "request_id",
        "response_flushed",
        "response_head_hook",
        "sent_once",
        "stale_pool",
        "started",
        "state",
        "status",
        "target",
        "tried",
    )

    def __init__(self, client: HttpServerProtocol, target: bytes) -> None:
        self.client = client
        self.out = client.out  # one list per connection, emptied by every flush
        self.state = PARSING_HEAD
        # the request
        self.method = b""
        self.target = target
        self.http11 = True
        self.keep_alive = True
        self.host: bytes | None = None
        self.head_lines: list[bytes] = []
        self.content_length = -1
        self.chunked = False
        self.forwarded_for: bytes | None = None
        self.request_id: bytes | None = None
        self.expect_continue = False
        self.connection_tokens: list[bytes] | None = None
        # the request body
        self.body_complete = True
        self.body_pending: list[bytes] | None = None
        self.body_pending_size = 0
        self.body_retained: list[bytes] | None = None
        self.body_retained_size = 0
        self.sent_once = False
        # forwarding
        self.started = 0.0
        self.picker: UpstreamPicker | None = None
        self.pool: UpstreamPool | None = None
        self.conn: UpstreamConnection | None = None
        self.tried = _EMPTY
        self.stale_pool: UpstreamPool | None = None
        self.attempts = 0
        # the response
        self.status = 0
        self.chunking = False
        self.response_flushed = False  # some of the response has reached the client
        self.body_seen = False  # a response body byte arrived from the upstream
        self.close_after = False
        #: Called with the upstream's final status and header block (lines each preceded
        #: by CRLF); returns the block to pass on. The edge reads Location there to
        #: invalidate after unsafe methods and adds X-Cache and Via.
        self.response_head_hook: Callable[[int, bytes], bytes] | None = None

    def __repr__(self) -> str:
        return f"Exchange({self.method!r} {self.target!r}, state={self.state})"

    # -- the request ----------------------------------------------------------------------

    @property
    def has_body(self) -> bool:
        return self.chunked or self.content_length > 0

    @property
    def idempotent(self) -> bool:
        return self.method in IDEMPOTENT_METHODS

    @property
    def path(self) -> bytes:
        """The target without its query string."""
        return self.target.partition(b"?")[0]

    @property
    def client_ip(self) -> bytes:
        return self.client.client_ip

    def header(self, name: bytes) -> bytes | None:
        """The first end-to-end request header called `name` (any case), or None."""
        wanted = name.lower()
        lines = self.head_lines
        for index in range(0, len(lines), 4):
            if lines[index].lower() == wanted:
                return lines[index + 2]
        return None

    # -- decisions by the handler -----------------------------------------------------------

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
        *,
        close: bool = False,
        extra_headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        """Answer locally with a complete response."""
        if self.state == DONE:
            return
        if self.state == RESPONDING:  # a response is half sent: all we can do is cut it
            self._abort_client()
            return
        self._detach_upstream()
        close = close or not self.keep_alive or not self.body_complete or self.client.closing
        self.body_pending = None
        self.status = status
        self.close_after = close
        self.out.append(
            local_response(
                status,
                body,
                content_type,
                close=close,
                keep_alive_header=not self.http11,
                head_only=self.method == _HEAD,
                extra_headers=extra_headers,
            )
        )
        self.flush()
        self._finished(self.client.loop.time())

    def respond_composed(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Answer locally with header lines the caller composed (the edge answering from
        its cache). Content-Length and the connection fields are added here; a HEAD
        request gets the head only; 1xx, 204 and 304 never carry a body."""
        if self.state == DONE:
            return
        if self.state == RESPONDING:
            self._abort_client()
            return
        parts, sends_body = self._local_head(status, headers, len(body))
        if sends_body and len(body) >= GATHER_WRITE_BYTES:
            # head and body in one writev: joining them would copy the whole body once more
            self.flush()
            client = self.client
            if not client.closed:
                client.transport.writelines((b"".join(parts), body))  # type: ignore[union-attr]
                if self.state == RESPONDING:
                    self.response_flushed = True
        else:
            if sends_body:
                parts.append(body)
            self.out.append(b"".join(parts))
            self.flush()
        self._finished(self.client.loop.time())

    def respond_file(
        self,
        status: int,
        headers: Sequence[tuple[bytes, bytes]],
        file_fd: int,
        offset: int,
        length: int,
        done: Callable[[int], None],
    ) -> None:
        """Answer locally with `length` bytes of an open file from `offset` as the body,
        sent with os.sendfile (`FileSender`). Head as in `respond_composed`. `done(sent)`
        is called once when the file is no longer needed (the caller closes it there)."""
        if self.state != WAITING and self.state != FORWARDING:
            if self.state == RESPONDING:
                self._abort_client()
            done(0)
            return
        parts, sends_body = self._local_head(status, headers, length)
        self.out.append(b"".join(parts))
        self.state = RESPONDING
        self.flush()
        if not sends_body or length == 0 or self.client.closed:
            done(0)
            self._finished(self.client.loop.time())
            return
        FileSender(self, file_fd, offset, length, done).start()

    def respond_stream(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], length: int | None
    ) -> ResponseStream:
        """Answer locally with a body the caller writes to the returned stream as it
        arrives; `length` None frames it chunked (HTTP/1.1) or by closing (HTTP/1.0).
        For HEAD and bodiless statuses the response is complete at once (the stream is
        `gone` and ignores writes)."""
        if self.state != WAITING and self.state != FORWARDING:
            if self.state == RESPONDING:
                self._abort_client()
            return ResponseStream(self, False)
        parts, sends_body = self._local_head(status, headers, length)
        self.out.append(b"".join(parts))
        self.state = RESPONDING
        self.flush()
        stream = ResponseStream(self, sends_body and length is None and self.http11)
        if not sends_body or length == 0 or self.client.closed:
            self._finished(self.client.loop.time())
            return stream
        self.client.body_sender = stream
        return stream

    def _local_head(
        self, status: int, headers: Sequence[tuple[bytes, bytes]], length: int | None
    ) -> tuple[list[bytes], bool]:
        """The head of a local response as parts to join, and whether a body follows."""
        self._detach_upstream()
        close = not self.keep_alive or not self.body_complete or self.client.closing
        self.body_pending = None
        self.status = status
        parts = [status_line(status)]
        for name, value in headers:
            parts += (name, COLON_SP, value, CRLF)
        bodiless = status < 200 or status in (204, 304)
        if not bodiless:
            if length is not None:
                parts.append(content_length_line(length))
            elif self.http11:
                parts.append(CHUNKED_HEADER)
            elif self.method != _HEAD:
                close = True  # HTTP/1.0: the close delimits the body
        if close:
            parts.append(CONNECTION_CLOSE)
        elif not self.http11:
            parts.append(CONNECTION_KEEP_ALIVE)
        parts.append(CRLF)
        self.close_after = close
        return parts, not bodiless and self.method != _HEAD

    def body_sent(self) -> None:
        """A file or stream body was sent whole: the response is complete."""
        if self.state != DONE:
            self._finished(self.client.loop.time())

    def abort_response(self) -> None:
        """A file or stream body cannot be completed: cut the connection."""
        if self.state != DONE:
            self._abort_client()

    def forward(self, picker: UpstreamPicker) -> None:
        """Send the request upstream to a server the picker chooses."""
        self.picker = picker
        self.state = FORWARDING
        if self.expect_continue and not self.body_complete and self.http11:
            self.client.write(CONTINUE_100)
        self._attempt()

    # -- attempts -----------------------------------------------------------------------------

    def _attempt(self) -> None:
        picker = self.picker
        assert picker is not None
        pool = picker.pick(self.tried)
        if pool is not None:
            self.pool = pool
            self.attempts += 1
            idle = pool.idle
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    conn.reused = True
                    self._send(conn)
                    return
            pool.connect(self)
            return
        stale = self.stale_pool
        if stale is not None and not stale.closed:
            # the only server left failed on a pooled connection (perhaps one it had just
            # closed): one more try there, on a fresh connection
            self.stale_pool = None
            self.tried = tuple(p for p in self.tried if p is not stale)
            pool = picker.pick(self.tried)
            if pool is not None:
                self.pool = pool
                self.attempts += 1
                pool.connect(self)
                return
        if self.attempts == 0:
            self.respond(503, b"503 Service Unavailable: no healthy backend\n")
        else:
            self._fail(502)

    def _send(self, conn: UpstreamConnection) -> None:
        self.conn = conn
        conn.exchange = self  # start a request/response cycle on the connection
        conn.head_response = self.method == _HEAD
        conn.head_done = conn.complete = conn.got_bytes = False
        client = self.client
        forwarded = self.forwarded_for
        parts = [
            self.method,
            _SP,
            self.target,
            _VERSION_HOST,
            self.host or conn.pool.host_header,
            CRLF,
            *self.head_lines,
            client.xff_line if forwarded is None else client.forwarded_line(forwarded),
            self.request_id or client.id_prefix + b"%x" % next(client.id_counter),
            client.head_tail,
        ]
        if self.chunked:
            parts.append(CHUNKED_HEADER)
        elif self.content_length >= 0:
            parts.append(content_length_line(self.content_length))
        parts.append(CRLF)
        if self.sent_once:
            chunks = self.body_retained
        else:
            chunks = self.body_pending
            self.sent_once = True
        if chunks:
            parts += chunks
            self.body_pending = None
            self.body_pending_size = 0
        transport = conn.transport
        assert transport is not None
        transport.write(b"".join(parts))
        if self.body_complete:
            sent = self.started if self.attempts == 1 else client.loop.time()
            conn.deadline = sent + conn.pool.settings.response_timeout_s
        else:
            conn.deadline = 0.0
            client.resume_body()

    def upstream_connected(self, conn: UpstreamConnection) -> None:
        if self.state != FORWARDING or self.pool is not conn.pool:
            conn.pool.release(conn, self.client.loop.time())  # keep it for other requests
            return
        self._send(conn)

    def upstream_connect_failed(self, pool: UpstreamPool, exc: BaseException) -> None:
        if self.state != FORWARDING or self.pool is not pool:
            return
        log.debug("connect to %s failed: %s", pool.address, exc)
        picker = self.picker
        assert picker is not None
        picker.done(pool)
        picker.failed(pool)
        self.client.stats.passive_failures += 1
        self.pool = None
        self._retry_or_fail(pool, safe=True)

    def upstream_lost(self, conn: UpstreamConnection) -> None:
        """The connection closed or reset before the response was complete."""
        if self.state == DONE or self.conn is not conn:
            return
        pool = conn.pool
        self.conn = None
        self.pool = None
        picker = self.picker
        assert picker is not None
        picker.done(pool)
        replayable = self.method in IDEMPOTENT_METHODS and (
            not self.has_body or self.body_retained is not None
        )
        if conn.got_bytes:
            # A response had begun. While none of it reached the client (the head is held
            # until the first body byte), an idempotent request can still go elsewhere.
            if self.response_flushed or not replayable:
                self._fail(502)
                return
            self._discard_response()
        if not conn.reused or conn.got_bytes:
            picker.failed(pool)
            self.client.stats.passive_failures += 1
        elif self.stale_pool is None:
            self.stale_pool = pool
        self._retry_or_fail(pool, safe=replayable)

    def _discard_response(self) -> None:
        """Forget a response head that never left the proxy, to try another server."""
        self.out.clear()
        self.state = FORWARDING
        self.chunking = False
        self.body_seen = False
        self.close_after = False

    def upstream_broken(self, conn: UpstreamConnection) -> None:
        """The upstream sent something that is not a valid HTTP/1.1 response."""
        if self.state == DONE or self.conn is not conn:
            return
        self._end_attempt()
        self._fail(502)

    def upstream_timed_out(self, conn: UpstreamConnection) -> None:
        if self.state == DONE or self.conn is not conn:
            return
        self._end_attempt()
        self._fail(504)

    def _end_attempt(self) -> None:
        pool = self.pool
        if pool is not None and self.picker is not None:
            self.picker.done(pool)
        self.pool = None
        self.conn = None

    def _retry_or_fail(self, failed: UpstreamPool, safe: bool) -> None:
        if safe and self.attempts <= self.client.server.settings.retries:
            self.tried = (*self.tried, failed)
            self.client.stats.retries += 1
            self._attempt()
        else:
            self._fail(502)

    def _fail(self, status: int) -> None:
        if self.state == RESPONDING and not self.response_flushed:
            self._discard_response()
        if self.state == RESPONDING:
            self._abort_client()
        elif status == 504:
            self.respond(504, b"504 Gateway Timeout\n")
        else:
            self.respond(status, b"502 Bad Gateway\n")

    # -- request body (from the client connection) ----------------------------------------

    def begin_body(self) -> None:
        """The request has a body; pieces follow via request_body."""
        self.body_complete = False
        self.body_retained = []

    def request_body(self, data: bytes) -> None:
        if self.state == DONE:
            return
        if self.chunked:
            self._body_piece(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self._body_piece(data)

    def request_body_complete(self) -> None:
        if self.body_complete:
            return
        self.body_complete = True
        if self.state == DONE:
            return
        if self.chunked:
            self._body_piece(LAST_CHUNK)
        conn = self.conn
        if conn is not None:
            conn.deadline = self.client.loop.time() + conn.pool.settings.response_timeout_s

    def _body_piece(self, framed: bytes) -> None:
        settings = self.client.server.settings
        retained = self.body_retained
        if retained is not None:
            self.body_retained_size += len(framed)
            if self.body_retained_size > settings.retry_body_bytes:
                self.body_retained = None
            else:
                retained.append(framed)
        conn = self.conn
        if conn is not None:
            transport = conn.transport
            if transport is not None and not conn.closed:
                transport.write(framed)
            return
        pending = self.body_pending
        if pending is None:
            self.body_pending = pending = []
        pending.append(framed)
        self.body_pending_size += len(framed)
        if self.body_pending_size > settings.write_buffer_high:
            self.client.pause_body()

    def upstream_write_paused(self) -> None:
        self.client.pause_body()

    def upstream_write_resumed(self) -> None:
        self.client.resume_body()

    # -- response (from the upstream connection) ----------------------------------------

    def response_interim(self, status: int, block: bytes) -> None:
        """A 1xx response: passed on to HTTP/1.1 clients, dropped for HTTP/1.0. (100
        Continue was already answered by the proxy itself.)"""
        if self.http11 and status != 100:
            self.out += (status_start(status), block, HEAD_END)

    def response_head(self, status: int, block: bytes, delimited: bool) -> None:
        """The final response head: `block` holds its end-to-end header lines;
        `delimited` is False when the body runs until the upstream closes or is chunked
        (then it is re-chunked for HTTP/1.1 clients)."""
        hook = self.response_head_hook
        if hook is not None:
            block = hook(status, block)
        self.state = RESPONDING
        self.status = status
        close = not self.keep_alive or not self.body_complete or self.client.closing
        out = self.out
        out.append(status_start(status))
        out.append(block)
        if not delimited:
            if self.http11:
                out.append(CHUNKED_LINE)
                self.chunking = True
            else:
                close = True  # HTTP/1.0 client: the close delimits the body
        if close:
            out.append(CLOSE_LINE)
        elif not self.http11:
            out.append(KEEP_ALIVE_LINE)
        out.append(HEAD_END)
        self.close_after = close

    def response_body(self, data: bytes) -> None:
        self.body_seen = True
        if self.chunking:
            self.out += (chunk_size_line(len(data)), data, CRLF)
        else:
            self.out.append(data)

    def response_complete(self, now: float) -> None:
        """The upstream response ended: write what is left, count it, let the client
        connection go on (the hottest path: flush and _finished are inlined)."""
        if self.state == DONE:
            return
        out = self.out
        if self.chunking:
            out.append(LAST_CHUNK)
        client = self.client
        if out:
            if not client.closed:
                client.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
            out.clear()
        pool = self.pool
        if pool is not None:
            self.picker.done(pool)  # type: ignore[union-attr]
            self.pool = None
        self.conn = None
        self.state = DONE
        stats = client.stats  # ProxyStats.observe, inlined
        elapsed = now - self.started
        stats.responses[self.status // 100] += 1
        stats.latency_counts[bisect_left(stats.latency_bounds, elapsed)] += 1
        stats.latency_sum += elapsed
        client.exchange_finished(self, self.close_after, now)

    def flush(self) -> None:
        """Write what the last event produced to the client in one go."""
        out = self.out
        if out:
            client = self.client
            if not client.closed:
                client.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
                if self.state == RESPONDING:
                    self.response_flushed = True
            out.clear()

    # -- endings ------------------------------------------------------------------------------

    def _finished(self, now: float) -> None:
        self.state = DONE
        client = self.client
        client.stats.observe(self.status, now - self.started)
        client.exchange_finished(self, self.close_after, now)

    def _abort_client(self) -> None:
        """Cut a response that cannot be completed: the client sees a short body."""
        self.flush()
        self._detach_upstream()
        self.state = DONE
        self.client.abort()

    def _detach_upstream(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.exchange = None
            conn.close()
        self._end_attempt()

    def client_gone(self) -> None:
        """The client connection closed before the response was complete."""
        if self.state == DONE:
            return
        self.state = DONE
        self.out.clear()
        self._detach_upstream()
        self.client.stats.client_aborts += 1

    def pause_response(self) -> None:
        """The client's buffer is full: stop reading the upstream."""
        conn = self.conn
        if conn is not None:
            conn.pause_reading()

    def resume_response(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.resume_reading()
