"""Strict request parsing: malformed and smuggling-style requests get 400 and a close,
nothing reaches the upstream, and other connections are unaffected."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_support import (
    keep_alive_ok,
    raw_exchange,
    read_response,
    request,
    run,
    start_proxy,
    start_upstream,
)

from millions.proxy import ProxySettings

pytestmark = pytest.mark.timeout(60)

BAD_REQUESTS = {
    "content-length with transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "transfer-encoding with content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "double content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
    ),
    "conflicting content-length": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
    ),
    "content-length list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    "xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "gzip, chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
    ),
    "transfer-encoding twice": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "obs-fold transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n"
    ),
    "obs-fold header": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
    "http/1.0 chunked": (
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    ),
    "bad chunk size": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk size overflow": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffffff\r\nabc\r\n"
    ),
    "chunk without crlf": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n"
    ),
    "bare lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare lf in headers": b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",
    "bare cr": b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    "nul in header": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n",
    "control char in header": b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n\r\n",
    "space in header name": b"GET / HTTP/1.1\r\nHost: a\r\nX Y: 1\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
    "bad request line": b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
    "garbage": b"HELLO\r\n\r\n",
    "lowercase method": b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
    "http/1.2": b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
    "http/2.0": b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
    "http/0.9": b"GET /\r\n\r\n",
    "missing host": b"GET / HTTP/1.1\r\nX: 1\r\n\r\n",
    "two hosts": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "connect": b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    "header block too large": (
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n"
    ),
    "many headers too large": (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(200))
        + b"\r\n"
    ),
}


async def _assert_rejected(data: bytes, status: bytes = b"400") -> None:
    upstream = await start_upstream(keep_alive_ok)
    proxy, _ = await start_proxy([upstream])
    # a well-behaved keep-alive client on another connection
    reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
    writer.write(request("/before"))
    assert (await read_response(reader))[0] == 200

    answer = await raw_exchange(proxy.port, data)
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nconnection: close" in head
    # a body error is found after the head went upstream; the request never completes there
    assert upstream.complete == [h for h in upstream.complete if b"/before" in h]

    writer.write(request("/after"))
    status_after, _, body = await read_response(reader)
    assert status_after == 200 and b"GET /after" in body
    writer.close()
    assert proxy.stats.bad_requests == 1
    await proxy.shutdown(1.0)


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_malformed_request_gets_400_and_close(name: str) -> None:
    run(_assert_rejected(BAD_REQUESTS[name]))


def test_body_over_limit_gets_413() -> None:
    async def scenario() -> None:
        upstream = await start_upstream(keep_alive_ok)
        proxy, _ = await start_proxy([upstream], ProxySettings(max_body_bytes=100))
        answer = await raw_exchange(proxy.port, request("/", "POST", body=b"x" * 101))
        assert answer.startswith(b"HTTP/1.1 413")
        assert upstream.heads == []
        await proxy.shutdown(1.0)

    run(scenario())


def test_bad_chunk_mid_body_aborts_upstream_request() -> None:
    """A chunked body that turns malformed after it started streaming: 400 for the client,
    and the upstream connection carrying the partial body is closed, never reused."""

    async def scenario() -> None:
        seen_eof = asyncio.Event()
        seen_head = asyncio.Event()

        async def upstream_reading(reader, writer, upstream):  # type: ignore[no-untyped-def]
            await reader.readuntil(b"\r\n\r\n")
            seen_head.set()
            while await reader.read(65536):
                pass
            seen_eof.set()

        upstream = await start_upstream(upstream_reading)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
        )
        await seen_head.wait()
        writer.write(b"zz\r\n")
        answer = await reader.read(-1)
        assert answer.startswith(b"HTTP/1.1 400")
        await seen_eof.wait()
        await proxy.shutdown(1.0)

    run(scenario())


def test_pipelined_requests_answered_in_order() -> None:
    async def scenario() -> None:
        async def slow_first(reader, writer, upstream):  # type: ignore[no-untyped-def]
            while (req := await upstream.read_request(reader)) is not None:
                if b"/slow" in req[0]:
                    await asyncio.sleep(0.2)
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(req[0].split(b" ")[1]), req[0].split(b" ")[1])
                )
                await writer.drain()

        upstream = await start_upstream(slow_first)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(request("/slow") + request("/b", "POST", body=b"hello") + request("/c"))
        bodies = [(await read_response(reader))[2] for _ in range(3)]
        assert bodies == [b"/slow", b"/b", b"/c"]
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


def test_slow_header_and_idle_connections_are_closed() -> None:
    async def scenario() -> None:
        upstream = await start_upstream(keep_alive_ok)
        settings = ProxySettings(header_timeout_s=0.3, idle_timeout_s=0.3, timer_resolution_s=0.05)
        proxy, _ = await start_proxy([upstream], settings)
        loop = asyncio.get_running_loop()
        # slowloris: a head that never ends
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\nX-1: 1\r\n")
        started = loop.time()
        assert await reader.read(-1) == b""
        assert 0.25 < loop.time() - started < 2.0
        # idle keep-alive connection after a request
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(request("/"))
        assert (await read_response(reader))[0] == 200
        started = loop.time()
        assert await reader.read(-1) == b""
        assert 0.25 < loop.time() - started < 2.0
        assert proxy.stats.active_connections == 0
        await proxy.shutdown(1.0)

    run(scenario())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(
            st.sampled_from(
                [
                    b"GET ",
                    b"POST ",
                    b"/ ",
                    b"HTTP/1.1",
                    b"HTTP/1.0",
                    b"\r\n",
                    b"\n",
                    b"\r",
                    b"Host: a",
                    b"Content-Length: 3",
                    b"Transfer-Encoding: chunked",
                    b": ",
                    b" ",
                    b"\x00",
                    b"abc",
                    b"0\r\n\r\n",
                    b"3\r\nabc\r\n",
                    b"Connection: close",
                    b"Expect: 100-continue",
                ]
            ),
            max_size=25,
        ).map(b"".join),
    )
)
def test_fuzzed_requests_never_break_the_server(data: bytes) -> None:
    """Random bytes get 400, a valid response, or a close; the server keeps serving."""

    async def scenario() -> None:
        upstream = await start_upstream(keep_alive_ok)
        proxy, _ = await start_proxy([upstream], ProxySettings(header_timeout_s=0.5))
        answer = await raw_exchange(proxy.port, data, wait_s=5.0)
        if answer:
            status_line = answer.split(b"\r\n", 1)[0]
            assert status_line[:9] == b"HTTP/1.1 " and status_line[9:12].isdigit(), answer[:100]
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(request("/still-alive"))
        assert (await read_response(reader))[0] == 200
        writer.close()
        await proxy.shutdown(1.0)
        upstream.server.close()  # type: ignore[union-attr]

    run(scenario())
