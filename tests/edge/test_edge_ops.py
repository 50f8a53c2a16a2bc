"""The edge's ops listener (`millions.edge.ops`) on raw sockets: routes, methods, request
bodies up to their limit, malformed and oversized requests, slow clients, failing routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from millions.edge import ops
from millions.edge.ops import OpsRequest, OpsResponse, OpsRoutes, OpsServer

pytestmark = pytest.mark.timeout(30)

HOST = "127.0.0.1"


async def echo(request: OpsRequest) -> OpsResponse:
    return OpsResponse(200, b"%s %s %d" % (request.method, request.path, len(request.body)))


async def auth(request: OpsRequest) -> OpsResponse:
    return OpsResponse(200, request.headers.get(b"authorization", b"none"))


async def broken(request: OpsRequest) -> OpsResponse:
    raise RuntimeError("a bug in a route")


@asynccontextmanager
async def ops_server() -> AsyncIterator[int]:
    routes = OpsRoutes(
        {
            (b"GET", b"/status"): echo,
            (b"POST", b"/purge"): echo,
            (b"GET", b"/auth"): auth,
            (b"GET", b"/broken"): broken,
        },
        max_body_bytes=100,
    )
    server = OpsServer(routes)
    await server.start(HOST, 0)
    try:
        yield server.port
    finally:
        await server.close()


async def exchange(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(HOST, port)
    writer.write(data)
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read()  # the listener closes after one answer
    writer.close()
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_routes_methods_and_bodies() -> None:
    async with ops_server() as port:
        got = await exchange(port, b"GET /status?x=1 HTTP/1.1\r\nHost: h\r\n\r\n")
        assert status_of(got) == 200 and got.endswith(b"\r\n\r\nGET /status 0")
        assert b"Connection: close" in got and b"Content-Length: 13" in got
        body = b'{"url": "http://x/"}'
        got = await exchange(
            port, b"POST /purge HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        assert got.endswith(b"POST /purge %d" % len(body))
        chunked = b"POST /purge HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        assert (await exchange(port, chunked)).endswith(b"POST /purge 3")
        head = await exchange(port, b"HEAD /status HTTP/1.1\r\n\r\n")
        assert status_of(head) == 200 and head.endswith(b"\r\n\r\n")
        wrong = await exchange(port, b"GET /purge HTTP/1.1\r\n\r\n")
        assert status_of(wrong) == 405 and b"Allow: POST" in wrong
        assert status_of(await exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")) == 404
        got = await exchange(port, b"GET /auth HTTP/1.1\r\nAuthorization: Bearer t\r\n\r\n")
        assert got.endswith(b"Bearer t")


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /status HTTP/1.1\r\nHost h\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),  # a TLS hello
        (b"POST /purge HTTP/1.1\r\nContent-Length: 101\r\n\r\n" + b"x" * 101, 413),
        (b"POST /purge HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde", 400),
        (b"GET /status HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n", 431),
        (b"GET /broken HTTP/1.1\r\n\r\n", 500),
    ],
)
async def test_bad_requests_get_a_status_and_the_listener_stays_up(
    request_bytes: bytes, status: int
) -> None:
    async with ops_server() as port:
        assert status_of(await exchange(port, request_bytes)) == status
        assert status_of(await exchange(port, b"GET /status HTTP/1.1\r\n\r\n")) == 200


async def test_a_slow_client_is_answered_408(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops, "REQUEST_TIMEOUT_S", 0.2)
    async with ops_server() as port:
        assert status_of(await exchange(port, b"GET /status HTTP/1.1\r\n")) == 408
