"""Large objects: misses stream from the origin to the client and the disk tier at once,
disk hits leave through sendfile, and neither holds a whole large body in memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from edge_raw_origin import RawOrigin, RawRequest
from edge_server_support import run, wait_for

from millions.edge.server import EdgeServer
from millions.edge.storage import DiskBody, DiskTier

pytestmark = pytest.mark.timeout(60)

EDGE_HOST = "127.0.100.1"
ORIGIN_HOST = "127.0.100.2"
SIZE = 5 << 20
BODY = os.urandom(SIZE)
PIECE = 64 * 1024
CACHEABLE = b"Cache-Control: max-age=600\r\nContent-Type: application/octet-stream\r\n"


@dataclass
class LargeRoute:
    """How the origin sends a large body: with Content-Length or chunked, paced in
    PIECE writes, optionally holding at `gate` after `hold_at` bytes or dying at `cut_at`."""

    body: bytes = BODY
    extra: bytes = CACHEABLE
    chunked: bool = False
    gate: asyncio.Event | None = None
    hold_at: int = SIZE // 2
    cut_at: int | None = None
    held: bool = False

    async def __call__(self, request: RawRequest, writer: asyncio.StreamWriter) -> None:
        framing = b"Transfer-Encoding: chunked\r\n" if self.chunked else b"Content-Length: %d\r\n"
        if not self.chunked:
            framing %= len(self.body)
        writer.write(b"HTTP/1.1 200 OK\r\n" + framing + self.extra + b"\r\n")
        if request.method == b"HEAD":
            return
        for offset in range(0, len(self.body), PIECE):
            if self.gate is not None and offset >= self.hold_at and not self.gate.is_set():
                self.held = True
                await self.gate.wait()
            if self.cut_at is not None and offset >= self.cut_at:
                writer.transport.abort()
                return
            piece = self.body[offset : offset + PIECE]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if self.chunked else piece)
            await writer.drain()
        if self.chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


@asynccontextmanager
async def edge_and_raw_origin(
    route: LargeRoute, cache_dir: Path | None = None, stream_threshold_bytes: int = 1 << 20
) -> AsyncIterator[tuple[EdgeServer, RawOrigin]]:
    origin = RawOrigin(ORIGIN_HOST, route)
    await origin.start()
    edge = EdgeServer(
        origin.url,
        (EDGE_HOST, 0),
        1 << 20,
        "edge-large",
        cache_dir=cache_dir,
        disk_bytes=64 << 20,
        stream_threshold_bytes=stream_threshold_bytes,
    )
    await edge.start()
    try:
        yield edge, origin
    finally:
        await edge.stop(0.5)
        await origin.stop()


@dataclass
class Received:
    status: int
    headers: dict[bytes, bytes]
    length: int
    digest: bytes
    complete: bool

    def matches(self, body: bytes) -> bool:
        return self.complete and self.digest == hashlib.sha256(body).digest()


async def read_one(
    reader: asyncio.StreamReader, method: bytes = b"GET", keep: bool = False
) -> tuple[Received, bytes]:
    """One response, hashed as it arrives (the body is kept only with `keep`)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    status = int(lines[0].split(b" ")[1])
    digest = hashlib.sha256()
    kept: list[bytes] = []
    length = 0
    complete = True

    def take(data: bytes) -> None:
        nonlocal length
        digest.update(data)
        length += len(data)
        if keep:
            kept.append(data)

    if method == b"HEAD" or status in (204, 304):
        pass
    elif b"content-length" in headers:
        remaining = int(headers[b"content-length"])
        while remaining:
            data = await reader.read(min(remaining, PIECE))
            if not data:
                complete = False
                break
            take(data)
            remaining -= len(data)
    else:
        try:
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                take(await reader.readexactly(size))
                await reader.readexactly(2)
            await reader.readexactly(2)
        except (asyncio.IncompleteReadError, ValueError):
            complete = False
    return Received(status, headers, length, digest.digest(), complete), b"".join(kept)


async def get(
    port: int, target: str = "/big", extra: str = "", method: str = "GET", keep: bool = False
) -> tuple[Received, bytes]:
    reader, writer = await asyncio.open_connection(EDGE_HOST, port)
    try:
        request = f"{method} {target} HTTP/1.1\r\nHost: cdn.example\r\n{extra}\r\n"
        writer.write(request.encode())
        return await read_one(reader, method.encode(), keep)
    finally:
        writer.close()


def no_whole_body_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any read of a whole stored body fail the test."""

    def refuse(*args: object) -> bytes:
        raise AssertionError("a large stored body was read whole")

    monkeypatch.setattr(DiskBody, "read_all", refuse)
    monkeypatch.setattr(DiskTier, "read_body", refuse)


def test_disk_hit_after_a_restart_is_sent_with_sendfile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        async with edge_and_raw_origin(LargeRoute(), tmp_path) as (edge, origin):
            miss, _ = await get(edge.port)
            assert miss.matches(BODY) and miss.headers[b"x-cache"] == b"MISS"
            assert edge.stats.streamed_fills == 1
            await wait_for(lambda: edge.store.stats().disk.objects == 1)
        no_whole_body_reads(monkeypatch)
        async with edge_and_raw_origin(LargeRoute(), tmp_path) as (edge, origin):
            hit, _ = await get(edge.port)
            assert hit.matches(BODY) and hit.headers[b"x-cache"] == b"HIT"
            assert int(hit.headers[b"content-length"]) == SIZE
            assert edge.stats.sendfile_bytes == SIZE
            part, data = await get(edge.port, extra="Range: bytes=1000000-1999999\r\n", keep=True)
            assert part.status == 206 and data == BODY[1_000_000:2_000_000]
            assert part.headers[b"content-range"] == b"bytes 1000000-1999999/%d" % SIZE
            assert edge.stats.sendfile_bytes == SIZE + 1_000_000
            assert origin.requests == []

    run(scenario())


def test_head_and_pipelined_requests_after_a_sendfile_body(tmp_path: Path) -> None:
    """HEAD gets no body; requests pipelined behind a file body are answered after it."""

    async def scenario() -> None:
        async with edge_and_raw_origin(LargeRoute(), tmp_path) as (edge, origin):
            await get(edge.port)  # fill
            await wait_for(lambda: edge.store.stats().disk.objects == 1)
            reader, writer = await asyncio.open_connection(EDGE_HOST, edge.port)
            one = b"%s /big HTTP/1.1\r\nHost: cdn.example\r\n\r\n"
            writer.write(one % b"HEAD" + one % b"GET" + one % b"HEAD" + one % b"GET")
            received = [
                await read_one(reader, method) for method in (b"HEAD", b"GET", b"HEAD", b"GET")
            ]
            writer.close()
            for (response, _), method in zip(received, (b"HEAD", b"GET") * 2, strict=True):
                assert response.headers[b"content-length"] == b"%d" % SIZE
                assert response.length == (0 if method == b"HEAD" else SIZE)
            assert received[1][0].matches(BODY) and received[3][0].matches(BODY)
            assert edge.stats.sendfile_bytes == 2 * SIZE
            assert len(origin.requests) == 1

    run(scenario())


def test_several_ranges_of_a_disk_object_make_a_multipart_body(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with edge_and_raw_origin(LargeRoute(), tmp_path) as (edge, _):
            await get(edge.port)
            await wait_for(lambda: edge.store.stats().disk.objects == 1)
            small, data = await get(edge.port, extra="Range: bytes=0-9,-10\r\n", keep=True)
            assert small.status == 206
            assert small.headers[b"content-type"].startswith(b"multipart/byteranges")
            assert BODY[:10] in data and BODY[-10:] in data
            # more than the multipart read limit: the whole object, from the file
            huge, _ = await get(edge.port, extra="Range: bytes=0-2000000,3000000-4999999\r\n")
            assert huge.status == 200 and huge.matches(BODY)

    run(scenario())


def test_large_miss_streams_to_the_client_before_the_origin_finishes() -> None:
    async def scenario(route: LargeRoute) -> None:
        async with edge_and_raw_origin(route) as (edge, origin):
            reader, writer = await asyncio.open_connection(EDGE_HOST, edge.port)
            writer.write(b"GET /big HTTP/1.1\r\nHost: cdn.example\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert b"x-cache: MISS" in head
            if route.chunked:
                assert b"Transfer-Encoding: chunked" in head
            else:
                assert b"Content-Length: %d" % SIZE in head
            # the first half arrives while the origin still holds the second
            await wait_for(lambda: route.held)
            await reader.readexactly(SIZE // 4)
            assert edge.store.stats().disk.objects == 0
            assert route.gate is not None
            route.gate.set()
            writer.close()
            await wait_for(lambda: edge.store.stats().disk.objects == 1)
            hit, _ = await get(edge.port)
            assert hit.matches(BODY) and hit.headers[b"x-cache"] == b"HIT"
            assert len(origin.requests) == 1

    for chunked in (False, True):
        run(scenario(LargeRoute(chunked=chunked, gate=asyncio.Event())))


def test_streaming_a_miss_and_sending_a_hit_keep_memory_bounded() -> None:
    async def scenario() -> tuple[int, int]:
        async with edge_and_raw_origin(LargeRoute(body=BODY * 2)) as (edge, _):
            await asyncio.sleep(0)
            tracemalloc.start()
            try:
                miss, _ = await get(edge.port)
                await wait_for(lambda: edge.store.stats().disk.objects == 1)
                _, miss_peak = tracemalloc.get_traced_memory()
                tracemalloc.reset_peak()
                hit, _ = await get(edge.port)
                _, hit_peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert miss.matches(BODY * 2) and hit.matches(BODY * 2)
            assert edge.stats.sendfile_bytes == 2 * SIZE
            return miss_peak, hit_peak

    miss_peak, hit_peak = run(scenario())
    # a 10 MiB object: the miss holds at most the stream threshold plus some pieces
    assert miss_peak < 4 << 20, miss_peak
    assert hit_peak < 1 << 20, hit_peak


def test_coalesced_waiters_wait_for_the_fill_and_are_answered_from_disk() -> None:
    async def scenario() -> None:
        route = LargeRoute(gate=asyncio.Event())
        async with edge_and_raw_origin(route) as (edge, origin):
            first = asyncio.create_task(get(edge.port))
            await wait_for(lambda: route.held)
            waiters = [asyncio.create_task(get(edge.port)) for _ in range(4)]
            await wait_for(lambda: edge.stats.coalesced_waiters == 4)
            route.gate.set()  # type: ignore[union-attr]
            responses = [r for r, _ in await asyncio.gather(first, *waiters)]
            assert all(r.matches(BODY) for r in responses)
            assert {r.headers[b"x-cache"] for r in responses} == {b"MISS"}
            assert len(origin.requests) == 1
            assert edge.stats.sendfile_bytes == 4 * SIZE  # the waiters, from the file

    run(scenario())


def test_client_leaving_mid_stream_does_not_abort_the_fill() -> None:
    async def scenario() -> None:
        route = LargeRoute(gate=asyncio.Event())
        async with edge_and_raw_origin(route) as (edge, origin):
            reader, writer = await asyncio.open_connection(EDGE_HOST, edge.port)
            writer.write(b"GET /big HTTP/1.1\r\nHost: cdn.example\r\n\r\n")
            await reader.readexactly(100_000)
            writer.transport.abort()
            await wait_for(lambda: edge.proxy_stats.client_aborts == 1)
            route.gate.set()  # type: ignore[union-attr]
            await wait_for(lambda: edge.store.stats().disk.objects == 1)
            hit, _ = await get(edge.port)
            assert hit.matches(BODY) and hit.headers[b"x-cache"] == b"HIT"
            assert len(origin.requests) == 1

    run(scenario())


def test_origin_dying_mid_body_leaves_nothing_cached(tmp_path: Path) -> None:
    async def scenario() -> None:
        for chunked in (False, True):
            route = LargeRoute(chunked=chunked, cut_at=2 << 20)
            async with edge_and_raw_origin(route, tmp_path) as (edge, origin):
                cut, _ = await get(edge.port)
                assert cut.status == 200 and not cut.complete and cut.length < SIZE
                assert edge.store.stats().disk.objects == 0
                assert list((tmp_path / "tmp").iterdir()) == []
                assert list((tmp_path / "objects").glob("*/*")) == []
                route.cut_at = None
                again, _ = await get(edge.port)
                assert again.matches(BODY) and again.headers[b"x-cache"] == b"MISS"
                assert len(origin.requests) == 2
            for stored in (tmp_path / "objects").glob("*/*"):
                stored.unlink()

    run(scenario())


def test_range_on_a_large_miss_is_answered_from_the_stored_object() -> None:
    async def scenario() -> None:
        async with edge_and_raw_origin(LargeRoute()) as (edge, origin):
            part, data = await get(edge.port, extra="Range: bytes=-100\r\n", keep=True)
            assert (part.status, data) == (206, BODY[-100:])
            assert part.headers[b"x-cache"] == b"MISS"
            assert origin.requests[0].header(b"range") is None

    run(scenario())


def test_large_unstorable_response_is_streamed_to_each_client() -> None:
    async def scenario() -> None:
        route = LargeRoute(extra=b"Cache-Control: no-store\r\n")
        async with edge_and_raw_origin(route) as (edge, origin):
            responses = [r for r, _ in await asyncio.gather(get(edge.port), get(edge.port))]
            assert all(r.matches(BODY) for r in responses)
            assert {r.headers[b"x-cache"] for r in responses} == {b"PASS"}
            assert len(origin.requests) == 2
            assert edge.store.stats().disk.objects == 0

    run(scenario())


def test_head_miss_for_a_large_object_gets_the_head_and_fills_the_cache() -> None:
    async def scenario() -> None:
        async with edge_and_raw_origin(LargeRoute()) as (edge, origin):
            head, _ = await get(edge.port, method="HEAD")
            assert head.status == 200 and head.length == 0
            assert head.headers[b"content-length"] == b"%d" % SIZE
            assert origin.requests[0].method == b"GET"
            await wait_for(lambda: edge.store.stats().disk.objects == 1)
            hit, _ = await get(edge.port)
            assert hit.matches(BODY) and hit.headers[b"x-cache"] == b"HIT"

    run(scenario())


def test_stream_threshold_decides_between_whole_and_streamed_bodies() -> None:
    """A chunked body under the threshold is read whole (found by reading up to it); the
    same body over a lower threshold is streamed. Both are stored and hit afterwards."""

    async def scenario(threshold: int, streamed: int) -> None:
        route = LargeRoute(body=BODY[:300_000], chunked=True)
        async with edge_and_raw_origin(route, stream_threshold_bytes=threshold) as (edge, _):
            miss, _ = await get(edge.port)
            assert miss.matches(route.body) and miss.headers[b"x-cache"] == b"MISS"
            assert edge.stats.streamed_fills == streamed
            await wait_for(lambda: edge.store.stats().disk.objects == 1)
            hit, _ = await get(edge.port)
            assert hit.matches(route.body) and hit.headers[b"x-cache"] == b"HIT"

    run(scenario(1 << 20, 0))
    run(scenario(100_000, 1))
