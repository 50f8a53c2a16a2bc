"""Forwarding semantics: forwarding headers, hop-by-hop stripping, framing, streaming,
responses without a body, upstream failures, timeouts and retries."""

from __future__ import annotations

import asyncio
import hashlib
import re

import pytest
from proxy_support import (
    UPSTREAM_HOSTS,
    Upstream,
    keep_alive_ok,
    ok_response,
    raw_exchange,
    read_response,
    request,
    run,
    start_proxy,
    start_upstream,
)

from millions.proxy import ProxySettings

pytestmark = pytest.mark.timeout(60)


async def _get(port: int, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    reader, writer = await asyncio.open_connection("127.0.50.1", port)
    writer.write(data)
    try:
        return await read_response(reader)
    finally:
        writer.close()


def test_forwarding_headers_reach_the_upstream() -> None:
    async def scenario() -> None:
        upstream = await start_upstream(keep_alive_ok)
        proxy, _ = await start_proxy([upstream], ProxySettings(via=b"1.1 test-lb"))
        _, _, plain = await _get(proxy.port, request("/a?b=1"))
        _, _, chained = await _get(
            proxy.port,
            request(
                "/c",
                extra="X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
                "X-Request-Id: abc-123\r\n",
            ),
        )
        _, _, bad_id = await _get(proxy.port, request("/d", extra="X-Request-Id: no spaces!\r\n"))

        assert plain.startswith(b"GET /a?b=1 HTTP/1.1\r\nHost: test\r\n")
        assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in plain
        assert b"\r\nX-Forwarded-Proto: http\r\n" in plain
        assert b"\r\nVia: 1.1 test-lb\r\n" in plain
        generated = re.search(rb"\r\nX-Request-Id: ([0-9a-f]+-[0-9a-f]+)\r\n", plain)
        assert generated is not None
        assert b"X-Forwarded-For: 10.0.0.1, 127.0.0.1\r\n" in chained
        assert chained.count(b"X-Forwarded-Proto") == 1 and b"Proto: http\r\n" in chained
        assert b"\r\nX-Request-Id: abc-123\r\n" in chained
        replaced = re.search(rb"\r\nX-Request-Id: ([^\r]+)\r\n", bad_id)
        assert replaced is not None and replaced.group(1) not in (b"no spaces!", generated.group(1))
        await proxy.shutdown(1.0)

    run(scenario())


def test_hop_by_hop_headers_are_stripped_both_ways() -> None:
    async def scenario() -> None:
        async def hop_response(reader, writer, upstream):  # type: ignore[no-untyped-def]
            while (req := await upstream.read_request(reader)) is not None:
                body = req[0]
                writer.write(
                    b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                    b"Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nTrailer: X-T\r\nX-Kept: yes\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                await writer.drain()

        upstream = await start_upstream(hop_response)
        proxy, _ = await start_proxy([upstream])
        status, headers, forwarded = await _get(
            proxy.port,
            request(
                "/",
                extra="Connection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 300\r\n"
                "TE: trailers\r\nProxy-Connection: keep-alive\r\nUpgrade: websocket\r\n"
                "Trailer: X-T\r\nX-End: 1\r\n",
            ),
        )
        assert status == 200
        lower = forwarded.lower()
        for name in (
            b"connection",
            b"x-hop",
            b"keep-alive",
            b"te",
            b"proxy-connection",
            b"upgrade",
            b"trailer",
        ):
            assert b"\r\n" + name + b":" not in lower, name
        assert b"\r\nx-end: 1\r\n" in lower
        assert set(headers) == {b"content-length", b"x-kept"}
        await proxy.shutdown(1.0)

    run(scenario())


def test_chunked_upload_is_streamed_and_large_download_arrives_whole() -> None:
    async def scenario() -> None:
        size = 20 * 1024 * 1024

        async def big(reader, writer, upstream):  # type: ignore[no-untyped-def]
            while (req := await upstream.read_request(reader)) is not None:
                head, body = req
                if b"/upload" in head:
                    digest = hashlib.sha256(body).hexdigest().encode()
                    writer.write(ok_response(digest))
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
                block = bytes(range(256)) * 1024
                for _ in range(size // len(block)):
                    writer.write(block)
                    await writer.drain()

        upstream = await start_upstream(big)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        pieces = [bytes([i]) * 70000 for i in range(20)]
        writer.write(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            await writer.drain()
        writer.write(b"0\r\n\r\n")
        status, _, digest = await read_response(reader)
        assert status == 200
        assert digest == hashlib.sha256(b"".join(pieces)).hexdigest().encode()
        assert b"transfer-encoding: chunked" in upstream.heads[0].lower()

        writer.write(request("/download"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert b"Content-Length: %d" % size in head
        received = 0
        expected = hashlib.sha256((bytes(range(256)) * 1024) * (size // 262144)).hexdigest()
        digest_in = hashlib.sha256()
        while received < size:
            piece = await reader.read(1 << 20)
            assert piece
            digest_in.update(piece)
            received += len(piece)
        assert received == size and digest_in.hexdigest() == expected
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario(), timeout_s=40)


def test_slow_client_pauses_the_upstream() -> None:
    """Flow control: a client that does not read stops the proxy reading the upstream, so
    a large download waits in socket buffers instead of in the proxy's memory."""

    async def scenario() -> None:
        size = 64 * 1024 * 1024
        written = 0

        async def huge(reader, writer, upstream):  # type: ignore[no-untyped-def]
            nonlocal written
            await upstream.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            block = b"x" * 65536
            while written < size:
                writer.write(block)
                written += len(block)
                await writer.drain()

        upstream = await start_upstream(huge)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port, limit=1 << 16)
        writer.write(request("/huge"))
        previous = -1
        while previous != written:  # until the upstream is blocked
            previous = written
            await asyncio.sleep(0.3)
        # kernel socket buffers on both hops hold at most about 20 MB; the proxy a little
        assert written < 32 * 1024 * 1024
        received = 0
        while received < size:
            piece = await reader.read(1 << 20)
            assert piece
            received += len(piece)
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario(), timeout_s=40)


def test_responses_without_body_and_connection_reuse() -> None:
    """HEAD (with a Content-Length), 204 and 304 carry no body; the upstream connection is
    reused afterwards, and 1xx interim responses are passed on."""

    async def scenario() -> None:
        async def varied(reader, writer, upstream):  # type: ignore[no-untyped-def]
            while (req := await upstream.read_request(reader)) is not None:
                path = req[0].split(b" ")[1]
                if path == b"/head":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
                elif path == b"/204":
                    writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
                elif path == b"/304":
                    writer.write(b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n')
                elif path == b"/early":
                    writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
                    writer.write(ok_response(b"final"))
                else:
                    writer.write(ok_response(path))
                await writer.drain()

        upstream = await start_upstream(varied)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(request("/head", "HEAD"))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Content-Length: 1234" in head
        for path, status in ((b"/204", 204), (b"/304", 304), (b"/x", 200)):
            writer.write(request(path.decode()))
            got, _, body = await read_response(reader)
            assert got == status
            assert body == (b"/x" if status == 200 else b"")
        writer.write(request("/early"))
        assert (await read_response(reader))[0] == 103
        assert (await read_response(reader))[2] == b"final"
        writer.close()
        assert upstream.connections == 1
        await proxy.shutdown(1.0)

    run(scenario())


def test_close_delimited_and_connection_close_responses() -> None:
    async def scenario() -> None:
        async def closing(reader, writer, upstream):  # type: ignore[no-untyped-def]
            req = await upstream.read_request(reader)
            assert req is not None
            if b"/eof" in req[0]:
                writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

        upstream = await start_upstream(closing)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(request("/eof"))
        status, headers, body = await read_response(reader)
        assert (status, headers.get(b"transfer-encoding"), body) == (
            200,
            b"chunked",
            b"until the end",
        )
        writer.write(request("/close"))
        status, headers, body = await read_response(reader)
        assert (status, body) == (200, b"ok") and b"connection" not in headers
        writer.write(request("/close"))  # needs a new upstream connection
        assert (await read_response(reader))[2] == b"ok"
        assert upstream.connections == 3
        # an HTTP/1.0 client gets a close-delimited body
        answer = await raw_exchange(proxy.port, b"GET /eof HTTP/1.0\r\n\r\n")
        assert answer.endswith(b"\r\n\r\nuntil the end") and b"Connection: close" in answer
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


def test_502_when_refused_and_504_on_timeout() -> None:
    async def scenario() -> None:
        # nothing listens on this port of UPSTREAM_HOSTS[2]
        proxy, picker = await start_proxy([f"{UPSTREAM_HOSTS[2]}:9"])
        status, _, _ = await _get(proxy.port, request("/"))
        assert status == 502 and len(picker.failed_pools) == 1
        await proxy.shutdown(1.0)

        async def silent(reader, writer, upstream):  # type: ignore[no-untyped-def]
            await upstream.read_request(reader)
            await asyncio.sleep(5)

        upstream = await start_upstream(silent)
        settings = ProxySettings(response_timeout_s=0.3, timer_resolution_s=0.05)
        proxy, _ = await start_proxy([upstream], settings)
        started = asyncio.get_running_loop().time()
        status, _, _ = await _get(proxy.port, request("/"))
        assert status == 504
        assert asyncio.get_running_loop().time() - started < 2.0
        await proxy.shutdown(1.0)

    run(scenario())


async def _dropping(reader, writer, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    """Reads one whole request and closes without answering."""
    await upstream.read_request(reader)


def test_idempotent_request_retried_on_another_server_post_is_not() -> None:
    async def scenario() -> None:
        dropper = await start_upstream(_dropping, UPSTREAM_HOSTS[0])
        good = await start_upstream(keep_alive_ok, UPSTREAM_HOSTS[1])
        proxy, picker = await start_proxy([dropper, good])

        status, _, body = await _get(proxy.port, request("/get"))
        assert status == 200 and b"GET /get" in body
        assert len(dropper.complete) == 1 and proxy.stats.retries == 1

        picker.next = 0  # the dropper again first
        status, _, _ = await _get(proxy.port, request("/post", "POST", body=b"data"))
        assert status == 502
        assert len(dropper.complete) == 2  # sent once...
        assert not any(b"/post" in head for head in good.heads)  # ...and never again
        assert proxy.stats.retries == 1
        await proxy.shutdown(1.0)

    run(scenario())


def test_post_retried_after_connect_failure() -> None:
    async def scenario() -> None:
        good = await start_upstream(keep_alive_ok, UPSTREAM_HOSTS[1])
        proxy, picker = await start_proxy([f"{UPSTREAM_HOSTS[2]}:9", good])
        status, _, body = await _get(proxy.port, request("/post", "POST", body=b"data"))
        assert status == 200 and body.endswith(b"data")
        assert len(picker.failed_pools) == 1 and proxy.stats.retries == 1
        await proxy.shutdown(1.0)

    run(scenario())


def test_stale_pooled_connection_is_retried_on_a_fresh_one() -> None:
    """The single upstream closed a kept-alive connection just as a GET was sent on it:
    the GET goes again on a fresh connection to the same server."""

    async def scenario() -> None:
        async def one_then_close(reader, writer, upstream):  # type: ignore[no-untyped-def]
            await upstream.read_request(reader)
            writer.write(ok_response(b"first"))
            await writer.drain()
            await upstream.read_request(reader)  # the next request is read, then dropped

        upstream = await start_upstream(one_then_close)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(request("/1"))
        assert (await read_response(reader))[2] == b"first"
        writer.write(request("/2"))
        assert (await read_response(reader))[2] == b"first"
        assert upstream.connections == 2
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


def test_expect_continue_answered_by_the_proxy() -> None:
    async def scenario() -> None:
        upstream = await start_upstream(keep_alive_ok)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(
            b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        status, _, body = await read_response(reader)
        assert status == 200 and body.endswith(b"hello") and b"expect" not in body.lower()
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


def test_upgrade_absolute_form_and_asterisk_targets() -> None:
    """An Upgrade request is answered as a plain request (Upgrade is hop-by-hop) and the
    connection goes on; absolute-form targets become origin-form with their authority as
    Host; `OPTIONS *` passes."""

    async def scenario() -> None:
        upstream = await start_upstream(keep_alive_ok)
        proxy, _ = await start_proxy([upstream])
        reader, writer = await asyncio.open_connection("127.0.50.1", proxy.port)
        writer.write(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            + request("/after")
            + b"GET http://example.test:8080/p?q=1 HTTP/1.1\r\nHost: ignored\r\n\r\n"
            + b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        first = (await read_response(reader))[2]
        assert first.startswith(b"GET /ws HTTP/1.1\r\n") and b"pgrade" not in first
        assert (await read_response(reader))[2].startswith(b"GET /after ")
        absolute = (await read_response(reader))[2]
        assert absolute.startswith(b"GET /p?q=1 HTTP/1.1\r\nHost: example.test:8080\r\n")
        assert (await read_response(reader))[2].startswith(b"OPTIONS * HTTP/1.1\r\n")
        writer.close()
        await proxy.shutdown(1.0)

    run(scenario())


async def _head_then_die(reader, writer, upstream: Upstream) -> None:  # type: ignore[no-untyped-def]
    """Sends a response head, then dies before any body byte (a SIGKILL mid-response)."""
    await upstream.read_request(reader)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
    await writer.drain()
    writer.transport.abort()


def test_response_head_is_held_until_the_body_so_a_dying_server_is_retried() -> None:
    async def scenario() -> None:
        dying = await start_upstream(_head_then_die, UPSTREAM_HOSTS[0])
        good = await start_upstream(keep_alive_ok, UPSTREAM_HOSTS[1])
        proxy, picker = await start_proxy([dying, good])

        status, _, body = await _get(proxy.port, request("/get"))
        assert status == 200 and b"GET /get" in body
        assert len(dying.complete) == 1 and proxy.stats.retries == 1
        assert picker.failed_pools == [picker.pools[0]]

        picker.next = 0  # a POST that got a head from the dying server: not replayed,
        status, _, _ = await _get(proxy.port, request("/post", "POST", body=b"data"))
        assert status == 502  # but answered cleanly, since nothing reached the client
        assert not any(b"/post" in head for head in good.heads)
        await proxy.shutdown(1.0)

    run(scenario())
