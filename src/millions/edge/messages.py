"""The cache-relevant facts of a request or response head, read in one pass.

The proxy calls `parse_request` once per request and `parse_response` once per origin
response; every decision function takes these instead of re-scanning header lists.

Targeted cache control (RFC 9213 §2.2): the response's effective directives come from the
first field in `targeted_fields` that is present and valid; Cache-Control is then ignored
for this cache's decisions (it still reaches clients unchanged). Only when no targeted field
is usable do the Cache-Control directives apply. Expires keeps its meaning either way.

Singleton fields (Date, Expires, Last-Modified, ETag) use their first line (RFC 9111
§4.2.1). An invalid Expires means "already expired" (RFC 9111 §5.3). An Age that is not a
single delta-seconds value is ignored (a list is not a valid singleton, RFC 9110 §5.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from millions.edge.cache_control import (
    NO_DIRECTIVES,
    CacheControl,
    parse_cache_control,
    parse_delta_seconds,
    parse_targeted_cache_control,
)
from millions.edge.dates import parse_http_date
from millions.edge.headers import SET_COOKIE_FIELDS, Headers, split_list
from millions.edge.vary import VaryNames, parse_vary

#: Targeted fields this edge obeys, most specific first (RFC 9213 §2.2).
TARGETED_FIELDS: tuple[bytes, ...] = (b"cdn-cache-control",)

#: The value of `ResponseHead.expires` for an Expires that is not a valid date.
EXPIRED = float("-inf")

_PRAGMA_NO_CACHE = CacheControl(no_cache=True)


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the cache needs from a request: method, directives, preconditions, Range."""

    method: bytes
    headers: Headers
    cache_control: CacheControl
    has_authorization: bool = False
    if_none_match: bytes | None = None
    if_modified_since: bytes | None = None
    if_match: bytes | None = None
    if_unmodified_since: bytes | None = None
    range: bytes | None = None
    if_range: bytes | None = None


_REQUEST_FIELDS = frozenset(
    {
        b"cache-control",
        b"pragma",
        b"authorization",
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"range",
        b"if-range",
    }
)


def _collect(headers: Headers, names: frozenset[bytes]) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        if name in names:
            found.setdefault(name, []).append(value)
    return found


def parse_request(method: bytes, headers: Headers) -> RequestHead:
    """Read a request head (header names lower-case). Never raises.

    Pragma: no-cache counts as Cache-Control: no-cache only when the request has no
    Cache-Control field (RFC 9111 §5.4).
    """
    found = _collect(headers, _REQUEST_FIELDS)
    if not found:
        return RequestHead(method, headers, NO_DIRECTIVES)
    cache_control_lines = found.get(b"cache-control")
    if cache_control_lines is not None:
        cache_control = parse_cache_control(b", ".join(cache_control_lines))
    elif any(
        member.lower() == b"no-cache"
        for line in found.get(b"pragma", ())
        for member in split_list(line)
    ):
        cache_control = _PRAGMA_NO_CACHE
    else:
        cache_control = NO_DIRECTIVES

    def joined(name: bytes) -> bytes | None:
        lines = found.get(name)
        return None if lines is None else b", ".join(lines)

    return RequestHead(
        method=method,
        headers=headers,
        cache_control=cache_control,
        has_authorization=b"authorization" in found,
        if_none_match=joined(b"if-none-match"),
        if_modified_since=joined(b"if-modified-since"),
        if_match=joined(b"if-match"),
        if_unmodified_since=joined(b"if-unmodified-since"),
        range=joined(b"range"),
        if_range=joined(b"if-range"),
    )


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """What the cache needs from a response: status, effective directives, validators,
    dates (seconds since the epoch), Age, Vary and whether it sets cookies."""

    status: int
    headers: Headers
    cache_control: CacheControl
    targeted: bool = False
    date: float | None = None
    expires: float | None = None
    last_modified: float | None = None
    last_modified_value: bytes | None = None
    etag: bytes | None = None
    age: int = 0
    vary: VaryNames = ()
    has_set_cookie: bool = False


def _parse_age(lines: Sequence[bytes]) -> int:
    members = {member for line in lines for member in split_list(line)}
    if len(members) != 1:
        return 0
    return parse_delta_seconds(members.pop()) or 0


_RESPONSE_FIELDS = frozenset(
    {
        b"cache-control",
        b"date",
        b"expires",
        b"last-modified",
        b"etag",
        b"age",
        b"vary",
        *SET_COOKIE_FIELDS,
    }
)
_DEFAULT_RESPONSE_FIELDS = _RESPONSE_FIELDS | frozenset(TARGETED_FIELDS)


def parse_response(
    status: int, headers: Headers, *, targeted_fields: Sequence[bytes] = TARGETED_FIELDS
) -> ResponseHead:
    """Read a response head (header names lower-case). Never raises."""
    if targeted_fields is TARGETED_FIELDS:
        wanted = _DEFAULT_RESPONSE_FIELDS
    else:
        wanted = _RESPONSE_FIELDS | frozenset(targeted_fields)
    found = _collect(headers, wanted)
    cache_control: CacheControl | None = None
    targeted = False
    for field in targeted_fields:
        lines = found.get(field)
        if lines is not None:
            cache_control = parse_targeted_cache_control(b", ".join(lines))
            if cache_control is not None:
                targeted = True
                break
    if cache_control is None:
        lines = found.get(b"cache-control")
        cache_control = NO_DIRECTIVES if lines is None else parse_cache_control(b", ".join(lines))

    def first_date(name: bytes) -> tuple[float | None, bytes | None]:
        lines = found.get(name)
        if lines is None:
            return None, None
        return parse_http_date(lines[0]), lines[0]

    date, _ = first_date(b"date")
    expires, expires_value = first_date(b"expires")
    if expires is None and expires_value is not None:
        expires = EXPIRED
    last_modified, last_modified_value = first_date(b"last-modified")
    etags = found.get(b"etag")
    return ResponseHead(
        status=status,
        headers=headers,
        cache_control=cache_control,
        targeted=targeted,
        date=date,
        expires=expires,
        last_modified=last_modified,
        last_modified_value=last_modified_value if last_modified is not None else None,
        etag=etags[0].strip(b" \t") if etags else None,
        age=_parse_age(found.get(b"age", ())),
        vary=parse_vary(found.get(b"vary", ())),
        has_set_cookie=b"set-cookie" in found or b"set-cookie2" in found,
    )
