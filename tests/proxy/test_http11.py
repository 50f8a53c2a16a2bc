"""The pure wire helpers, checked against simple reference implementations."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from millions.proxy.http11 import (
    RequestIds,
    connection_tokens,
    local_response,
    scan_response_headers,
    status_line,
    valid_request_id,
)

HOP = {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-!#$%&'*+.^_`|~"
names = st.one_of(
    st.text(TOKEN_CHARS, min_size=1, max_size=12),
    st.sampled_from(
        [
            "Connection",
            "connection",
            "CONNECTION",
            "Keep-Alive",
            "te",
            "TE",
            "Trailer",
            "Upgrade",
            "Transfer-Encoding",
            "transfer-encoding",
            "Proxy-Connection",
            "Content-Length",
            "X-Te",
            "Tea",
            "Connectionx",
            "X-Foo",
            "x-foo",
        ]
    ),
)
values = st.one_of(
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.sampled_from(
        [
            "chunked",
            " Chunked ",
            "gzip, chunked",
            "keep-alive",
            "close",
            "x-foo",
            "close, X-Foo",
            "12",
        ]
    ),
)


def _reference(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bool, bool]:
    """Line by line, as RFC 9110 section 7.6.1 says."""
    named: set[bytes] = set()
    te_values = []
    for name, value in headers:
        if name.lower() == b"connection":
            named |= {t.strip().lower() for t in value.split(b",")} - {
                b"close",
                b"keep-alive",
                b"upgrade",
                b"",
            }
        if name.lower() == b"transfer-encoding":
            te_values.append(value.strip().lower())
    kept = b"".join(
        b"\r\n" + name + b":" + value
        for name, value in headers
        if name.lower() not in HOP | {b"transfer-encoding"} | named
    )
    chunked = te_values[:1] == [b"chunked"]
    bad = bool(te_values) and te_values != [b"chunked"]
    return kept, chunked and not bad, bad


@given(st.lists(st.tuples(names, values), max_size=8))
def test_scan_response_headers_matches_reference(pairs: list[tuple[str, str]]) -> None:
    headers = [(n.encode(), (" " + v).encode()) for n, v in pairs]
    block = b"".join(b"\r\n" + name + b":" + value for name, value in headers)
    kept, chunked, bad = scan_response_headers(block)
    want_kept, want_chunked, want_bad = _reference(headers)
    assert kept == want_kept
    assert bad == want_bad
    assert chunked == want_chunked or bad


def test_connection_tokens_skip_options() -> None:
    assert connection_tokens(b" Keep-Alive, X-Foo ,close,, Upgrade") == [b"x-foo"]


@given(st.binary(max_size=40))
def test_request_id_validation(value: bytes) -> None:
    allowed = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
    assert valid_request_id(value) == (0 < len(value) <= 128 and set(value) <= allowed)


def test_request_ids_unique_and_valid() -> None:
    first, second = RequestIds(), RequestIds()
    ids = [first.next() for _ in range(1000)] + [second.next() for _ in range(1000)]
    assert len(set(ids)) == 2000
    assert all(valid_request_id(i) for i in ids)


def test_local_response_framing() -> None:
    response = local_response(503, b"down\n", close=True)
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"\r\nContent-Length: 5" in head and b"\r\nConnection: close" in head
    assert body == b"down\n"
    assert local_response(200, b"abc", head_only=True).endswith(
        b"Content-Length: 3\r\nCache-Control: no-store\r\n\r\n"
    )
    assert status_line(299) == b"HTTP/1.1 299 \r\n"
