"""Secondary cache keys from Vary (RFC 9111 §4.1).

A stored response can be reused for a request only if every header field the response's
Vary names matches between the request that produced it and the new one. "Match" allows the
normalizations §4.1 lists, and this module applies the safe ones:

- field names are case-insensitive, so Vary names are lower-cased and de-duplicated (the
  order of names in Vary does not matter either);
- repeated request lines of a field are combined in order with "," (RFC 9110 §5.3);
- whitespace around list commas and at the ends is removed;
- Accept-Encoding and Accept-Language values are lower-cased (codings and language tags
  are case-insensitive).

A field absent from the request only matches a request where it is absent too, so absence
and an empty value give different keys. `Vary: *` (anywhere in the list) never matches.

The secondary key is a 16-byte BLAKE2b digest of the normalized values: fixed size however
long the varied headers (Cookie, User-Agent) are, so variant records stay small.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from millions.edge.headers import Headers, split_list

if TYPE_CHECKING:
    from millions.edge.entry import CachedResponse

#: Lower-cased, sorted, de-duplicated Vary names; None means `Vary: *`; () means no Vary.
VaryNames = tuple[bytes, ...] | None

_CASE_INSENSITIVE_VALUES = frozenset({b"accept-encoding", b"accept-language"})


def parse_vary(lines: Sequence[bytes]) -> VaryNames:
    """Vary field lines → normalized names (None for `*`)."""
    names: set[bytes] = set()
    for line in lines:
        for member in split_list(line):
            if member == b"*":
                return None
            names.add(member.lower())
    return tuple(sorted(names))


def _normalized(name: bytes, lines: list[bytes]) -> bytes:
    value = lines[0] if len(lines) == 1 else b",".join(lines)
    if b"," in value:
        if b"\t" in value or b" ," in value or b",  " in value:
            value = b",".join([member.strip(b" \t") for member in value.split(b",")])
        else:  # the common "a, b" spelling, without the split
            value = value.replace(b", ", b",")
    value = value.strip(b" \t")
    return value.lower() if name in _CASE_INSENSITIVE_VALUES else value


def secondary_key(vary: tuple[bytes, ...], request_headers: Headers) -> bytes:
    """The key that distinguishes variants: b"" when nothing varies, else a digest of the
    request's values of the Vary-named fields."""
    if not vary:
        return b""
    parts: list[bytes] = []
    for name in vary:
        lines = [value for field, value in request_headers if field == name]
        if lines:
            value = _normalized(name, lines)
            parts.append(b"%d:%s=%d:%s" % (len(name), name, len(value), value))
        else:
            parts.append(b"%d:%s!" % (len(name), name))
    return hashlib.blake2b(b"".join(parts), digest_size=16).digest()


def select_variant(
    variants: Sequence[CachedResponse], request_headers: Headers
) -> CachedResponse | None:
    """The stored response usable for this request, or None (a miss).

    Among several matches the most recent one wins (RFC 9111 §4.1: by Date, then by the
    time it was received). The key is computed once per distinct Vary list.
    """
    if len(variants) == 1 and not variants[0].response.vary:
        only = variants[0]
        return only if only.response.vary is not None else None
    keys: dict[tuple[bytes, ...], bytes] = {}
    best: CachedResponse | None = None
    for variant in variants:
        vary = variant.response.vary
        if vary is None:
            continue
        key = keys.get(vary)
        if key is None:
            key = keys[vary] = secondary_key(vary, request_headers)
        if key != variant.secondary_key:
            continue
        if best is None or _recency(variant) > _recency(best):
            best = variant
    return best


def _recency(entry: CachedResponse) -> tuple[float, float]:
    date = entry.response.date
    return (date if date is not None else entry.response_time, entry.response_time)
