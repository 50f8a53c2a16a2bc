"""The DNS listeners: UDP and TCP on one address and port, both answered by a `Responder`.

UDP is a plain non-blocking socket that the event loop watches: each time it is readable
the listener drains up to `UDP_BATCH` datagrams, answering each one as it comes, with no
transport or protocol object in between (an asyncio datagram endpoint costs 0.15-0.25
microseconds more per packet under uvloop, about 5% of a query's whole CPU time). A reply
the kernel cannot take at once (its send buffer full) is dropped and counted, as UDP
allows: the client asks again.

TCP (RFC 7766) frames each message with a two-byte length; a connection may pipeline
queries, which are answered in order. When the client stops reading, the server stops
reading too (flow control), so a connection never buffers more than one message and its
unsent replies. Idle connections close after `idle_timeout_s`; past `max_connections`
new connections are closed at once. A failure inside the responder is logged, counted
and answered with SERVFAIL; it never stops the listener.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from dataclasses import dataclass
from typing import cast

import dns.rcode

from millions.dns.responder import Responder
from millions.dns.wire import HEADER_BYTES, header_reply

log = logging.getLogger("millions.dns")

#: Receive buffer asked for on the UDP socket, so bursts are queued rather than dropped.
UDP_RECEIVE_BUFFER_BYTES = 4 << 20
#: Datagrams answered per readable event before the loop runs other work (TCP, checks).
UDP_BATCH = 64
#: Largest UDP datagram read: the most a UDP message can hold.
_UDP_MAX = 65535
_PORT_ATTEMPTS = 20


@dataclass
class ServerStats:
    tcp_connections: int = 0
    tcp_accepted: int = 0
    tcp_refused: int = 0
    tcp_idle_closed: int = 0
    internal_errors: int = 0
    udp_unsent: int = 0


class DnsServer:
    """UDP and TCP listeners answering with `responder`."""

    def __init__(
        self,
        responder: Responder,
        listen: tuple[str, int],
        idle_timeout_s: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        self.responder = responder
        self.listen = listen
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.stats = ServerStats()
        self.port = 0
        self._udp: socket.socket | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: set[TcpConnection] = set()

    def answer(self, wire: bytes, source: str, udp: bool) -> bytes | None:
        try:
            return self.responder.respond(wire, source, udp)
        except Exception:
            return self.failed(wire, source)

    def failed(self, wire: bytes, source: str) -> bytes | None:
        """Log and count a query the responder failed on (inside `except`); SERVFAIL."""
        self.stats.internal_errors += 1
        log.exception("query failed", extra={"source": source, "query": wire[:512].hex()})
        return header_reply(wire, dns.rcode.SERVFAIL) if len(wire) >= HEADER_BYTES else None

    async def start(self) -> None:
        """Listen on UDP and TCP; with port 0, on a free port both protocols share."""
        host, port = self.listen
        for _ in range(_PORT_ATTEMPTS if port == 0 else 1):
            udp = self._open_udp(host, port)
            chosen = udp.getsockname()[1]
            try:
                self._tcp = await asyncio.get_running_loop().create_server(
                    lambda: TcpConnection(self), host, chosen, reuse_address=True, backlog=1024
                )
            except OSError as exc:
                udp.close()
                if port != 0 or exc.errno != errno.EADDRINUSE:
                    raise
                continue
            self._udp = udp
            self.port = chosen
            asyncio.get_running_loop().add_reader(udp.fileno(), self._udp_readable, udp)
            return
        raise OSError(errno.EADDRINUSE, f"no port on {host} free for both UDP and TCP")

    def _open_udp(self, host: str, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((host, port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER_BYTES)
        except OSError:
            pass
        return sock

    def _udp_readable(self, sock: socket.socket) -> None:
        """Answer the datagrams waiting on `sock`, at most `UDP_BATCH` of them."""
        recvfrom, sendto, respond = sock.recvfrom, sock.sendto, self.responder.respond
        for _ in range(UDP_BATCH):
            try:
                wire, peer = recvfrom(_UDP_MAX)
            except OSError:  # nothing left (EAGAIN), or an error the socket reported once
                return
            try:
                reply = respond(wire, peer[0], True)
            except Exception:
                reply = self.failed(wire, str(peer[0]))
            if reply is not None:
                try:
                    sendto(reply, peer)
                except OSError:  # send buffer full (EAGAIN) or the client unreachable
                    self.stats.udp_unsent += 1

    async def stop(self) -> None:
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.fileno())
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for connection in list(self._connections):
            connection.close()
        if self._tcp is not None:
            await self._tcp.wait_closed()


class TcpConnection(asyncio.Protocol):
    """One TCP client: length-framed, pipelined queries, idle timeout, flow control."""

    def __init__(self, server: DnsServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.source = ""
        self.paused = False
        self.last_activity = 0.0
        self.idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        if len(server._connections) >= server.max_connections:
            server.stats.tcp_refused += 1
            self.transport.abort()
            return
        server._connections.add(self)
        server.stats.tcp_connections += 1
        server.stats.tcp_accepted += 1
        peer = transport.get_extra_info("peername")
        self.source = str(peer[0]) if peer else ""
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        self.idle_timer = loop.call_later(server.idle_timeout_s, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.server._connections:
            self.server._connections.discard(self)
            self.server.stats.tcp_connections -= 1
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def _check_idle(self) -> None:
        loop = asyncio.get_running_loop()
        remaining = self.last_activity + self.server.idle_timeout_s - loop.time()
        if remaining > 0:
            self.idle_timer = loop.call_later(remaining, self._check_idle)
            return
        self.idle_timer = None
        self.server.stats.tcp_idle_closed += 1
        self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.last_activity = asyncio.get_running_loop().time()
        self._answer_buffered()

    def _answer_buffered(self) -> None:
        buffer = self.buffer
        transport = self.transport
        while not self.paused and len(buffer) >= 2 and transport is not None:
            size = (buffer[0] << 8) | buffer[1]
            if len(buffer) < 2 + size:
                return
            message = bytes(buffer[2 : 2 + size])
            del buffer[: 2 + size]
            if transport.is_closing():
                return
            reply = self.server.answer(message, self.source, False)
            if reply is not None:
                transport.write(len(reply).to_bytes(2, "big") + reply)

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._answer_buffered()

    def eof_received(self) -> bool | None:
        return None  # the client finished sending: close once replies are written
