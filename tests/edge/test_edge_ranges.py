"""Range requests from stored responses (RFC 9110 §14, §13.1.5)."""

from __future__ import annotations

import email.parser
import email.policy
import itertools

import pytest
from edge_support import http_date, stored
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.entry import CachedResponse
from millions.edge.headers import Header
from millions.edge.messages import parse_request
from millions.edge.ranges import (
    COALESCE_GAP,
    MAX_RANGES,
    RangeOutcome,
    RangePlan,
    content_range,
    multipart_layout,
    parse_range,
    plan_range,
    resolve_ranges,
    unsatisfied_content_range,
)

pytestmark = pytest.mark.timeout(30)


def resolve(value: bytes, length: int) -> RangePlan:
    specs = parse_range(value)
    assert specs is not None
    return resolve_ranges(specs, length)


@pytest.mark.parametrize(
    ("value", "specs"),
    [
        (b"bytes=0-499", [(0, 499)]),
        (b"bytes=500-", [(500, None)]),
        (b"bytes=-500", [(None, 500)]),
        (b"Bytes = 0-1", [(0, 1)]),
        (b"BYTES=0-1", [(0, 1)]),
        (b"bytes=0-0, -1", [(0, 0), (None, 1)]),
        (b"bytes= 0-1 ,, 5-6 ", [(0, 1), (5, 6)]),
        (b"items=0-1", None),
        (b"bytes 0-1", None),
        (b"bytes=5-1", None),
        (b"bytes=a-b", None),
        (b"bytes=", None),
        (b"bytes=--1", None),
        (b"bytes=1", None),
        (b"bytes=0-1, x", None),
        (b"bytes=0-" + b"9" * 40, [(0, 10**18)]),
    ],
)
def test_parse_range(value: bytes, specs: list[tuple[int | None, int | None]] | None) -> None:
    assert parse_range(value) == specs


@pytest.mark.parametrize(
    ("value", "ranges"),
    [
        (b"bytes=0-499", ((0, 499),)),  # the first 500 bytes
        (b"bytes=500-999", ((500, 999),)),  # the second 500 bytes
        (b"bytes=-500", ((9500, 9999),)),  # the final 500 bytes
        (b"bytes=9500-", ((9500, 9999),)),
        (b"bytes=0-0,-1", ((0, 0), (9999, 9999))),  # first and last bytes only
        (b"bytes=9000-20000", ((9000, 9999),)),  # last-pos past the end is clamped
        (b"bytes=-20000", ((0, 9999),)),  # suffix longer than the representation
        (b"bytes=20000-, 0-9", ((0, 9),)),  # unsatisfiable ranges are dropped
    ],
)
def test_rfc_examples_on_a_10000_byte_representation(
    value: bytes, ranges: tuple[tuple[int, int], ...]
) -> None:
    assert resolve(value, 10000) == RangePlan(RangeOutcome.PARTIAL, ranges)


@pytest.mark.parametrize("value", [b"bytes=10000-", b"bytes=10000-10005", b"bytes=-0"])
def test_unsatisfiable(value: bytes) -> None:
    assert resolve(value, 10000).outcome is RangeOutcome.UNSATISFIABLE


def test_zero_length_representation() -> None:
    assert resolve(b"bytes=0-", 0).outcome is RangeOutcome.UNSATISFIABLE
    assert resolve(b"bytes=-5", 0).outcome is RangeOutcome.FULL


def test_coalescing() -> None:
    assert resolve(b"bytes=0-99,100-199", 1000).ranges == ((0, 199),)
    assert resolve(b"bytes=0-99,150-199", 1000).ranges == ((0, 199),)
    assert resolve(b"bytes=500-599,0-99", 1000).ranges == ((0, 99), (500, 599))


def test_abusive_ranges_fall_back_to_the_full_response() -> None:
    many = b"bytes=" + b",".join(b"%d-%d" % (i * 200, i * 200) for i in range(MAX_RANGES + 1))
    assert parse_range(many) is None
    assert parse_range(b"bytes=" + b"," * 10_000 + b"0-1") is None
    overlapping = b"bytes=0-100,10-110,20-120,30-130"
    assert resolve(overlapping, 1000).outcome is RangeOutcome.FULL
    assert resolve(b"bytes=0-100,10-110,20-120", 1000).ranges == ((0, 120),)


def test_content_range_values() -> None:
    assert content_range(0, 499, 1234) == b"bytes 0-499/1234"
    assert unsatisfied_content_range(1234) == b"bytes */1234"


# -- plan_range: method, status and If-Range -----------------------------------------------------

ETAG = b'"v1"'


def entry(*headers: Header, status: int = 200) -> CachedResponse:
    base: list[Header] = [(b"cache-control", b"max-age=60"), (b"date", http_date())]
    return stored([*base, *headers], status=status)


def plan(
    stored_entry: CachedResponse, *headers: Header, method: bytes = b"GET", length: int = 100
) -> RangePlan:
    return plan_range(parse_request(method, list(headers)), stored_entry, length)


def test_range_applies_to_get_on_a_stored_200_only() -> None:
    assert plan(entry(), (b"range", b"bytes=0-1")).outcome is RangeOutcome.PARTIAL
    assert plan(entry(), (b"range", b"bytes=0-1"), method=b"HEAD").outcome is RangeOutcome.FULL
    assert plan(entry(status=404), (b"range", b"bytes=0-1")).outcome is RangeOutcome.FULL
    assert plan(entry()).outcome is RangeOutcome.FULL
    assert plan(entry(), (b"range", b"bytes=9-1")).outcome is RangeOutcome.FULL


@pytest.mark.parametrize(
    ("etag", "if_range", "outcome"),
    [
        (ETAG, ETAG, RangeOutcome.PARTIAL),
        (ETAG, b'"v2"', RangeOutcome.FULL),
        (ETAG, b'W/"v1"', RangeOutcome.FULL),
        (b'W/"v1"', b'W/"v1"', RangeOutcome.FULL),
    ],
)
def test_if_range_entity_tag_needs_a_strong_match(
    etag: bytes, if_range: bytes, outcome: RangeOutcome
) -> None:
    stored_entry = entry((b"etag", etag))
    result = plan(stored_entry, (b"range", b"bytes=0-1"), (b"if-range", if_range))
    assert result.outcome is outcome


def test_if_range_date_needs_a_strong_last_modified() -> None:
    strong = entry((b"last-modified", http_date(-120)))
    weak = entry((b"last-modified", http_date(-10)))
    ranged = (b"range", b"bytes=0-1")
    assert plan(strong, ranged, (b"if-range", http_date(-120))).outcome is RangeOutcome.PARTIAL
    assert plan(strong, ranged, (b"if-range", http_date(-100))).outcome is RangeOutcome.FULL
    assert plan(weak, ranged, (b"if-range", http_date(-10))).outcome is RangeOutcome.FULL
    assert plan(strong, ranged, (b"if-range", b"garbage")).outcome is RangeOutcome.FULL


# -- multipart/byteranges (§14.6) ----------------------------------------------------------------


def test_multipart_layout_is_a_valid_multipart_body() -> None:
    body = bytes(range(256)) * 4
    ranges = ((0, 9), (500, 519))
    layout = multipart_layout(ranges, len(body), b"application/octet-stream", b"B0UNDARY")
    assembled = b"".join(part.head + body[part.first : part.last + 1] for part in layout.parts)
    assembled += layout.tail
    assert len(assembled) == layout.content_length
    assert layout.content_type == b"multipart/byteranges; boundary=B0UNDARY"
    assert layout.parts[0].head == (
        b"--B0UNDARY\r\ncontent-type: application/octet-stream\r\n"
        b"content-range: bytes 0-9/1024\r\n\r\n"
    )
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + layout.content_type + b"\r\n\r\n" + assembled
    )
    parts = list(message.iter_parts())
    assert [p["content-range"] for p in parts] == ["bytes 0-9/1024", "bytes 500-519/1024"]
    assert [p.get_payload(decode=True) for p in parts] == [body[0:10], body[500:520]]


def test_multipart_without_content_type() -> None:
    layout = multipart_layout(((0, 0), (200, 200)), 1000, None, b"b")
    assert b"content-type" not in layout.parts[0].head
    assert layout.header_fields()[1] == (b"content-length", b"%d" % layout.content_length)


# -- properties ----------------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_parse_range_never_raises(value: bytes) -> None:
    specs = parse_range(value)
    assert specs is None or 1 <= len(specs) <= MAX_RANGES


_position = st.integers(0, 3000)
_spec = st.one_of(
    st.tuples(_position, _position).map(lambda p: f"{min(p)}-{max(p)}"),
    _position.map(lambda p: f"{p}-"),
    _position.map(lambda p: f"-{p}"),
)


@given(st.lists(_spec, min_size=1, max_size=12), st.integers(0, 2500))
def test_resolved_ranges_are_in_bounds_sorted_coalesced_and_cover_the_request(
    specs: list[str], length: int
) -> None:
    value = ("bytes=" + ", ".join(specs)).encode()
    parsed = parse_range(value)
    assert parsed is not None
    plan_ = resolve_ranges(parsed, length)
    if plan_.outcome is not RangeOutcome.PARTIAL:
        return
    ranges = plan_.ranges
    assert ranges
    for first, last in ranges:
        assert 0 <= first <= last < length
    for (_, previous_last), (first, _) in itertools.pairwise(ranges):
        assert first > previous_last + 1 + COALESCE_GAP
    covered = {(first, last) for first, last in ranges}
    for spec_first, spec_last in parsed:
        want: tuple[int, int] | None = None
        if spec_first is None:
            if spec_last:
                want = (max(0, length - spec_last), length - 1)
        elif spec_first < length:
            end = length - 1 if spec_last is None else min(spec_last, length - 1)
            want = (spec_first, end)
        if want is not None:
            assert any(a <= want[0] and want[1] <= b for a, b in covered)
