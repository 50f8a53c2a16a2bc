"""The stored form of a `CachedResponse`: one compact bytes blob, shared by both tiers.

A blob (about 40 bytes plus the header lines) costs one object per entry where the parsed
`CachedResponse` costs about 900 bytes in a dozen objects, so the memory tier keeps blobs
and decodes on use. Decoding parses the headers again (tens of microseconds), so decoded
entries are kept in a small LRU keyed by the blob itself: hot objects decode once, and a
changed entry (freshened, invalidated) is a new blob and so a new cache slot.

The format is length-prefixed (not header lines) so that no stored byte needs escaping.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from millions.edge.entry import CachedResponse
from millions.edge.headers import Header

#: status, request_time, response_time, initial_age, invalidated, secondary length,
#: header count.
_FIXED = struct.Struct("<HdddBII")
_FIELD = struct.Struct("<HI")

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
        parts.append(_FIELD.pack(len(name), len(value)))
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
            name_len, value_len = _FIELD.unpack_from(meta, offset)
            offset += _FIELD.size
            name = meta[offset : offset + name_len]
            offset += name_len
            value = meta[offset : offset + value_len]
            offset += value_len
            headers.append((name, value))
    except struct.error as exc:
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


def secondary_of(meta: bytes) -> bytes:
    """The secondary key inside `meta`, without decoding the headers."""
    slen = _FIXED.unpack_from(meta, 0)[5]
    return meta[_FIXED.size : _FIXED.size + slen]


def headers_of(meta: bytes) -> tuple[Header, ...]:
    """The stored header lines inside `meta` (for purge scans), without the parsing that
    building a `CachedResponse` does."""
    return _decode_fields(meta)[6]
