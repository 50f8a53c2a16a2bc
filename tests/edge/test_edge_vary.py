"""Vary and secondary keys (RFC 9111 §4.1)."""

from __future__ import annotations

from random import Random

import pytest
from edge_support import NOW, http_date, stored
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.entry import CachedResponse
from millions.edge.headers import Header
from millions.edge.vary import parse_vary, secondary_key, select_variant

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize(
    "lines",
    [[b"*"], [b"*, *"], [b"*", b"*"], [b", *"], [b"", b"*"], [b"*, Foo"], [b"Foo, *"]],
)
def test_vary_star_anywhere_never_matches(lines: list[bytes]) -> None:
    assert parse_vary(lines) is None


def test_vary_names_are_normalized() -> None:
    assert parse_vary([b"User-Agent,  Accept-Encoding", b"accept-encoding"]) == (
        b"accept-encoding",
        b"user-agent",
    )
    assert parse_vary([]) == ()
    assert parse_vary([b""]) == ()


def test_nothing_varies_means_an_empty_key() -> None:
    assert secondary_key((), [(b"accept", b"x")]) == b""


def test_absent_and_empty_fields_differ() -> None:
    vary = (b"foo",)
    assert secondary_key(vary, []) != secondary_key(vary, [(b"foo", b"")])


def test_whitespace_and_line_splits_are_normalized() -> None:
    vary = (b"accept-language",)
    one = secondary_key(vary, [(b"accept-language", b"en, fr;q=0.5")])
    assert one == secondary_key(vary, [(b"accept-language", b"en ,fr;q=0.5 ")])
    assert one == secondary_key(
        vary, [(b"accept-language", b"en"), (b"accept-language", b"fr;q=0.5")]
    )


def test_accept_encoding_is_case_insensitive_other_values_are_not() -> None:
    encoding = (b"accept-encoding",)
    assert secondary_key(encoding, [(b"accept-encoding", b"GZIP")]) == secondary_key(
        encoding, [(b"accept-encoding", b"gzip")]
    )
    assert secondary_key((b"foo",), [(b"foo", b"A")]) != secondary_key((b"foo",), [(b"foo", b"a")])


def entry_for(vary: bytes, request_headers: list[Header], at: float = NOW) -> CachedResponse:
    return stored(
        [(b"cache-control", b"max-age=60"), (b"vary", vary), (b"date", http_date(at - NOW))],
        request_headers=request_headers,
        response_time=at,
    )


def test_select_variant_matches_the_varied_field() -> None:
    gzip = entry_for(b"Accept-Encoding", [(b"accept-encoding", b"gzip")])
    plain = entry_for(b"Accept-Encoding", [])
    assert select_variant([gzip, plain], [(b"accept-encoding", b"gzip")]) is gzip
    assert select_variant([gzip, plain], [(b"user-agent", b"x")]) is plain
    assert select_variant([gzip, plain], [(b"accept-encoding", b"br")]) is None


def test_select_variant_prefers_the_most_recent_match() -> None:
    old = entry_for(b"Foo", [(b"foo", b"1")])
    new = entry_for(b"Foo", [(b"foo", b"1")], at=NOW + 5)
    assert select_variant([old, new], [(b"foo", b"1")]) is new


def test_select_variant_without_vary() -> None:
    entry = stored([(b"cache-control", b"max-age=60")])
    assert select_variant([entry], [(b"anything", b"1")]) is entry
    assert select_variant([], []) is None


def test_variants_with_different_vary_lists() -> None:
    by_foo = entry_for(b"Foo", [(b"foo", b"1")])
    by_bar = entry_for(b"Bar", [(b"bar", b"2")], at=NOW + 1)
    assert select_variant([by_foo, by_bar], [(b"foo", b"1")]) is by_foo
    assert select_variant([by_foo, by_bar], [(b"foo", b"1"), (b"bar", b"2")]) is by_bar


# -- properties ----------------------------------------------------------------------------------

_names = st.sampled_from([b"accept", b"accept-encoding", b"user-agent", b"foo", b"cookie"])
_values = st.binary(min_size=0, max_size=20).filter(lambda v: b"\r" not in v and b"\n" not in v)
#: Values without list syntax or spaces, whose only normalization is Accept-Encoding's case.
_plain_values = st.binary(min_size=0, max_size=20).filter(
    lambda v: not any(byte in v for byte in b" \t,\r\n")
)


@given(
    st.lists(_names, min_size=1, max_size=3, unique=True),
    st.lists(st.tuples(_names, _values), max_size=8),
    st.lists(st.tuples(st.sampled_from([b"x-a", b"x-b", b"host", b"via"]), _values), max_size=6),
    st.randoms(use_true_random=False),
)
def test_order_of_unrelated_headers_does_not_matter(
    vary_names: list[bytes],
    headers: list[Header],
    unrelated: list[Header],
    random: Random,
) -> None:
    vary = parse_vary([b", ".join(vary_names)])
    assert vary is not None
    varied = [(name, value) for name, value in headers if name in vary]
    others = [(name, value) for name, value in headers if name not in vary] + unrelated
    random.shuffle(others)
    # Interleave the unrelated lines anywhere while keeping the varied lines' own order.
    mixed: list[Header] = []
    remaining = list(varied)
    for line in others:
        if remaining and random.random() < 0.5:
            mixed.append(remaining.pop(0))
        mixed.append(line)
    mixed.extend(remaining)
    assert secondary_key(vary, mixed) == secondary_key(vary, varied)


@given(_names, _plain_values, _plain_values, st.lists(st.tuples(_names, _values), max_size=5))
def test_changing_a_varied_field_changes_the_key(
    name: bytes, first: bytes, second: bytes, rest: list[Header]
) -> None:
    others = [(n, v) for n, v in rest if n != name]
    key_first = secondary_key((name,), [*others, (name, first)])
    key_second = secondary_key((name,), [*others, (name, second)])
    if name == b"accept-encoding":
        first, second = first.lower(), second.lower()
    assert (key_first == key_second) == (first == second)
    assert key_first != secondary_key((name,), others)
