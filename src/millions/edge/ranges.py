"""Range requests answered from a stored complete response (RFC 9110 §14, §13.1.5).

`plan_range` decides between the whole representation (200), part of it (206) and 416:

- Range applies to GET only, and only to a stored 200 (§14.2); other methods ignore it.
- If-Range (§13.1.5) must hold, or Range is ignored: an entity-tag must match the stored
  ETag by strong comparison; a date must equal the stored Last-Modified exactly, and that
  Last-Modified must be strong, i.e. at least 60 s before the stored Date (§8.8.2.2).
- A Range that is not `bytes=` with valid range-specs, whose unit is unknown, or that
  contains a range with last-pos < first-pos, is ignored (§14.1.1, §14.2).
- Abuse limits (§14.2 allows ignoring such requests, as Apache and nginx do): more than
  `MAX_RANGES` ranges, or more than `MAX_OVERLAPS` ranges that overlap an earlier one,
  and the whole representation is sent instead.
- Unsatisfiable ranges are dropped; if none is left the answer is 416 with
  `Content-Range: bytes */length` (§14.1.1, §15.5.17). A zero-length representation has
  no satisfiable int-range; a suffix range on it gets the (empty) whole representation.
- Satisfiable ranges are sorted and coalesced when they overlap, touch, or leave a gap
  smaller than `COALESCE_GAP` bytes (cheaper than another part's headers, §14.2). One
  range left → single-part 206 with Content-Range; several → multipart/byteranges (§14.6).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

from millions.edge.dates import parse_http_date
from millions.edge.entry import CachedResponse
from millions.edge.headers import Header, split_list
from millions.edge.messages import RequestHead
from millions.edge.validation import strong_match

MAX_RANGES = 100
MAX_OVERLAPS = 2
COALESCE_GAP = 80
#: Positions longer than this many digits are beyond any representation; no int() needed.
_MAX_POSITION_DIGITS = 18
_BEYOND = 10**_MAX_POSITION_DIGITS

RangeSpec = tuple[int | None, int | None]


class RangeOutcome(enum.Enum):
    FULL = "full"  # 200 with the whole representation
    PARTIAL = "partial"  # 206
    UNSATISFIABLE = "unsatisfiable"  # 416


@dataclass(frozen=True, slots=True)
class RangePlan:
    """`ranges` are inclusive (first, last) byte positions, sorted and disjoint."""

    outcome: RangeOutcome
    ranges: tuple[tuple[int, int], ...] = ()


FULL = RangePlan(RangeOutcome.FULL)


def _position(digits: bytes) -> int | None:
    if not digits or not digits.isdigit():
        return None
    return _BEYOND if len(digits) > _MAX_POSITION_DIGITS else int(digits)


def parse_range(value: bytes) -> list[RangeSpec] | None:
    """The range-specs of a Range value as (first, last) with None for an absent side:
    (a, b) for `a-b`, (a, None) for `a-`, (None, n) for the suffix `-n`. None when the
    value must be ignored (not bytes, malformed, last < first, or too many ranges)."""
    unit, has_equals, range_set = value.partition(b"=")
    if not has_equals or unit.strip(b" \t").lower() != b"bytes":
        return None
    if range_set.count(b",") >= 4 * MAX_RANGES:  # bound the work before splitting
        return None
    members = split_list(range_set)
    if not members or len(members) > MAX_RANGES:
        return None
    specs: list[RangeSpec] = []
    for member in members:
        first_digits, has_dash, last_digits = member.partition(b"-")
        if not has_dash:
            return None
        if not first_digits:
            suffix = _position(last_digits)
            if suffix is None:
                return None
            specs.append((None, suffix))
            continue
        first = _position(first_digits)
        if first is None:
            return None
        if not last_digits:
            specs.append((first, None))
            continue
        last = _position(last_digits)
        if last is None or last < first:
            return None
        specs.append((first, last))
    return specs


def resolve_ranges(specs: list[RangeSpec], length: int) -> RangePlan:
    """Apply range-specs to a representation of `length` bytes (see module docstring)."""
    satisfiable: list[tuple[int, int]] = []
    suffix_on_empty = False
    for first, last in specs:
        if first is None:
            suffix = last or 0
            if suffix == 0:
                continue
            if length == 0:
                suffix_on_empty = True
                continue
            satisfiable.append((max(0, length - suffix), length - 1))
        elif first < length:
            end = length - 1 if last is None else min(last, length - 1)
            satisfiable.append((first, end))
    if not satisfiable:
        return FULL if suffix_on_empty else RangePlan(RangeOutcome.UNSATISFIABLE)
    satisfiable.sort()
    overlaps = 0
    coalesced = [satisfiable[0]]
    for first, last in satisfiable[1:]:
        previous_first, previous_last = coalesced[-1]
        if first <= previous_last:
            overlaps += 1
            if overlaps > MAX_OVERLAPS:
                return FULL
        if first <= previous_last + 1 + COALESCE_GAP:
            coalesced[-1] = (previous_first, max(previous_last, last))
        else:
            coalesced.append((first, last))
    return RangePlan(RangeOutcome.PARTIAL, tuple(coalesced))


def if_range_holds(if_range: bytes, entry: CachedResponse) -> bool:
    """Whether an If-Range value still matches the stored representation (§13.1.5)."""
    value = if_range.strip(b" \t")
    if value[:1] == b'"' or value[:2] == b"W/":
        etag = entry.etag
        return etag is not None and strong_match(value, etag)
    since = parse_http_date(value)
    modified = entry.last_modified
    date = entry.response.date
    if since is None or modified is None or date is None:
        return False
    return modified == since and date - modified >= 60


def plan_range(request: RequestHead, entry: CachedResponse, length: int) -> RangePlan:
    """How to answer `request` from `entry`, whose body is `length` bytes."""
    if request.range is None or request.method != b"GET" or entry.status != 200:
        return FULL
    if request.if_range is not None and not if_range_holds(request.if_range, entry):
        return FULL
    specs = parse_range(request.range)
    if specs is None:
        return FULL
    return resolve_ranges(specs, length)


def content_range(first: int, last: int, length: int) -> bytes:
    """Content-Range value of one satisfied range (§14.4)."""
    return b"bytes %d-%d/%d" % (first, last, length)


def unsatisfied_content_range(length: int) -> bytes:
    """Content-Range value of a 416 (§14.4)."""
    return b"bytes */%d" % length


def new_boundary() -> bytes:
    """A multipart boundary that will not occur in the body by chance (128 random bits)."""
    return secrets.token_hex(16).encode("ascii")


@dataclass(frozen=True, slots=True)
class MultipartPart:
    """Write `head`, then body bytes `first`..`last` inclusive."""

    head: bytes
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class MultipartLayout:
    """A multipart/byteranges body (§14.6): each part's head and byte range, then `tail`.
    `content_type` and `content_length` are the 206 response's header values."""

    content_type: bytes
    content_length: int
    parts: tuple[MultipartPart, ...]
    tail: bytes

    def header_fields(self) -> list[Header]:
        return [
            (b"content-type", self.content_type),
            (b"content-length", b"%d" % self.content_length),
        ]


def multipart_layout(
    ranges: tuple[tuple[int, int], ...],
    length: int,
    content_type: bytes | None,
    boundary: bytes,
) -> MultipartLayout:
    """Lay out a multipart/byteranges body for `ranges` of a `length`-byte representation
    of type `content_type` (None: no Content-Type in the parts)."""
    type_line = b"content-type: " + content_type + b"\r\n" if content_type else b""
    parts: list[MultipartPart] = []
    total = 0
    for index, (first, last) in enumerate(ranges):
        head = b"%s--%s\r\n%scontent-range: %s\r\n\r\n" % (
            b"\r\n" if index else b"",
            boundary,
            type_line,
            content_range(first, last, length),
        )
        parts.append(MultipartPart(head, first, last))
        total += len(head) + last - first + 1
    tail = b"\r\n--%s--\r\n" % boundary
    return MultipartLayout(
        content_type=b"multipart/byteranges; boundary=" + boundary,
        content_length=total + len(tail),
        parts=tuple(parts),
        tail=tail,
    )
