"""The edge's origin client (`millions.edge.origin`) against a raw origin that writes each
response byte by byte as a test scripts it: keep-alive reuse, a kept-alive connection the
origin closed, bodies delimited by length, chunks or the connection's end, interim
responses, HEAD, malformed and cut-short responses, timeouts, and its connection slots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from millions.edge import origin as origin_module
from millions.edge.origin import MAX_CONNECTIONS, OriginClient, OriginError

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"
Script = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawOrigin:
    """Counts connections and requests; `script(n, reader, writer)` answers request n."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                self.requests.append(head)
                await self.script(len(self.requests), reader, writer)
                if writer.is_closing():
                    return
        finally:
            writer.close()


@asynccontextmanager
async def raw_origin(
    script: Script, **timeouts: float
) -> AsyncIterator[tuple[RawOrigin, OriginClient]]:
    origin = RawOrigin(script)
    server = await asyncio.start_server(origin.serve, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    client = OriginClient(
        f"http://{HOST}:{port}",
        connect_timeout_s=timeouts.get("connect", 2.0),
        response_timeout_s=timeouts.get("response", 2.0),
    )
    try:
        yield origin, client
    finally:
        await client.close()
        server.close()
        await server.wait_closed()


def ok(body: bytes, *extra: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


async def answer(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def get(
    client: OriginClient, target: bytes = b"/x", method: bytes = b"GET"
) -> tuple[int, bytes]:
    response = await client.fetch(method, b"origin.test", target, [(b"Accept", b"*/*")])
    async with response:
        body = response.body
        while not response.complete:
            body += await response.read_chunk()
        return response.status, body


def free_slots(client: OriginClient) -> int:
    return client._slots._value


async def test_keep_alive_reuses_one_connection_and_sends_the_request_as_given() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer(writer, ok(b"body %d" % n, b'ETag: "v%d"' % n))

    async with raw_origin(script) as (origin, client):
        assert [await get(client) for _ in range(3)] == [(200, b"body %d" % n) for n in (1, 2, 3)]
        response = await client.fetch(b"GET", b"origin.test", b"/y?q=1", [])
        assert (b"etag", b'"v4"') in response.headers
        response.close()
    assert origin.connections == 1
    assert origin.requests[0] == b"GET /x HTTP/1.1\r\nHost: origin.test\r\nAccept: */*\r\n\r\n"
    assert origin.requests[3].startswith(b"GET /y?q=1 HTTP/1.1\r\n")


async def test_a_kept_alive_connection_the_origin_closed_is_replaced_once() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            await answer(writer, ok(b"first"))
            writer.close()  # closes the idle connection after answering (as a server may)
        else:
            await answer(writer, ok(b"again"))

    async with raw_origin(script) as (origin, client):
        assert await get(client) == (200, b"first")
        await asyncio.sleep(0)  # let the close arrive or not: either way the next get works
        assert await get(client) == (200, b"again")
        assert origin.connections == 2 and free_slots(client) == MAX_CONNECTIONS


async def test_bodies_by_chunks_and_by_the_connections_end() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            await answer(
                writer,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
            )
        else:
            await answer(writer, b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end")
            writer.close()

    async with raw_origin(script) as (origin, client):
        assert await get(client) == (200, b"abcdefg")
        assert await get(client) == (200, b"until the end")
        assert origin.connections == 1 and free_slots(client) == MAX_CONNECTIONS


async def test_interim_responses_are_skipped_and_head_answers_have_no_body() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 1:
            await answer(writer, b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + ok(b"final"))
        else:
            await answer(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n")

    async with raw_origin(script) as (_, client):
        response = await client.fetch(b"GET", b"h", b"/", [])
        assert (response.status, response.body, response.headers) == (
            200,
            b"final",
            [(b"content-length", b"5")],
        )
        response.close()
        assert await get(client, method=b"HEAD") == (200, b"")
        assert free_slots(client) == MAX_CONNECTIONS


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"garbage\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n",
    ],
)
async def test_malformed_responses_are_origin_errors(reply: bytes) -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer(writer, reply)

    async with raw_origin(script) as (_, client):
        with pytest.raises(OriginError):
            await get(client)
        assert free_slots(client) == MAX_CONNECTIONS


async def test_a_body_cut_short_is_an_origin_error_when_streaming() -> None:
    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer(writer, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        writer.close()

    async with raw_origin(script) as (_, client):
        response = await client.fetch(b"GET", b"h", b"/", [], whole_up_to=1000)
        assert not response.complete and response.length == 100_000
        with pytest.raises(OriginError, match="cut short"):
            while await response.read_chunk():
                pass
        assert free_slots(client) == MAX_CONNECTIONS
        with pytest.raises(OriginError, match="cut short"):
            await client.fetch(b"GET", b"h", b"/", [])  # read whole: the same error at once


async def test_a_large_body_streams_and_holds_the_origin_back() -> None:
    """A body larger than `whole_up_to` arrives in pieces of at most CHUNK_BYTES; while the
    caller does not read, the connection stops reading and the origin's writes stop."""
    size = 64 * 1024 * 1024
    written = [0]

    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"y" * 65536
        for _ in range(size // len(piece)):
            writer.write(piece)
            await writer.drain()
            written[0] += len(piece)

    async with raw_origin(script) as (_, client):
        response = await client.fetch(b"GET", b"h", b"/", [], whole_up_to=1024)
        async with asyncio.timeout(10):  # the origin stops: nothing reads its bytes
            while True:
                before = written[0]
                await asyncio.sleep(0.2)
                if written[0] == before:
                    break
        assert 0 < written[0] < size
        received = len(response.body)
        while piece := await response.read_chunk():
            assert len(piece) <= origin_module.CHUNK_BYTES
            received += len(piece)
        assert received == size and response.complete and written[0] == size
        assert free_slots(client) == MAX_CONNECTIONS


async def test_timeouts_and_refused_connections_are_origin_errors() -> None:
    async def silent(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    async with raw_origin(silent, response=0.2) as (_, client):
        with pytest.raises(OriginError, match="no response"):
            await get(client)
        assert free_slots(client) == MAX_CONNECTIONS
    refused = OriginClient("http://127.0.0.1:1", connect_timeout_s=1, response_timeout_s=1)
    with pytest.raises(OriginError, match="could not connect"):
        await get(refused)
    await refused.close()


async def test_connections_are_capped() -> None:
    release, two_arrived = asyncio.Event(), asyncio.Event()

    async def script(n: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if n == 2:
            two_arrived.set()
        await release.wait()
        await answer(writer, ok(b"done"))

    async with raw_origin(script) as (origin, client):
        client._slots = asyncio.Semaphore(2)
        fetches = [asyncio.create_task(get(client)) for _ in range(5)]
        await asyncio.wait_for(two_arrived.wait(), 5)
        await asyncio.sleep(0.05)  # time for a third request, were it not held back
        assert len(origin.requests) == 2  # the others wait for a connection
        release.set()
        assert await asyncio.gather(*fetches) == [(200, b"done")] * 5
        assert origin.connections == 2
