"""Local response bodies that are not bytes in memory: a file region and a written stream.

`FileSender` sends a region of an open file (the edge's disk tier) with `os.sendfile`:
the kernel copies from the page cache to the socket, no byte passes through Python.
uvloop (0.23) does not implement `loop.sendfile` (its `Loop` inherits the
`AbstractEventLoop` method, which raises NotImplementedError), and both uvloop and
asyncio refuse `add_writer` on a file descriptor a transport owns. So the sender:

* starts only when the transport's write buffer is empty (the response head is written
  through the transport first; if it is still queued, the sender waits), so bytes keep
  their order: nothing else writes to the connection until the response is complete
  (the connection answers in order and the exchange stays `current` meanwhile);
* calls non-blocking `os.sendfile` on a duplicate of the socket's descriptor and, on
  EAGAIN, waits for writability with `add_writer` on that duplicate (same socket,
  another descriptor number: the transport's own registration is untouched);
* yields to the loop after `SEND_BUDGET_BYTES` per wake-up, so one fast client cannot
  starve the others;
* closes the duplicate when done, failed, or when the client goes away (the transport
  closing does not close the socket while the duplicate is open, so it must be closed
  promptly: `client_lost`). `remove_writer` comes first: libuv's `uv_poll_stop` deletes
  the duplicate's epoll registration (EPOLL_CTL_DEL, seen with strace), so closing it
  cannot leave a stale registration behind for a socket that stays open.

`ResponseStream` lets a handler write a body as it arrives (the edge streaming a large
origin response): Content-Length when the length is known, chunked for HTTP/1.1
otherwise, close-delimited for HTTP/1.0; `drain()` waits while the client's buffer is
over its high-water mark, so memory stays bounded by the transport's buffer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from millions.proxy.http11 import CRLF, LAST_CHUNK, chunk_size_line

if TYPE_CHECKING:
    from millions.proxy.exchange import Exchange
    from millions.proxy.server import HttpServerProtocol

log = logging.getLogger("millions.proxy.bodies")

#: Bytes sent per wake-up before yielding to other connections.
SEND_BUDGET_BYTES = 4 << 20


class FileSender:
    """Sends `length` bytes of the file `file_fd` from `offset` to the exchange's client,
    then finishes the exchange; `done(sent)` is called once in every outcome (the owner
    closes its file there)."""

    __slots__ = (
        "client",
        "done",
        "exchange",
        "file_fd",
        "loop",
        "offset",
        "remaining",
        "sent",
        "socket_fd",
        "watching",
    )

    def __init__(
        self,
        exchange: Exchange,
        file_fd: int,
        offset: int,
        length: int,
        done: Callable[[int], None],
    ) -> None:
        self.exchange = exchange
        self.client: HttpServerProtocol = exchange.client
        self.loop = self.client.loop
        self.file_fd = file_fd
        self.offset = offset
        self.remaining = length
        self.sent = 0
        self.done: Callable[[int], None] | None = done
        self.socket_fd = -1
        self.watching = False

    def start(self) -> None:
        transport = self.client.transport
        sock = None if transport is None else transport.get_extra_info("socket")
        if sock is None:
            self._fail("the client transport has no socket")
            return
        try:
            self.socket_fd = os.dup(sock.fileno())
        except OSError as exc:
            self._fail(str(exc))
            return
        self.client.body_sender = self
        self._send()

    def _send(self) -> None:
        """Send until done, EAGAIN or the budget is spent (also the writability callback)."""
        client = self.client
        transport = client.transport
        if transport is None or client.closed:
            return  # connection_lost follows and ends the sender
        if transport.get_write_buffer_size():
            self._watch()  # the head is still queued in the transport
            return
        budget = SEND_BUDGET_BYTES
        progress = False
        while self.remaining:
            try:
                sent = os.sendfile(
                    self.socket_fd, self.file_fd, self.offset, min(self.remaining, budget)
                )
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionError:  # the client reset or shut its side
                self._release()
                self.exchange.client_gone()
                client.abort()
                return
            except OSError as exc:
                self._fail(str(exc))
                return
            if sent == 0:
                self._fail("the file ended before the response did")
                return
            progress = True
            self.offset += sent
            self.remaining -= sent
            self.sent += sent
            budget -= sent
            if budget <= 0:
                break
        if self.remaining:
            if progress or not self.watching:
                client.deadline = self.loop.time() + client.settings.send_timeout_s
            self._watch()
            return
        self._release()
        client.deadline = 0.0
        self.exchange.body_sent()

    def _watch(self) -> None:
        if not self.watching:
            self.watching = True
            self.loop.add_writer(self.socket_fd, self._send)

    def _release(self) -> None:
        """Stop watching, close the duplicate descriptor, report what was sent."""
        if self.watching:
            self.watching = False
            self.loop.remove_writer(self.socket_fd)
        if self.socket_fd >= 0:
            os.close(self.socket_fd)
            self.socket_fd = -1
        if self.client.body_sender is self:
            self.client.body_sender = None
        done = self.done
        if done is not None:
            self.done = None
            done(self.sent)

    def _fail(self, reason: str) -> None:
        log.warning("sendfile to %s failed: %s", self.client.client_ip.decode(), reason)
        self._release()
        self.exchange.abort_response()

    def client_resumed(self) -> None:
        """The transport's buffer drained (the sender watches the socket itself)."""

    def client_lost(self) -> None:
        self._release()


class ResponseStream:
    """A local response whose body the handler writes piece by piece."""

    __slots__ = ("chunked", "client", "exchange", "waiter", "written")

    def __init__(self, exchange: Exchange, chunked: bool) -> None:
        self.exchange = exchange
        self.client: HttpServerProtocol = exchange.client
        self.chunked = chunked
        self.written = 0
        self.waiter: asyncio.Future[None] | None = None

    @property
    def gone(self) -> bool:
        """Nothing more will reach the client (it left, or the response is complete)."""
        return self.client.body_sender is not self or self.client.closed

    def write(self, data: bytes) -> None:
        client = self.client
        transport = client.transport
        if client.body_sender is not self or client.closed or transport is None or not data:
            return
        if self.chunked:
            transport.writelines((chunk_size_line(len(data)), data, CRLF))
        else:
            transport.write(data)
        self.written += len(data)

    async def drain(self) -> None:
        """Wait while the client's buffer is full (returns at once if the client left)."""
        while self.client.writing_paused and self.client.body_sender is self:
            waiter = self.waiter
            if waiter is None:
                self.waiter = waiter = self.client.loop.create_future()
            await waiter

    def finish(self) -> None:
        """The body is complete."""
        if self.client.body_sender is not self:
            return
        self.client.body_sender = None
        if self.chunked:
            self.client.write(LAST_CHUNK)
        self.exchange.body_sent()

    def abort(self) -> None:
        """The body cannot be completed: cut the connection so the client sees it short."""
        if self.client.body_sender is self:
            self.client.body_sender = None
            self._wake()
            self.exchange.abort_response()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def client_resumed(self) -> None:
        self._wake()

    def client_lost(self) -> None:
        if self.client.body_sender is self:
            self.client.body_sender = None
        self._wake()
