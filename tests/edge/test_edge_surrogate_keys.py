"""Surrogate keys from Surrogate-Key and Cache-Tag response fields."""

from __future__ import annotations

import pytest
from edge_support import stored

from millions.edge.surrogate_keys import parse_surrogate_keys, surrogate_keys

pytestmark = pytest.mark.timeout(30)


def test_surrogate_key_is_space_separated() -> None:
    assert parse_surrogate_keys([(b"surrogate-key", b"photo-1  user-7\tgallery")]) == [
        b"photo-1",
        b"user-7",
        b"gallery",
    ]


def test_cache_tag_is_comma_separated() -> None:
    assert parse_surrogate_keys([(b"cache-tag", b"a, b,c,,")]) == [b"a", b"b", b"c"]


def test_both_fields_and_repeated_lines_are_united_without_duplicates() -> None:
    headers = [
        (b"surrogate-key", b"a b"),
        (b"content-type", b"text/plain"),
        (b"cache-tag", b"b, c"),
        (b"surrogate-key", b"d a"),
    ]
    assert surrogate_keys(headers) == {b"a", b"b", b"c", b"d"}


def test_keys_are_case_sensitive() -> None:
    assert surrogate_keys([(b"surrogate-key", b"Photo photo")]) == {b"Photo", b"photo"}


def test_limits() -> None:
    many = b" ".join(b"k%d" % i for i in range(1000))
    assert len(parse_surrogate_keys([(b"surrogate-key", many)], max_keys=10)) == 10
    long_key = b"x" * 2000
    assert surrogate_keys([(b"surrogate-key", long_key + b" ok")]) == {b"ok"}
    assert surrogate_keys([(b"cache-tag", b"caf\xc3\xa9, bell\x07, fine")]) == {b"fine"}


def test_stored_entries_carry_their_keys() -> None:
    entry = stored([(b"cache-control", b"max-age=60"), (b"surrogate-key", b"photo-1 user-7")])
    assert entry.surrogate_keys == {b"photo-1", b"user-7"}
