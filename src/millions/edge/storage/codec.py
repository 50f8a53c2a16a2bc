"""The stored form of a `CachedResponse`: one compact bytes blob, shared by both tiers.

A blob (about 40 bytes plus the header lines) costs one object per entry where the parsed
`CachedResponse` costs about 900 bytes in a dozen objects, so the memory tier keeps blobs
and decodes on use. Decoding parses the headers again (tens of microseconds), so decoded
entries are kept in a small LRU keyed by the blob itself: hot objects decode once, and a
changed entry (freshened, invalidated) is a new blob and so a new cache slot.

The format is length-prefixed (not header lines) so that no stored byte needs escaping.
Header names every response repeats (Date, Content-Type, Cache-Control...) are stored as
one byte from a fixed table with a two-byte value length, 3 bytes instead of 6 plus the
name, and a Date, Last-Modified or Expires value in the form senders generate
(IMF-fixdate) as four bytes of epoch seconds instead of 29 characters: together about 70
bytes of a typical 150-byte blob, held once per cached object. The table is part of the
format: changing it changes the disk tier's file version.
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import TypeVar

from millions.edge.dates import format_http_date, parse_http_date
from millions.edge.entry import CachedResponse
from millions.edge.headers import Header

#: status, request_time, response_time, initial_age, invalidated, secondary length,
#: header count.
_FIXED = struct.Struct("<HdddBIH")
#: Where in a blob the secondary key's length (a little-endian u32) and the key itself are.
SECONDARY_LENGTH_AT = struct.calcsize("<HdddB")
SECONDARY_AT = _FIXED.size
#: A header with a name from `KNOWN_NAMES`: its code (1-based), value length.
_KNOWN = struct.Struct("<BH")
#: Any other header: code 0, name length, value length.
_LITERAL = struct.Struct("<BHI")
#: A date-valued header in IMF-fixdate: its code with the high bit set, epoch seconds.
_DATED = struct.Struct("<BI")
_DATED_FLAG = 0x80

#: Response header names stored as one byte (lower-case, as the edge stores names). Part of
#: the stored format: append only, and bump the disk tier's file version when it changes.
KNOWN_NAMES: tuple[bytes, ...] = (
    b"date",
    b"server",
    b"content-type",
    b"cache-control",
    b"content-length",
    b"etag",
    b"last-modified",
    b"expires",
    b"vary",
    b"content-encoding",
    b"accept-ranges",
    b"age",
    b"via",
    b"x-cache",
    b"content-language",
    b"content-disposition",
    b"content-security-policy",
    b"strict-transport-security",
    b"x-content-type-options",
    b"x-frame-options",
    b"access-control-allow-origin",
    b"referrer-policy",
    b"link",
    b"surrogate-key",
    b"cache-tag",
    b"surrogate-control",
    b"cdn-cache-control",
    b"x-powered-by",
    b"alt-svc",
    b"location",
    b"pragma",
    b"keep-alive",
)
_CODES = {name: code for code, name in enumerate(KNOWN_NAMES, start=1)}
_MAX_KNOWN_VALUE = 0xFFFF
#: Headers whose IMF-fixdate values are stored as epoch seconds.
_DATED_NAMES = frozenset((b"date", b"last-modified", b"expires"))
_IMF_FIXDATE_LENGTH = len(b"Sun, 06 Nov 1994 08:49:37 GMT")


def _epoch(value: bytes) -> int | None:
    """`value` as epoch seconds if formatting them gives back exactly `value`."""
    if len(value) != _IMF_FIXDATE_LENGTH:
        return None
    timestamp = parse_http_date(value)
    if timestamp is None or not 0 <= timestamp < 1 << 32:
        return None
    seconds = int(timestamp)
    return seconds if format_http_date(seconds) == value else None


#: How many decoded entries to keep; a few thousand cover the hot set of an edge.
DECODED_CACHE_SIZE = 4096


class CorruptMetadata(ValueError):
    """A stored blob that does not decode: truncated, or not written by `encode_entry`."""


def encode_entry(entry: CachedResponse) -> bytes:
    """The seven constructor fields of `entry` as one blob."""
    parts = [
        _FIXED.pack(
            entry.status,
            entry.request_time,
            entry.response_time,
            entry.initial_age,
            1 if entry.invalidated else 0,
            len(entry.secondary_key),
            len(entry.headers),
        ),
        entry.secondary_key,
    ]
    for name, value in entry.headers:
        code = _CODES.get(name)
        if code is not None and name in _DATED_NAMES:
            seconds = _epoch(value)
            if seconds is not None:
                parts.append(_DATED.pack(code | _DATED_FLAG, seconds))
                continue
        if code is not None and len(value) <= _MAX_KNOWN_VALUE:
            parts.append(_KNOWN.pack(code, len(value)))
        else:
            parts.append(_LITERAL.pack(0, len(name), len(value)))
            parts.append(name)
        parts.append(value)
    return b"".join(parts)


def _decode_fields(
    meta: bytes,
) -> tuple[int, float, float, float, bool, bytes, tuple[Header, ...]]:
    try:
        status, request_time, response_time, initial_age, invalidated, slen, count = (
            _FIXED.unpack_from(meta, 0)
        )
        offset = _FIXED.size
        secondary = meta[offset : offset + slen]
        offset += slen
        headers: list[Header] = []
        for _ in range(count):
            code = meta[offset]
            if code & _DATED_FLAG:
                if code == _DATED_FLAG:
                    raise IndexError("no name code 0")
                name = KNOWN_NAMES[(code & ~_DATED_FLAG) - 1]
                seconds = _DATED.unpack_from(meta, offset)[1]
                offset += _DATED.size
                headers.append((name, format_http_date(seconds)))
                continue
            if code:
                name = KNOWN_NAMES[code - 1]
                value_len = _KNOWN.unpack_from(meta, offset)[1]
                offset += _KNOWN.size
            else:
                _, name_len, value_len = _LITERAL.unpack_from(meta, offset)
                offset += _LITERAL.size
                name = meta[offset : offset + name_len]
                offset += name_len
            value = meta[offset : offset + value_len]
            offset += value_len
            headers.append((name, value))
    except (struct.error, IndexError) as exc:
        raise CorruptMetadata(f"truncated metadata: {exc}") from None
    if offset != len(meta) or len(secondary) != slen:
        raise CorruptMetadata("metadata length does not match its fields")
    if not 100 <= status <= 599:
        raise CorruptMetadata(f"status {status} out of range")
    return (
        status,
        request_time,
        response_time,
        initial_age,
        bool(invalidated),
        secondary,
        tuple(headers),
    )


@lru_cache(maxsize=DECODED_CACHE_SIZE)
def decode_entry(meta: bytes) -> CachedResponse:
    """The entry `meta` encodes; CorruptMetadata if it does not decode."""
    status, request_time, response_time, initial_age, invalidated, secondary, headers = (
        _decode_fields(meta)
    )
    return CachedResponse(
        status=status,
        headers=headers,
        request_time=request_time,
        response_time=response_time,
        initial_age=initial_age,
        secondary_key=secondary,
        invalidated=invalidated,
    )


_Blob = TypeVar("_Blob", bytes, memoryview)


def secondary_of(meta: _Blob) -> _Blob:
    """The secondary key inside `meta` (a blob, or a view of one in the memory tier's
    arena), without decoding the headers."""
    slen = _FIXED.unpack_from(meta, 0)[5]
    return meta[_FIXED.size : _FIXED.size + slen]


def headers_of(meta: bytes) -> tuple[Header, ...]:
    """The stored header lines inside `meta` (for purge scans), without the parsing that
    building a `CachedResponse` does."""
    return _decode_fields(meta)[6]
