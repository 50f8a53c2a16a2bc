"""Attacks and malformed input through a live edge in front of a raw origin.

Request smuggling: every ambiguous or malformed message is refused with a 4xx and the
connection is closed, and the smuggled request never reaches the origin (its bytes are
looked for in everything the origin received). Cache-key attacks: unkeyed headers,
header injection, absolute-form targets, fat GETs and path tricks never put one
request's response under a clean request's key. Fuzzing: random and mutated requests
get a well-formed response or a close, and the edge keeps serving.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httptools
import pytest
import uvloop
from edge_raw_origin import RawOrigin, cacheable_echo
from edge_server_support import run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millions.edge.server import EdgeServer
from millions.proxy import ProxySettings

pytestmark = pytest.mark.timeout(120)

EDGE_HOST = "127.0.102.1"
ORIGIN_HOST = "127.0.102.2"
FUZZ_EDGE_HOST = "127.0.103.1"
FUZZ_ORIGIN_HOST = "127.0.103.2"

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: cdn.example\r\n\r\n"
CHUNKED_END = b"0\r\n\r\n"


def post(fields: bytes, body: bytes) -> bytes:
    return b"POST /submit HTTP/1.1\r\nHost: cdn.example\r\n" + fields + b"\r\n" + body


def get(fields: bytes = b"", line: bytes = b"GET /page HTTP/1.1") -> bytes:
    return line + b"\r\nHost: cdn.example\r\n" + fields + b"\r\n"


SMUGGLING: dict[str, bytes] = {
    # two framings at once
    "CL.TE": post(
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(CHUNKED_END + SMUGGLED),
        CHUNKED_END + SMUGGLED,
    ),
    "TE.CL": post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", CHUNKED_END + SMUGGLED),
    "TE.CL with a tab": post(
        b"Transfer-Encoding:\tchunked\r\nContent-Length: 3\r\n", CHUNKED_END + SMUGGLED
    ),
    # Content-Length games
    "two content-lengths": post(
        b"Content-Length: 0\r\nContent-Length: %d\r\n" % len(SMUGGLED), SMUGGLED
    ),
    "the same content-length twice": post(b"Content-Length: 0\r\nContent-Length: 0\r\n", SMUGGLED),
    "content-length list": post(b"Content-Length: 0, %d\r\n" % len(SMUGGLED), SMUGGLED),
    "content-length with a plus": post(b"Content-Length: +0\r\n", SMUGGLED),
    "negative content-length": post(b"Content-Length: -1\r\n", SMUGGLED),
    "hex content-length": post(b"Content-Length: 0x0\r\n", SMUGGLED),
    "content-length with a space inside": post(b"Content-Length: 0 1\r\n", SMUGGLED),
    "content-length overflow": post(b"Content-Length: 99999999999999999999999\r\n", SMUGGLED),
    # Transfer-Encoding obfuscations
    "xchunked": post(b"Transfer-Encoding: xchunked\r\n", CHUNKED_END + SMUGGLED),
    "chunkedx": post(b"Transfer-Encoding: chunkedx\r\n", CHUNKED_END + SMUGGLED),
    "space before the name (obs-fold)": post(
        b" Transfer-Encoding: chunked\r\n", CHUNKED_END + SMUGGLED
    ),
    "space before the colon": post(b"Transfer-Encoding : chunked\r\n", CHUNKED_END + SMUGGLED),
    "chunked, identity": post(b"Transfer-Encoding: chunked, identity\r\n", CHUNKED_END + SMUGGLED),
    "identity, chunked": post(b"Transfer-Encoding: identity, chunked\r\n", CHUNKED_END + SMUGGLED),
    "gzip, chunked": post(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED_END + SMUGGLED),
    "transfer-encoding twice": post(
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n", CHUNKED_END + SMUGGLED
    ),
    "vertical tab before chunked": post(
        b"Transfer-Encoding:\x0bchunked\r\n", CHUNKED_END + SMUGGLED
    ),
    "quoted chunked": post(b'Transfer-Encoding: "chunked"\r\n', CHUNKED_END + SMUGGLED),
    "folded transfer-encoding": post(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED_END + SMUGGLED),
    "chunked in HTTP/1.0": b"POST /submit HTTP/1.0\r\nHost: cdn.example\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n" + CHUNKED_END + SMUGGLED,
    # line endings and bytes that parsers read differently
    "bare LF": b"GET /page HTTP/1.1\nHost: cdn.example\n\n" + SMUGGLED,
    "bare LF inside the head": b"GET /page HTTP/1.1\r\nHost: cdn.example\nX-A: 1\r\n\r\n"
    + SMUGGLED,
    "bare CR inside the head": b"GET /page HTTP/1.1\r\nHost: cdn.example\rX-A: 1\r\n\r\n"
    + SMUGGLED,
    "obs-fold": get(b"X-A: 1\r\n 2\r\n") + SMUGGLED,
    "NUL in a header value": get(b"X-A: a\x00b\r\n") + SMUGGLED,
    "CR in a header value": get(b"X-A: a\rb\r\n") + SMUGGLED,
    "control character in a header value": get(b"X-A: a\x01b\r\n") + SMUGGLED,
    "NUL in the target": get(line=b"GET /pa\x00ge HTTP/1.1") + SMUGGLED,
    "space in a header name": get(b"X A: 1\r\n") + SMUGGLED,
    "header without a colon": get(b"X-A 1\r\n") + SMUGGLED,
    # sizes
    "oversized header": get(b"X-Big: " + b"a" * 20000 + b"\r\n") + SMUGGLED,
    "oversized request line": get(line=b"GET /" + b"a" * 20000 + b" HTTP/1.1") + SMUGGLED,
    "too many headers": get(b"".join(b"X-%d: %s\r\n" % (i, b"v" * 90) for i in range(200)))
    + SMUGGLED,
    # chunk sizes
    "invalid chunk size": post(b"Transfer-Encoding: chunked\r\n", b"zz\r\n" + SMUGGLED),
    "chunk size overflow": post(
        b"Transfer-Encoding: chunked\r\n", b"fffffffffffffffffff\r\n" + SMUGGLED
    ),
    "negative chunk size": post(b"Transfer-Encoding: chunked\r\n", b"-1\r\n" + SMUGGLED),
    "chunk size with a space inside": post(
        b"Transfer-Encoding: chunked\r\n", b"1 0\r\n" + SMUGGLED
    ),
    "chunk size prefixed 0x": post(b"Transfer-Encoding: chunked\r\n", b"0x2e\r\n" + SMUGGLED),
    "chunk data without its CRLF": post(
        b"Transfer-Encoding: chunked\r\n", b"3\r\nabcX" + CHUNKED_END + SMUGGLED
    ),
    "bare LF after the chunk size": post(
        b"Transfer-Encoding: chunked\r\n", b"3\nabc\r\n" + CHUNKED_END + SMUGGLED
    ),
    # versions
    "HTTP/0.9": b"GET /smuggled\r\n\r\n",
    "HTTP/1.2": get(line=b"GET /page HTTP/1.2") + SMUGGLED,
    "HTTP/2.0": get(line=b"GET /page HTTP/2.0") + SMUGGLED,
    "HTTP/3.0": get(line=b"GET /page HTTP/3.0") + SMUGGLED,
    "lower-case version": get(line=b"GET /page http/1.1") + SMUGGLED,
    "version with two digits": get(line=b"GET /page HTTP/1.10") + SMUGGLED,
    "no version": get(line=b"GET /page") + SMUGGLED,
    "lower-case method": get(line=b"get /page HTTP/1.1") + SMUGGLED,
    "CONNECT": b"CONNECT cdn.example:443 HTTP/1.1\r\nHost: cdn.example:443\r\n\r\n" + SMUGGLED,
}


@asynccontextmanager
async def edge_and_origin(
    host: str = EDGE_HOST, origin_host: str = ORIGIN_HOST, timeout_s: float = 10.0
) -> AsyncIterator[tuple[EdgeServer, RawOrigin]]:
    """An edge in front of a reflecting raw origin; `timeout_s` bounds heads and bodies."""
    origin = RawOrigin(origin_host, cacheable_echo)
    await origin.start()
    settings = ProxySettings(
        via=b"1.1 edge-attacks", linger_s=0.2, header_timeout_s=timeout_s, body_timeout_s=timeout_s
    )
    edge = EdgeServer(origin.url, (host, 0), 1 << 20, "edge-attacks", settings)
    await edge.start()
    try:
        yield edge, origin
    finally:
        await edge.stop(0.5)
        await origin.stop()


async def send(port: int, data: bytes, wait_s: float = 3.0) -> bytes:
    """Send `data` (no half-close: the edge must close by itself); all it sends back."""
    reader, writer = await asyncio.open_connection(EDGE_HOST, port)
    try:
        writer.write(data)
        async with asyncio.timeout(wait_s):
            return await reader.read(-1)
    finally:
        writer.close()


async def fetch(port: int, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """One request on a fresh connection and its response (Content-Length framed)."""
    reader, writer = await asyncio.open_connection(EDGE_HOST, port)
    try:
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
        return int(lines[0].split(b" ")[1]), headers, body
    finally:
        writer.close()


# -- request smuggling ------------------------------------------------------------------


def test_smuggling_attempts_are_refused_and_never_reach_the_origin() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            for name, data in SMUGGLING.items():
                answer = await send(edge.port, data)
                status_line, _, rest = answer.partition(b"\r\n")
                assert status_line[:10] == b"HTTP/1.1 4", (name, answer[:200])
                assert b"\r\nconnection: close\r\n" in rest.partition(b"\r\n\r\n")[0].lower() + (
                    b"\r\n"
                ), name
                assert answer.count(b"HTTP/1.1 ") == 1, (name, answer[:400])
            # the edge still serves, and nothing smuggled ever reached the origin
            status, _, _ = await fetch(edge.port, get())
            assert status == 200
            assert b"/smuggled" not in origin.received
            assert origin.count(b"/smuggled") == 0
            assert all(request.target in (b"/page", b"/submit") for request in origin.requests)

    run(scenario(), timeout_s=60)


def test_nothing_pipelined_behind_a_closing_answer_is_handled() -> None:
    """Requests that arrive in the same packet as one the edge answers at once and then
    closes (a 400 for a bad Host, a cache hit with Connection: close, an HTTP/1.0 hit)
    are never handled: the connection is done."""

    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            assert (await fetch(edge.port, get()))[1][b"x-cache"] == b"MISS"
            for first in (
                b"GET /page HTTP/1.1\r\nHost: bad host\r\n\r\n",
                b"GET /page HTTP/1.1\r\nHost: [::1\r\n\r\n",
                get(b"Connection: close\r\n"),
                b"GET /page HTTP/1.0\r\nHost: cdn.example\r\n\r\n",
            ):
                answer = await send(edge.port, first + SMUGGLED + SMUGGLED)
                assert answer.count(b"HTTP/1.1 ") == 1, (first, answer[:300])
            # a later request as a barrier: a smuggled one would have been sent before it
            assert (await fetch(edge.port, get(line=b"GET /later HTTP/1.1")))[0] == 200
            assert b"/smuggled" not in origin.received
            assert [r.target for r in origin.requests] == [b"/page", b"/later"]

    run(scenario())


def test_a_valid_pipelined_request_behind_a_body_is_not_smuggled() -> None:
    """Control for the test above: a correctly framed body that looks like a request is a
    body (the origin sees it inside the POST), and a real pipelined GET is a request."""

    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            data = post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED) + get()
            reader, writer = await asyncio.open_connection(EDGE_HOST, edge.port)
            writer.write(data)
            first = await reader.readuntil(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 200")
            writer.close()
            await asyncio.sleep(0)
            assert [r.target for r in origin.requests][:1] == [b"/submit"]
            assert origin.requests[0].body == SMUGGLED
            assert origin.count(b"/smuggled") == 0

    run(scenario())


# -- cache keys -----------------------------------------------------------------------------

#: Fields frameworks use to rewrite the host, URL, scheme or method.
OVERRIDES = (
    b"X-Forwarded-Host",
    b"X-Host",
    b"X-Forwarded-Server",
    b"X-HTTP-Host-Override",
    b"X-Original-Host",
    b"X-Original-URL",
    b"X-Rewrite-URL",
    b"X-Original-URI",
    b"X-Forwarded-Uri",
    b"X-Forwarded-Prefix",
    b"X-Forwarded-Scheme",
    b"X-Forwarded-Proto",
    b"X-Forwarded-Port",
    b"Forwarded",
    b"X-Forwarded-SSL",
    b"Front-End-Https",
    b"X-Url-Scheme",
    b"X-HTTP-Method-Override",
    b"X-HTTP-Method",
    b"X-Method-Override",
    b"X_Forwarded_Host",  # CGI-style servers read it as X-Forwarded-Host
    b"x_original_url",
)


def test_unkeyed_override_headers_cannot_poison_the_clean_key() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            for index, name in enumerate(OVERRIDES):
                target = b"/page-%d" % index
                line = b"GET " + target + b" HTTP/1.1"
                poisoned = get(name + b": evil.example/evil\r\n", line)
                status, headers, body = await fetch(edge.port, poisoned)
                assert (status, headers[b"x-cache"]) == (200, b"MISS"), name
                assert origin.requests[-1].header(name.lower()) is None, name
                assert b"evil" not in origin.received, name
                status, headers, body = await fetch(edge.port, get(line=line))
                assert (status, headers[b"x-cache"]) == (200, b"HIT"), name
                assert b"evil" not in body, name

    run(scenario())


def test_header_injection_through_the_target_and_fields() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            for data in (
                get(line=b"GET /a\r\nX-Injected: 1 HTTP/1.1"),
                get(line=b"GET /a\nX-Injected: 1 HTTP/1.1"),
                get(b"X-A: 1\rX-Injected: 1\r\n"),
                get(b"X-A: 1\nX-Injected: 1\r\n"),
            ):
                answer = await send(edge.port, data)
                assert answer.startswith(b"HTTP/1.1 400"), (data, answer[:200])
            # percent-encoded CR LF stay encoded all the way to the origin
            status, _, _ = await fetch(edge.port, get(line=b"GET /a%0d%0aX-Injected:%201 HTTP/1.1"))
            assert status == 200
            assert origin.requests[-1].target == b"/a%0D%0AX-Injected:%201"
            assert all(r.header(b"x-injected") is None for r in origin.requests)

    run(scenario())


def test_absolute_form_origin_form_and_host_share_one_key_per_authority() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            first = await fetch(edge.port, get(line=b"GET http://cdn.example/abs HTTP/1.1"))
            assert first[1][b"x-cache"] == b"MISS"
            for same in (
                get(line=b"GET /abs HTTP/1.1"),
                get(line=b"GET http://CDN.example:80/abs HTTP/1.1"),
                b"GET /abs HTTP/1.1\r\nHost: CDN.EXAMPLE.:80\r\n\r\n",
            ):
                status, headers, body = await fetch(edge.port, same)
                assert (status, headers[b"x-cache"], body) == (200, b"HIT", first[2]), same
            # another authority in the target wins over Host (RFC 9112 §3.2.2): it is
            # keyed and forwarded as that authority, never stored under cdn.example
            other = await fetch(edge.port, get(line=b"GET http://other.example/abs2 HTTP/1.1"))
            assert other[1][b"x-cache"] == b"MISS"
            assert origin.requests[-1].header(b"host") == b"other.example"
            clean = await fetch(edge.port, get(line=b"GET /abs2 HTTP/1.1"))
            assert clean[1][b"x-cache"] == b"MISS"
            assert origin.requests[-1].header(b"host") == b"cdn.example"
            # userinfo, other schemes and authority-form are refused
            for data in (
                get(line=b"GET http://evil@cdn.example/abs HTTP/1.1"),
                get(line=b"GET ftp://cdn.example/abs HTTP/1.1"),
                get(line=b"GET cdn.example:80 HTTP/1.1"),
                get(line=b"GET * HTTP/1.1"),
            ):
                answer = await send(edge.port, data)
                assert answer.startswith(b"HTTP/1.1 400"), (data, answer[:200])
            assert origin.count(b"/abs") == 1

    run(scenario())


def test_fat_get_is_passed_and_never_cached() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            fat = get(b"Content-Length: 12\r\n", b"GET /fat HTTP/1.1") + b"evil=payload"
            status, headers, _ = await fetch(edge.port, fat)
            assert (status, headers[b"x-cache"]) == (200, b"PASS")
            assert origin.requests[-1].body == b"evil=payload"
            status, headers, _ = await fetch(edge.port, get(line=b"GET /fat HTTP/1.1"))
            assert (status, headers[b"x-cache"]) == (200, b"MISS")
            assert origin.requests[-1].body == b""
            assert origin.count(b"/fat") == 2
            # the clean entry is not replaced or served to a fat GET either
            status, headers, _ = await fetch(edge.port, fat)
            assert headers[b"x-cache"] == b"PASS" and origin.count(b"/fat") == 3

    run(scenario())


def test_path_forms_are_keyed_as_they_are_forwarded() -> None:
    """The key is exactly what the origin is asked for: equivalent spellings (percent-
    encoded unreserved characters, case of hex digits) share an entry; dot-segments,
    double slashes and encoded slashes are kept as sent, for the origin to interpret."""

    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):

            async def target_seen(target: bytes) -> tuple[bytes, bytes]:
                status, headers, _ = await fetch(edge.port, get(line=b"GET %s HTTP/1.1" % target))
                assert status == 200, target
                return headers[b"x-cache"], origin.requests[-1].target

            assert await target_seen(b"/p/../q") == (b"MISS", b"/p/../q")
            assert await target_seen(b"/p/%2e%2e/q") == (b"HIT", b"/p/../q")
            assert await target_seen(b"/p/%2E%2E/q") == (b"HIT", b"/p/../q")
            assert await target_seen(b"/q") == (b"MISS", b"/q")
            assert await target_seen(b"/%71") == (b"HIT", b"/q")
            assert await target_seen(b"//q") == (b"MISS", b"//q")
            assert await target_seen(b"/%2Fq") == (b"MISS", b"/%2Fq")
            assert await target_seen(b"/%2fq") == (b"HIT", b"/%2Fq")
            assert await target_seen(b"/./q") == (b"MISS", b"/./q")
            assert await target_seen(b"/p/..%2fq") == (b"MISS", b"/p/..%2Fq")
            for bad in (b"/%zz", b"/%2", b"/q#frag"):
                answer = await send(edge.port, get(line=b"GET %s HTTP/1.1" % bad))
                assert answer.startswith(b"HTTP/1.1 400"), bad

    run(scenario())


def test_missing_duplicated_or_invalid_host_is_400() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin):
            for data in (
                b"GET /h HTTP/1.1\r\n\r\n",
                b"GET /h HTTP/1.0\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn.example\r\nHost: other.example\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn.example\r\nhost: cdn.example\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: \r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn.example, other.example\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn example\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn.example/path\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: user@cdn.example\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn.example:99999\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn.example:8o\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: [::1\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: cdn_example\xff\r\n\r\n",
                b"GET /h HTTP/1.1\r\nHost: " + b"a" * 300 + b"\r\n\r\n",
            ):
                answer = await send(edge.port, data)
                assert answer.startswith(b"HTTP/1.1 400"), (data, answer[:200])
                assert b"\r\nconnection: close\r\n" in answer.lower(), data
            assert origin.requests == []

    run(scenario())


# -- fuzzing ----------------------------------------------------------------------------------


@dataclass
class LiveEdge:
    """An edge and origin running on their own loop in a thread, for Hypothesis."""

    port: int
    edge: EdgeServer
    loop: asyncio.AbstractEventLoop


@pytest.fixture(scope="module")
def live_edge() -> Iterator[LiveEdge]:
    ready = threading.Event()
    state: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        state["stop"] = stop
        async with edge_and_origin(FUZZ_EDGE_HOST, FUZZ_ORIGIN_HOST, timeout_s=1.0) as (edge, _):
            state["edge"] = edge
            state["loop"] = asyncio.get_running_loop()
            ready.set()
            await stop.wait()

    thread = threading.Thread(target=uvloop.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    edge = state["edge"]
    loop = state["loop"]
    assert isinstance(edge, EdgeServer) and isinstance(loop, asyncio.AbstractEventLoop)
    yield LiveEdge(edge.port, edge, loop)
    stop = state["stop"]
    assert isinstance(stop, asyncio.Event)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


class _Responses:
    """httptools callbacks: count complete responses."""

    def __init__(self) -> None:
        self.complete = 0

    def on_message_complete(self) -> None:
        self.complete += 1


def exchange_blocking(port: int, data: bytes, timeout_s: float = 5.0) -> bytes:
    """Send `data`, half-close, read until the edge closes."""
    with socket.create_connection((FUZZ_EDGE_HOST, port), timeout=timeout_s) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the edge may have closed already; read what it sent
        received = b""
        try:
            while piece := sock.recv(65536):
                received += piece
        except ConnectionResetError:
            pass
        return received


def assert_well_formed(answer: bytes, request: bytes) -> None:
    """Every response is valid HTTP/1.1 with a 3-digit status, framed so that a strict
    parser reads whole messages (unless a HEAD made bodies ambiguous)."""
    if not answer:
        return
    assert answer.startswith(b"HTTP/1.1 ") and answer[9:12].isdigit(), answer[:100]
    if b"HEAD" in request:
        return
    responses = _Responses()
    parser = httptools.HttpResponseParser(responses)
    parser.feed_data(answer)  # raises on a malformed response
    assert responses.complete >= 1, answer[:200]


def assert_still_serving(port: int) -> None:
    answer = exchange_blocking(port, b"GET /alive HTTP/1.1\r\nHost: cdn.example\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


PIECES = [
    b"GET ",
    b"HEAD ",
    b"POST ",
    b"/ ",
    b"/a?b=c ",
    b"http://cdn.example/x ",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"\r\n",
    b"\n",
    b"\r",
    b"Host: cdn.example",
    b"Host: ",
    b"Content-Length: 3",
    b"Content-Length: 0",
    b"Transfer-Encoding: chunked",
    b"Range: bytes=0-1,3-4",
    b"If-None-Match: *",
    b"Cache-Control: only-if-cached",
    b"X-Forwarded-Host: evil",
    b"Connection: close",
    b"Expect: 100-continue",
    b": ",
    b" ",
    b"\t",
    b"\x00",
    b"abc",
    b"%",
    b"0\r\n\r\n",
    b"3\r\nabc\r\n",
]

VALID = (
    b"GET /fuzz HTTP/1.1\r\nHost: cdn.example\r\nRange: bytes=0-3\r\n\r\n",
    b"POST /fuzz HTTP/1.1\r\nHost: cdn.example\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    b'GET http://cdn.example/fuzz?x=1 HTTP/1.1\r\nHost: cdn.example\r\nIf-None-Match: "a"\r\n\r\n',
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with a few bytes replaced, inserted or deleted."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(("replace", "insert", "delete")))
        byte = draw(st.sampled_from(b"\x00\r\n \t:/%\x7f\xff0aA"))
        if action == "insert" or position == len(data):
            data.insert(position, byte)
        elif action == "replace":
            data[position] = byte
        else:
            del data[position]
    return bytes(data)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=300),
        st.lists(st.sampled_from(PIECES), max_size=25).map(b"".join),
        mutated(),
        st.tuples(st.sampled_from(VALID), mutated()).map(b"".join),  # pipelined
    )
)
def test_fuzzed_requests_never_break_the_edge(live_edge: LiveEdge, data: bytes) -> None:
    answer = exchange_blocking(live_edge.port, data)
    assert_well_formed(answer, data)
    assert_still_serving(live_edge.port)
