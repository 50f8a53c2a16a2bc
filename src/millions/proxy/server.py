"""The client side: an HTTP/1.1 server protocol with strict parsing, and its listener.

Parsing is httptools (llhttp) in its strict mode plus the checks llhttp leaves to the
application, so that no message is read in two ways by two parties (request smuggling):

* Content-Length together with Transfer-Encoding, duplicate Content-Length, a
  Transfer-Encoding other than exactly `chunked`, chunked with HTTP/1.0, obs-fold, bare
  CR or LF, control characters in fields, a bad request line or version, a missing or
  repeated Host (HTTP/1.1), userinfo in an absolute-form target, a head over
  `max_header_bytes`: answered `400` with `Connection: close`, after which the
  connection is closed.
* The forwarded request head is rebuilt from the parsed pieces (never copied), so lenient
  spots of llhttp (several spaces between request-line words, RFC 9112 section 3 allows
  that) cannot reach the upstream.

Requests on one connection are answered strictly in order; pipelined requests wait,
parsed, while reading is paused.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import cast

import httptools

from millions.proxy.bodies import FileSender, ResponseStream
from millions.proxy.deadlines import Deadlines
from millions.proxy.exchange import (
    DONE,
    FORWARDING,
    PARSING_HEAD,
    WAITING,
    Exchange,
    RequestHandler,
)
from millions.proxy.http11 import (
    COLON_SP,
    CONNECTION,
    CONTENT_LENGTH,
    CRLF,
    EXPECT,
    HOST,
    REQUEST_HEADERS,
    TRANSFER_ENCODING,
    X_FORWARDED_FOR,
    X_REQUEST_ID,
    RequestIds,
    connection_tokens,
    drop_named,
    is_chunked,
    local_response,
    valid_request_id,
)
from millions.proxy.settings import ProxySettings
from millions.proxy.stats import ProxyStats

log = logging.getLogger("millions.proxy.server")

# why client reading is paused (bit mask)
PAUSE_PIPELINE = 1  # parsed requests are waiting for the current response
PAUSE_BODY = 2  # the request body cannot be passed on fast enough
PAUSE_STOPPED = 4  # nothing more will be read (rejected or shutting down)

_VERSIONS = {"1.1": True, "1.0": False}
_REQUEST_ID_PREFIX = b"\r\nX-Request-Id: "


class RequestRejected(Exception):
    """Raised inside a parser callback: answer `status` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class HttpServerProtocol(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "body_sender",
        "client_ip",
        "closed",
        "closing",
        "current",
        "deadline",
        "handler",
        "head_size",
        "head_tail",
        "id_counter",
        "id_prefix",
        "lingering",
        "loop",
        "max_body",
        "max_head",
        "out",
        "parser",
        "parsing",
        "partial_head",
        "paused",
        "queue",
        "rejection",
        "server",
        "settings",
        "stats",
        "transport",
        "writing_paused",
        "xff_line",
    )

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.settings = server.settings
        self.stats = server.stats
        self.handler = server.handler
        self.loop = server.loop
        self.max_head = server.settings.max_header_bytes
        self.max_body = server.settings.max_body_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client_ip = b""
        self.xff_line = b""
        self.id_prefix = server.request_ids.prefix
        self.id_counter = server.request_ids.counter
        self.head_tail = server.head_tail
        self.out: list[bytes] = []
        #: The local body being sent (a file or a stream), told about flow and loss.
        self.body_sender: FileSender | ResponseStream | None = None
        self.current: Exchange | None = None
        self.parsing: Exchange | None = None
        self.queue: deque[Exchange] | None = None
        self.rejection: tuple[int, str] | None = None
        self.head_size = 0
        self.partial_head = 0
        self.paused = 0
        self.writing_paused = False
        self.closing = False
        self.closed = False
        self.lingering = False
        self.deadline = 0.0

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client_ip = peer[0].encode() if peer else b"unknown"
        self.xff_line = b"X-Forwarded-For: " + self.client_ip + _REQUEST_ID_PREFIX
        transport.set_write_buffer_limits(high=self.settings.write_buffer_high)
        self.server.connection_opened(self)
        self.deadline = self.loop.time() + self.settings.header_timeout_s

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connection_closed(self)
        sender = self.body_sender
        if sender is not None:
            sender.client_lost()
        current = self.current
        if current is not None:
            self.current = None
            current.client_gone()

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.rejection is not None:
            return  # after a 400 everything else is discarded
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade(data, upgrade.args[0])
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, RequestRejected):
                self._reject(cause.status, cause.reason)
            else:
                log.error("request handling failed", exc_info=cause or exc)
                self._reject(500, "internal error")
            return
        except httptools.HttpParserError as exc:
            self._reject(400, str(exc) or "malformed request")
            return
        parsing = self.parsing
        if parsing is not None and parsing.state == PARSING_HEAD:
            # a head still incomplete after this read: it must complete in time (slowloris)
            # and bound what httptools accumulates
            if not self.partial_head and self.current is None:
                self.deadline = self.loop.time() + self.settings.header_timeout_s
            self.partial_head += len(data)
            if self.partial_head > self.max_head + 4096:
                self._reject(400, "request head too large")

    def eof_received(self) -> bool | None:
        current = self.current
        if self.lingering or current is None or not current.body_complete:
            return None  # close: no request can complete any more
        # half-close after a complete request: still send its response, then close
        self.closing = True
        return True

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.deadline = self.loop.time() + self.settings.send_timeout_s
        if self.current is not None:
            self.current.pause_response()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.current is not None:
            self.deadline = 0.0
            self.current.resume_response()
            sender = self.body_sender
            if sender is not None:
                sender.client_resumed()
        else:
            self.deadline = self.loop.time() + self.settings.idle_timeout_s

    def deadline_expired(self) -> None:
        if self.lingering or self.writing_paused:
            self.abort()
            return
        self.close()

    # -- httptools callbacks --------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        exchange = self.parsing
        if exchange is None:  # the first callback of a request (no on_message_begin: cheaper)
            self.parsing = Exchange(self, url)
            self.head_size = len(url)
            self.partial_head = 0
        else:
            exchange.target += url
            self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.parsing
        if exchange is None or exchange.state != PARSING_HEAD:
            return  # trailer fields of a chunked body are not forwarded
        self.head_size += len(name) + len(value) + 4
        code = REQUEST_HEADERS.get(name.lower())
        if code is None:
            exchange.head_lines += (name, COLON_SP, value, CRLF)
        elif code == HOST:
            if exchange.host is not None:
                raise RequestRejected(400, "more than one Host header")
            exchange.host = value
        elif code == CONTENT_LENGTH:
            exchange.content_length = int(value)  # llhttp checked digits and duplicates
        elif code == TRANSFER_ENCODING:
            if not is_chunked(value):
                raise RequestRejected(400, "Transfer-Encoding other than chunked")
            exchange.chunked = True
        elif code == CONNECTION:  # (a list, even empty, also records that one was seen)
            exchange.connection_tokens = (exchange.connection_tokens or []) + connection_tokens(
                value
            )
        elif code == X_FORWARDED_FOR:
            previous = exchange.forwarded_for
            exchange.forwarded_for = value if previous is None else previous + b", " + value
        elif code == X_REQUEST_ID:
            if exchange.request_id is None and valid_request_id(value):
                exchange.request_id = value
        elif code == EXPECT:
            if value.strip().lower() != b"100-continue":
                raise RequestRejected(417, "unsupported expectation")
            exchange.expect_continue = True
        # X-Forwarded-Proto and hop-by-hop headers are dropped

    def on_headers_complete(self) -> None:
        exchange = self.parsing
        if exchange is None:  # a request line without a target cannot get here; be safe
            raise RequestRejected(400, "missing request target")
        parser = self.parser
        keep_alive = parser.should_keep_alive()
        if keep_alive and exchange.connection_tokens is None:
            # keep-alive without any Connection header: HTTP/1.1 (llhttp's strict mode
            # accepts only 0.9, 1.0, 1.1 and 2.0, and keeps 0.9/1.0/2.0 alive only when asked)
            http11 = True
        else:
            found = _VERSIONS.get(parser.get_http_version())
            if found is None:
                raise RequestRejected(400, "unsupported HTTP version")
            http11 = found
        exchange.http11 = http11
        exchange.keep_alive = keep_alive
        method: bytes = parser.get_method()
        exchange.method = method
        if self.head_size > self.max_head:
            raise RequestRejected(400, "request head too large")
        if method == b"CONNECT":
            raise RequestRejected(400, "CONNECT is not supported")
        if exchange.host is None and http11:
            raise RequestRejected(400, "missing Host header")
        has_body = exchange.chunked or exchange.content_length > 0
        if has_body:
            if exchange.chunked and not http11:
                raise RequestRejected(400, "chunked body in an HTTP/1.0 request")
            if exchange.content_length > self.max_body:
                raise RequestRejected(413, "request body too large")
            if parser.should_upgrade():
                raise RequestRejected(400, "upgrade request with a body")
        if exchange.target[0] != 47:  # not "/": asterisk or absolute form
            self._origin_form(exchange)
        if exchange.connection_tokens:
            exchange.head_lines = drop_named(exchange.head_lines, exchange.connection_tokens)
        exchange.state = WAITING
        exchange.started = now = self.loop.time()
        if has_body:
            exchange.begin_body()
        if self.current is None:
            if has_body:
                self.deadline = now + self.settings.body_timeout_s
            else:
                self.deadline = 0.0
            self.current = exchange
            self.handler.handle(exchange)
        else:
            queue = self.queue
            if queue is None:
                self.queue = queue = deque()
            queue.append(exchange)
            self._pause(PAUSE_PIPELINE)

    @staticmethod
    def _origin_form(request: Exchange) -> None:
        target = request.target
        if target == b"*":
            if request.method != b"OPTIONS":
                raise RequestRejected(400, "asterisk target outside OPTIONS")
            return
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            raise RequestRejected(400, "invalid request target") from None
        if url.schema not in (b"http", b"https") or not url.host:
            raise RequestRejected(400, "invalid request target")
        if url.userinfo:  # RFC 9110 section 4.2.4: an error (it obscures the authority)
            raise RequestRejected(400, "userinfo in request target")
        authority = url.host if url.port is None else b"%s:%d" % (url.host, url.port)
        request.host = authority  # RFC 9112 section 3.2.2: the target's authority wins
        path = url.path or b"/"
        request.target = path + b"?" + url.query if url.query else path

    def on_body(self, data: bytes) -> None:
        exchange = self.parsing
        if exchange is None:
            return
        if exchange is self.current:
            self.deadline = self.loop.time() + self.settings.body_timeout_s
        exchange.request_body(data)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is None:
            return
        self.parsing = None
        if exchange.body_complete:
            return  # no body: nothing changes
        exchange.request_body_complete()
        if exchange is self.current and exchange.state != DONE and not self.writing_paused:
            self.deadline = 0.0  # now the upstream's response timeout applies

    # -- request flow -----------------------------------------------------------------------

    def _after_upgrade(self, data: bytes, offset: int) -> None:
        """An `Upgrade` request was answered as a plain one (Upgrade is hop-by-hop and
        stripped); llhttp stops after it, so a fresh parser continues with the rest."""
        self.parser = httptools.HttpRequestParser(self)
        rest = data[offset:]
        if rest:
            self.data_received(rest)

    def _reject(self, status: int, reason: str) -> None:
        """A request could not be parsed: answer it in turn, then close."""
        self.stats.bad_requests += 1
        self._pause(PAUSE_STOPPED)
        parsing = self.parsing
        self.parsing = None
        if parsing is not None and parsing is self.current and parsing.state != PARSING_HEAD:
            # the body of the request in progress is broken: it cannot be completed
            self.rejection = (status, reason)
            if parsing.state == WAITING or parsing.state == FORWARDING:
                self.current = None
                parsing.client_gone()
                self._send_rejection()
            else:
                parsing.client_gone()
                self.abort()
            return
        if parsing is not None and self.queue and parsing in self.queue:
            self.queue.remove(parsing)
        self.rejection = (status, reason)
        if self.current is None:
            self._send_rejection()

    def _send_rejection(self) -> None:
        assert self.rejection is not None
        status, reason = self.rejection
        log.debug("rejected request from %s: %s", self.client_ip, reason)
        body = b"%d %s\n" % (status, reason.encode("ascii", "replace"))
        self.write(local_response(status, body, close=True))
        self._linger()

    def _linger(self) -> None:
        """Half-close and discard input for a moment so the client reads the response
        instead of getting a reset for unread data."""
        transport = self.transport
        if transport is None or self.closed:
            return
        self.lingering = True
        self.paused = 0
        transport.resume_reading()
        if transport.can_write_eof():
            transport.write_eof()
        self.deadline = self.loop.time() + self.settings.linger_s

    def exchange_finished(self, exchange: Exchange, close: bool, now: float) -> None:
        """The response to `exchange` is complete (written to the transport)."""
        if exchange is not self.current:
            return
        if self.paused & PAUSE_BODY:
            self._resume(PAUSE_BODY)
        if close or not exchange.body_complete:
            self.close()  # `exchange` stays `current`: see _handle_no_more
            return
        self.current = None
        queue = self.queue
        if queue:
            following = queue.popleft()
            if not queue:
                self._resume(PAUSE_PIPELINE)
            self.current = following
            if following.body_complete:
                self.deadline = 0.0
            else:
                self.deadline = now + self.settings.body_timeout_s
            self.handler.handle(following)
            return
        if self.rejection is not None:
            self._send_rejection()
            return
        if self.closing:
            self.current = exchange  # see _handle_no_more
            self.close()
            return
        if self.parsing is None:
            self.deadline = now + self.settings.idle_timeout_s
        else:
            self.deadline = now + self.settings.header_timeout_s

    def forwarded_line(self, previous: bytes | None) -> bytes:
        """`X-Forwarded-For: <chain>` and the start of the X-Request-Id line."""
        if previous is None:
            return self.xff_line
        return b"X-Forwarded-For: " + previous + b", " + self.client_ip + _REQUEST_ID_PREFIX

    # -- output and connection control ------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.closed:
            transport = self.transport
            assert transport is not None
            transport.write(data)

    def pause_body(self) -> None:
        self._pause(PAUSE_BODY)

    def resume_body(self) -> None:
        self._resume(PAUSE_BODY)

    def _pause(self, reason: int) -> None:
        if not self.paused and not self.closed and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if not self.paused & reason:
            return
        self.paused &= ~reason
        if not self.paused and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after everything written so far has been sent."""
        if not self.closed and self.transport is not None:
            self.closed = True
            self._handle_no_more()
            self.transport.close()

    def abort(self) -> None:
        """Close at once (a response that cannot be completed, a stuck client)."""
        if self.transport is not None:
            self.closed = True
            self._handle_no_more()
            self.transport.abort()

    def _handle_no_more(self) -> None:
        """Handle no request parsed from now on. A request answered at once inside
        `on_headers_complete` (a 400 from the handler, a cache hit with Connection: close)
        can close the connection while llhttp still parses the rest of the same read;
        with a finished exchange as `current` (the last one, kept by `exchange_finished`,
        or a placeholder), requests parsed there are queued, never handled. This costs
        nothing per request, unlike a `closed` check in `on_headers_complete`."""
        if self.current is None:
            finished = Exchange(self, b"")
            finished.state = DONE
            self.current = finished

    def shut_down(self) -> None:
        """Graceful stop: finish the request in progress, then close."""
        self.closing = True
        if self.current is None:
            self.close()


class ProxyServer:
    """A listening socket whose connections share one handler, settings and counters."""

    def __init__(
        self,
        handler: RequestHandler,
        settings: ProxySettings | None = None,
        stats: ProxyStats | None = None,
        deadlines: Deadlines | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self.handler = handler
        self.settings = settings or ProxySettings()
        self.stats = stats or ProxyStats()
        self.deadlines = deadlines or Deadlines(self.loop, self.settings.timer_resolution_s)
        self.request_ids = RequestIds()
        # what follows the request id in every forwarded head
        self.head_tail = b"\r\nX-Forwarded-Proto: " + self.settings.forwarded_proto + CRLF
        if self.settings.via:
            self.head_tail += b"Via: " + self.settings.via + CRLF
        self.connections: set[HttpServerProtocol] = set()
        self._server: asyncio.Server | None = None
        self._all_closed: asyncio.Event | None = None

    async def start(self, host: str, port: int, backlog: int = 4096) -> None:
        self._server = await self.loop.create_server(
            lambda: HttpServerProtocol(self), host, port, backlog=backlog, reuse_address=True
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def connection_opened(self, conn: HttpServerProtocol) -> None:
        self.connections.add(conn)
        self.deadlines.add(conn)
        self.stats.active_connections += 1

    def connection_closed(self, conn: HttpServerProtocol) -> None:
        if conn in self.connections:
            self.connections.discard(conn)
            self.stats.active_connections -= 1
        self.deadlines.discard(conn)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    def stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()

    async def shutdown(self, grace_s: float) -> None:
        """Stop accepting, let requests in progress finish (up to `grace_s`), close all."""
        self.stop_listening()
        self._all_closed = asyncio.Event()
        for conn in list(self.connections):
            conn.shut_down()
        if self.connections:
            try:
                async with asyncio.timeout(grace_s):
                    await self._all_closed.wait()
            except TimeoutError:
                log.warning("closing %d connections still busy", len(self.connections))
                for conn in list(self.connections):
                    conn.abort()
        if self._server is not None:
            await self._server.wait_closed()
