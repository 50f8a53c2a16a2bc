"""Local bodies that are not bytes in memory: file regions sent with os.sendfile (slow
clients, clients that leave, clients that never read, HEAD, pipelining) and streams the
handler writes (framing per HTTP version, flow control)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
from proxy_support import read_response, run

from millions.proxy import Exchange, ProxyServer, ProxySettings

pytestmark = pytest.mark.timeout(60)

HOST = "127.0.101.1"
SIZE = 8 << 20
DATA = os.urandom(SIZE)
OFFSET = 1000  # the body starts inside the file, as on the edge's disk tier


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class FileHandler:
    """GET /file: the file's bytes from OFFSET, with os.sendfile; /stream: the same bytes
    written to a stream in 64 KiB pieces (Content-Length when ?length is asked)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sent: list[int] = []
        self.released = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.stream_done = asyncio.Event()

    def handle(self, exchange: Exchange) -> None:
        if exchange.path == b"/file":
            file = open(self.path, "rb")

            def done(sent: int) -> None:
                file.close()
                self.sent.append(sent)
                self.released.set()

            exchange.respond_file(200, [(b"x-kind", b"file")], file.fileno(), OFFSET, SIZE, done)
        else:
            length = SIZE if exchange.target.endswith(b"?length") else None
            task = asyncio.get_running_loop().create_task(self._stream(exchange, length))
            self.tasks.add(task)

    async def _stream(self, exchange: Exchange, length: int | None) -> None:
        stream = exchange.respond_stream(200, [(b"x-kind", b"stream")], length)
        for offset in range(0, SIZE, 65536):
            stream.write(DATA[offset : offset + 65536])
            await stream.drain()
        stream.finish()
        self.stream_done.set()


async def start(tmp_path: Path, **settings: Any) -> tuple[ProxyServer, FileHandler]:
    path = tmp_path / "object"
    path.write_bytes(b"h" * OFFSET + DATA + b"trailing metadata")
    handler = FileHandler(path)
    proxy = ProxyServer(handler, ProxySettings(**settings))
    await proxy.start(HOST, 0)
    return proxy, handler


def test_file_body_reaches_a_slow_reader_whole(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy, handler = await start(tmp_path)
        baseline = open_fds()
        reader, writer = await asyncio.open_connection(HOST, proxy.port, limit=1 << 16)
        writer.write(b"GET /file HTTP/1.1\r\nHost: a\r\n\r\nGET /file HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0.2)  # the kernel buffers fill: the sender must wait
        for _ in range(2):
            status, headers, body = await read_response(reader)
            assert (status, headers[b"x-kind"], len(body)) == (200, b"file", SIZE)
            assert hashlib.sha256(body).digest() == hashlib.sha256(DATA).digest()
        assert handler.sent == [SIZE, SIZE]
        assert open_fds() == baseline + 2  # both ends of the connection, no duplicates
        # the keep-alive connection idles without the loop spinning on a stale watch
        started = time.process_time()
        await asyncio.sleep(0.5)
        assert time.process_time() - started < 0.2
        writer.close()
        await proxy.shutdown(1.0)
        assert open_fds() <= baseline

    run(scenario())


def test_client_leaving_mid_file_releases_the_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy, handler = await start(tmp_path)
        baseline = open_fds()
        reader, writer = await asyncio.open_connection(HOST, proxy.port, limit=1 << 16)
        writer.write(b"GET /file HTTP/1.1\r\nHost: a\r\n\r\n")
        await reader.readexactly(100_000)
        writer.transport.abort()
        await asyncio.wait_for(handler.released.wait(), 5)
        assert 0 < handler.sent[0] < SIZE
        assert proxy.stats.client_aborts == 1
        assert open_fds() <= baseline
        # the server goes on serving
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        writer.write(b"HEAD /file HTTP/1.1\r\nHost: a\r\n\r\nGET /file HTTP/1.1\r\nHost: a\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: %d\r\n" % SIZE in head
        status, _, body = await read_response(reader)  # HEAD sent no body: this is the GET
        assert status == 200 and body == DATA
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


def test_client_that_never_reads_is_cut_after_the_send_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy, handler = await start(tmp_path, send_timeout_s=0.3, timer_resolution_s=0.05)
        reader, writer = await asyncio.open_connection(HOST, proxy.port, limit=1 << 16)
        writer.write(b"GET /file HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.wait_for(handler.released.wait(), 5)
        assert handler.sent[0] < SIZE
        received = 0
        while piece := await reader.read(1 << 20):
            received += len(piece)
        assert received < SIZE  # the connection ended short
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


def test_stream_framing_by_length_and_version(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy, _ = await start(tmp_path)
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        writer.write(
            b"GET /stream HTTP/1.1\r\nHost: a\r\n\r\nGET /stream?length HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        _, headers, body = await read_response(reader)
        assert headers[b"transfer-encoding"] == b"chunked" and body == DATA
        _, headers, body = await read_response(reader)
        assert headers[b"content-length"] == b"%d" % SIZE and body == DATA
        writer.close()
        # HTTP/1.0 without a length: the close ends the body
        reader, writer = await asyncio.open_connection(HOST, proxy.port)
        writer.write(b"GET /stream HTTP/1.0\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Connection: close" in head and b"chunked" not in head.lower()
        assert await reader.read(-1) == DATA
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


def test_stream_drain_waits_for_a_slow_client(tmp_path: Path) -> None:
    async def scenario() -> None:
        proxy, handler = await start(tmp_path)
        reader, writer = await asyncio.open_connection(HOST, proxy.port, limit=1 << 16)
        writer.write(b"GET /stream?length HTTP/1.1\r\nHost: a\r\n\r\n")
        await asyncio.sleep(0.3)
        assert not handler.stream_done.is_set()  # held back by the client, not buffered
        status, _, body = await read_response(reader)
        assert status == 200 and body == DATA
        await asyncio.wait_for(handler.stream_done.wait(), 5)
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())
