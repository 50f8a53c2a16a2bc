"""Keyspace ranges: Vitess-style names, containment, splitting, set arithmetic, hashing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.shards.keyspace import (
    KEYSPACE_END,
    KeyRange,
    KeyRangeError,
    add_range,
    covers_all,
    even_split,
    from_stored_hash,
    key_hash,
    normalize,
    parse_keyspace_id,
    stored_hash,
    subtract_range,
)

ids = st.integers(min_value=0, max_value=KEYSPACE_END - 1)


@st.composite
def key_ranges(draw: st.DrawFn) -> KeyRange:
    start = draw(st.integers(min_value=0, max_value=KEYSPACE_END - 1))
    end = draw(st.integers(min_value=start + 1, max_value=KEYSPACE_END))
    return KeyRange(start, end)


@st.composite
def byte_aligned_ranges(draw: st.DrawFn) -> KeyRange:
    """Ranges whose bounds are whole bytes, as people write them (`40-80`, `4080-41`)."""
    digits = draw(st.integers(min_value=1, max_value=8))
    step = 1 << (64 - 8 * digits)
    start = draw(st.integers(min_value=0, max_value=KEYSPACE_END // step - 1)) * step
    end = draw(st.integers(min_value=start // step + 1, max_value=KEYSPACE_END // step)) * step
    return KeyRange(start, end)


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("-", 0, KEYSPACE_END),
        ("-80", 0, 0x80 << 56),
        ("80-", 0x80 << 56, KEYSPACE_END),
        ("40-80", 0x40 << 56, 0x80 << 56),
        ("4080-41", 0x4080 << 48, 0x41 << 56),
        ("0000000000000001-0000000000000002", 1, 2),
    ],
)
def test_names_parse_to_their_bounds(name: str, start: int, end: int) -> None:
    parsed = KeyRange.parse(name)
    assert (parsed.start, parsed.end) == (start, end)
    assert parsed.name == name


def test_parsing_normalizes_case_spaces_and_zero_bytes() -> None:
    assert KeyRange.parse(" 4A-C0 ").name == "4a-c0"
    assert KeyRange.parse("4000-8000").name == "40-80"
    assert KeyRange.parse("00-80").name == "-80"


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("", "must look like"),
        ("80", "must look like"),
        ("-40-80", "must look like"),
        ("4-8", "whole bytes"),
        ("zz-", "not hex"),
        ("80-40", "empty"),
        ("40-40", "empty"),
        ("000000000000000001-", "whole bytes"),
    ],
)
def test_bad_names_are_refused_with_a_reason(name: str, problem: str) -> None:
    with pytest.raises(KeyRangeError, match=problem):
        KeyRange.parse(name)


@given(key_ranges())
def test_every_range_round_trips_through_its_name(key_range: KeyRange) -> None:
    assert KeyRange.parse(key_range.name) == key_range


@given(byte_aligned_ranges())
def test_byte_aligned_names_keep_their_digits(key_range: KeyRange) -> None:
    low, high = key_range.name.split("-")
    assert len(low) % 2 == 0 and len(high) % 2 == 0
    assert len(low) <= 16 and len(high) <= 16


@given(key_ranges(), ids)
def test_contains_is_half_open(key_range: KeyRange, keyspace_id: int) -> None:
    assert key_range.contains(keyspace_id) == (key_range.start <= keyspace_id < key_range.end)
    assert key_range.contains(key_range.start)
    assert not key_range.contains(key_range.end)


@given(key_ranges().filter(lambda r: r.width >= 2), st.data())
def test_split_makes_two_adjacent_halves(key_range: KeyRange, data: st.DataObject) -> None:
    low, high = key_range.split()
    assert (low.start, low.end, high.end) == (key_range.start, high.start, key_range.end)
    assert abs(low.width - high.width) <= 1
    at = data.draw(st.integers(min_value=key_range.start + 1, max_value=key_range.end - 1))
    left, right = key_range.split(at)
    assert left.end == right.start == at
    assert key_range.covers(left) and key_range.covers(right)


def test_split_points_outside_the_range_are_refused() -> None:
    quarter = KeyRange.parse("40-80")
    for at in (0x40 << 56, 0x80 << 56, 0x10 << 56):
        with pytest.raises(KeyRangeError, match="not strictly inside"):
            quarter.split(at)
    assert [r.name for r in KeyRange.full().split()] == ["-80", "80-"]
    assert [r.name for r in quarter.split()] == ["40-60", "60-80"]


@given(st.lists(key_ranges(), max_size=6), ids)
def test_normalize_keeps_exactly_the_same_ids(ranges: list[KeyRange], keyspace_id: int) -> None:
    merged = normalize(ranges)
    assert any(r.contains(keyspace_id) for r in merged) == any(
        r.contains(keyspace_id) for r in ranges
    )
    for left, right in itertools.pairwise(merged):
        assert left.end < right.start  # sorted, disjoint, not even touching


@given(st.lists(key_ranges(), max_size=5), key_ranges(), ids)
def test_add_and_subtract_are_set_union_and_difference(
    ranges: list[KeyRange], other: KeyRange, keyspace_id: int
) -> None:
    inside = any(r.contains(keyspace_id) for r in ranges)
    assert any(r.contains(keyspace_id) for r in add_range(ranges, other)) == (
        inside or other.contains(keyspace_id)
    )
    assert any(r.contains(keyspace_id) for r in subtract_range(ranges, other)) == (
        inside and not other.contains(keyspace_id)
    )
    assert covers_all(add_range(ranges, other), other)
    assert not any(r.overlaps(other) for r in subtract_range(ranges, other))


@given(st.integers(min_value=1, max_value=64))
def test_even_split_tiles_the_keyspace(count: int) -> None:
    ranges = even_split(count)
    assert len(ranges) == count
    assert ranges[0].start == 0 and ranges[-1].end == KEYSPACE_END
    assert all(a.end == b.start for a, b in itertools.pairwise(ranges))
    widths = [r.width for r in ranges]
    assert max(widths) - min(widths) <= 1


def test_key_hash_is_stable_and_int_keys_hash_as_their_text() -> None:
    # Pinned: shards must agree on key placement across processes and releases.
    assert key_hash(1) == key_hash("1") == 0xF6FC42039FBA3776
    assert key_hash("alice") == 0x4DEAEC0CCE54DA89
    assert key_hash("") != key_hash(" ")
    with pytest.raises(TypeError):
        key_hash(True)
    with pytest.raises(TypeError):
        key_hash(1.5)  # type: ignore[arg-type]


@given(ids, ids)
def test_stored_hashes_are_signed_and_keep_the_order(a: int, b: int) -> None:
    assert -(1 << 63) <= stored_hash(a) < (1 << 63)
    assert (stored_hash(a) < stored_hash(b)) == (a < b)
    assert from_stored_hash(stored_hash(a)) == a


def test_keyspace_ids_parse_like_bounds() -> None:
    assert parse_keyspace_id("60") == 0x60 << 56
    assert parse_keyspace_id("0x6000") == 0x60 << 56
    for bad in ("", "6", "xyz"):
        with pytest.raises(KeyRangeError):
            parse_keyspace_id(bad)
