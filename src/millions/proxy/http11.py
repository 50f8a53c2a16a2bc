"""HTTP/1.1 wire pieces the proxy builds: status lines, local responses, chunk framing,
header classification, forwarding headers and request ids. Pure functions and constants.

Everything here is bytes in, bytes out, with the byte strings precomputed where the hot
path uses them: the proxy never formats a status line or a constant header per request.
"""

from __future__ import annotations

import itertools
import os
import re
from http import HTTPStatus

CRLF = b"\r\n"
COLON_SP = b": "

#: Reason phrases come from our table, never from the upstream (normalized output).
STATUS_LINES: dict[int, bytes] = {
    status.value: b"HTTP/1.1 %d %s\r\n" % (status.value, status.phrase.encode("ascii"))
    for status in HTTPStatus
}


#: The status line without its CRLF, for heads assembled as CRLF-prefixed header lines.
STATUS_STARTS: dict[int, bytes] = {code: line[:-2] for code, line in STATUS_LINES.items()}


def status_start(status: int) -> bytes:
    """`HTTP/1.1 <status> <reason>` (no CRLF)."""
    start = STATUS_STARTS.get(status)
    if start is None:
        start = b"HTTP/1.1 %d " % status
    return start


def status_line(status: int) -> bytes:
    """`HTTP/1.1 <status> <reason>\\r\\n`; unknown codes get an empty reason."""
    line = STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d \r\n" % status
    return line


# -- header classification ---------------------------------------------------------------
# Request and response headers the proxy does not pass through verbatim. The code says
# what to do with it; every other header is end-to-end and forwarded as received.
HOST = 1
CONTENT_LENGTH = 2
TRANSFER_ENCODING = 3
CONNECTION = 4
HOP_BY_HOP = 5  # dropped: only meaningful for one connection
X_FORWARDED_FOR = 6
X_FORWARDED_PROTO = 7
X_REQUEST_ID = 8
EXPECT = 9

#: Hop-by-hop headers (RFC 9110 section 7.6.1) besides Connection itself.
_HOP_NAMES = (b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade")

REQUEST_HEADERS: dict[bytes, int] = {
    b"host": HOST,
    b"content-length": CONTENT_LENGTH,
    b"transfer-encoding": TRANSFER_ENCODING,
    b"connection": CONNECTION,
    b"x-forwarded-for": X_FORWARDED_FOR,
    b"x-forwarded-proto": X_FORWARDED_PROTO,
    b"x-request-id": X_REQUEST_ID,
    b"expect": EXPECT,
    **dict.fromkeys(_HOP_NAMES, HOP_BY_HOP),
}

# Response header lines the proxy must act on. The block was validated by llhttp's strict
# parser first (names are tokens, no whitespace before the colon, CR and LF only as line
# ends), so a CRLF followed by one of these names and a colon is a header line.
_RESPONSE_HOP_LINE = re.compile(
    rb"\r\n(?:connection|keep-alive|proxy-connection|te|trailer|upgrade|transfer-encoding)"
    rb":[^\r]*",
    re.IGNORECASE,
)
_CONTENT_LENGTH_LINE = re.compile(rb"\r\ncontent-length:", re.IGNORECASE)


def scan_response_headers(block: bytes) -> tuple[bytes, bool, bool]:
    """Remove the hop-by-hop lines of a response header block and read its framing.

    `block` holds the header lines, each preceded by CRLF (`b"\\r\\nA: 1\\r\\nB: 2"`).
    Returns `(kept, chunked, bad_framing)`: `kept` is the block without Connection, the
    headers it names, Keep-Alive, Proxy-Connection, TE, Trailer, Upgrade and
    Transfer-Encoding (the proxy frames the body itself); `bad_framing` is a
    Transfer-Encoding other than exactly `chunked`.

    One regex pass over the block costs far less than a Python callback per header line,
    and the common response has one such line or none.
    """
    found = _RESPONSE_HOP_LINE.findall(block)
    if not found:
        return block, False, False
    if len(found) == 1:  # the usual case: one well-known line
        known = _KNOWN_HOP_LINES.get(found[0])
        if known is not None:
            return block.replace(found[0], b"", 1), known, False
    chunked = bad = False
    named: list[bytes] | None = None
    for line in found:
        colon = line.index(b":")
        name = line[2:colon].lower()
        value = line[colon + 1 :].strip().lower()
        if name == b"connection":
            if value not in CONNECTION_OPTIONS:
                named = (named or []) + connection_tokens(value)
        elif name == b"transfer-encoding":
            if value == b"chunked" and not chunked:
                chunked = True
            else:
                bad = True
        # lines are removed in order, and a value cannot hold CRLF: the first match is it
        block = block.replace(line, b"", 1)
    if named:
        block = b"".join(
            b"\r\n" + line
            for line in block.split(b"\r\n")[1:]
            if line.partition(b":")[0].lower() not in named
        )
    return block, chunked, bad


# Hop-by-hop lines as most servers spell them -> whether the body is chunked.
_KNOWN_HOP_LINES = {
    b"\r\nConnection: keep-alive": False,
    b"\r\nConnection: close": False,
    b"\r\nconnection: keep-alive": False,
    b"\r\nconnection: close": False,
    b"\r\nTransfer-Encoding: chunked": True,
    b"\r\ntransfer-encoding: chunked": True,
}


def has_content_length(block: bytes) -> bool:
    """Whether a response header block has a Content-Length line."""
    return _CONTENT_LENGTH_LINE.search(block) is not None


#: Connection options that are not header names and so need no extra stripping.
CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})

IDEMPOTENT_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})


def connection_tokens(value: bytes) -> list[bytes]:
    """Lower-cased tokens of a Connection header value, options excluded."""
    tokens = []
    for item in value.split(b","):
        token = item.strip().lower()
        if token and token not in CONNECTION_OPTIONS:
            tokens.append(token)
    return tokens


def is_chunked(value: bytes) -> bool:
    """True when a Transfer-Encoding value is exactly `chunked` (any case, no list)."""
    return value.strip().lower() == b"chunked"


def drop_named(head_lines: list[bytes], names: list[bytes]) -> list[bytes]:
    """Remove header lines whose lower-cased name is in `names` from a flat
    `[name, ": ", value, CRLF, ...]` list (headers a Connection header listed)."""
    kept: list[bytes] = []
    for index in range(0, len(head_lines), 4):
        if head_lines[index].lower() not in names:
            kept.extend(head_lines[index : index + 4])
    return kept


# -- forwarding headers -------------------------------------------------------------------
_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")


def valid_request_id(value: bytes) -> bool:
    """An incoming X-Request-Id is kept when it is 1-128 chars of [A-Za-z0-9._:-]."""
    return _REQUEST_ID.fullmatch(value) is not None


class RequestIds:
    """Unique request ids: a random per-process prefix and a counter, e.g. `3f9a0c1be2d4-1a`.

    Much cheaper than uuid4 per request, and unique across processes and restarts as long as
    the 48-bit prefixes differ.
    """

    __slots__ = ("counter", "prefix")

    def __init__(self, prefix: bytes | None = None) -> None:
        self.prefix = (prefix if prefix is not None else os.urandom(6).hex().encode()) + b"-"
        self.counter = itertools.count(1)

    def next(self) -> bytes:
        return self.prefix + b"%x" % next(self.counter)


# -- framing --------------------------------------------------------------------------------
LAST_CHUNK = b"0\r\n\r\n"
CHUNKED_HEADER = b"Transfer-Encoding: chunked\r\n"
# the same as CRLF-prefixed lines, for heads assembled from header blocks
CHUNKED_LINE = b"\r\nTransfer-Encoding: chunked"
CLOSE_LINE = b"\r\nConnection: close"
KEEP_ALIVE_LINE = b"\r\nConnection: keep-alive"
HEAD_END = b"\r\n\r\n"
CONNECTION_CLOSE = b"Connection: close\r\n"
CONNECTION_KEEP_ALIVE = b"Connection: keep-alive\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"


def chunk_size_line(size: int) -> bytes:
    """The `<hex size>\\r\\n` line that starts a chunk."""
    return b"%x\r\n" % size


def content_length_line(size: int) -> bytes:
    return b"Content-Length: %d\r\n" % size


def local_response(
    status: int,
    body: bytes,
    content_type: bytes = b"text/plain; charset=utf-8",
    *,
    close: bool = False,
    keep_alive_header: bool = False,
    head_only: bool = False,
    extra_headers: tuple[tuple[bytes, bytes], ...] = (),
) -> bytes:
    """A complete response the proxy answers itself (errors, ops endpoints).

    `head_only` answers a HEAD request: the Content-Length of the body, without the body.
    """
    parts = [status_line(status)]
    if status >= 200 and status not in (204, 304):
        parts.append(b"Content-Type: " + content_type + CRLF)
        parts.append(content_length_line(len(body)))
    parts.append(b"Cache-Control: no-store\r\n")
    for name, value in extra_headers:
        parts.append(name + COLON_SP + value + CRLF)
    if close:
        parts.append(CONNECTION_CLOSE)
    elif keep_alive_header:
        parts.append(CONNECTION_KEEP_ALIVE)
    parts.append(CRLF)
    if not head_only and status >= 200 and status not in (204, 304):
        parts.append(body)
    return b"".join(parts)
