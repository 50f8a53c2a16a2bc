"""List and quoted-string syntax shared by the cache fields (RFC 9110 §5.6)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.headers import connection_listed, first_value, split_list, unquote

pytestmark = pytest.mark.timeout(30)


def test_split_list_drops_empty_members_and_whitespace() -> None:
    assert split_list(b" a ,, b\t,c , ") == [b"a", b"b", b"c"]


def test_split_list_keeps_commas_inside_quoted_strings() -> None:
    assert split_list(b'a="x, y", b="q\\", r", c') == [b'a="x, y"', b'b="q\\", r"', b"c"]


def test_unquote() -> None:
    assert unquote(b'"abc"') == b"abc"
    assert unquote(b'"a\\"b\\\\"') == b'a"b\\'
    for invalid in (b"abc", b'"abc', b'"a"b"', b'"a\\"', b'"'):
        assert unquote(invalid) is None


def test_connection_listed_names() -> None:
    headers = [(b"connection", b"close, X-Hop"), (b"connection", b"keep-alive, te")]
    assert connection_listed(headers) == {b"close", b"x-hop", b"keep-alive", b"te"}


def test_first_value() -> None:
    assert first_value([(b"a", b"1"), (b"a", b"2")], b"a") == b"1"
    assert first_value([], b"a") is None


@given(st.binary(max_size=120))
def test_split_list_never_raises_and_members_are_trimmed(value: bytes) -> None:
    for member in split_list(value):
        assert member and member == member.strip(b" \t")
