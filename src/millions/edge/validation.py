"""Validation: conditional requests to the origin, 304 handling, and answering clients'
conditional requests from the cache (RFC 9111 §4.3, RFC 9110 §8.8 and §13).

Outgoing (§4.3.1): `origin_request_fields` turns the client's request header lines into
the ones sent to the origin for a fill or a revalidation: the client's own preconditions
and Range are removed (the edge wants the whole current representation, which it then
answers the client from), and the stored entries' validators are added — If-None-Match
with every stored ETag for the key, If-Modified-Since with the selected entry's
Last-Modified. Varied request fields pass through unchanged, so the origin sees the same
Vary inputs.

Incoming (RFC 9111 §4.3.2, RFC 9110 §13.2.2): `evaluate_conditional` answers
If-None-Match (weak comparison, `*` matches) and, only when there is no If-None-Match,
If-Modified-Since, for GET and HEAD, against a stored 2xx. If-Match and
If-Unmodified-Since are about the origin's current state and go to the origin (FORWARD).

304 (§4.3.4): `select_for_update` picks the stored responses a 304 refers to and
`freshen` merges its header fields into one (§3.2).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from millions.edge.dates import format_http_date, parse_http_date
from millions.edge.entry import CachedResponse
from millions.edge.freshness import corrected_initial_age
from millions.edge.headers import (
    HOP_BY_HOP,
    PROXY_FIELDS,
    SET_COOKIE_FIELDS,
    Header,
    Headers,
    connection_listed,
    split_list,
)
from millions.edge.messages import RequestHead, ResponseHead, parse_response

#: Client request fields that must not reach the origin on a fill or revalidation.
CLIENT_VALIDATION_FIELDS = frozenset(
    {
        b"if-none-match",
        b"if-modified-since",
        b"if-match",
        b"if-unmodified-since",
        b"if-range",
        b"range",
    }
)

#: Fields a 304 carries from the stored 200 (RFC 9110 §15.4.5).
_NOT_MODIFIED_FIELDS = frozenset(
    {b"cache-control", b"content-location", b"date", b"etag", b"expires", b"vary"}
)

#: Fields a 304 must not change in the stored response (RFC 9111 §3.2).
_NOT_UPDATED = HOP_BY_HOP | PROXY_FIELDS | SET_COOKIE_FIELDS | {b"age", b"content-length"}

#: Status codes that count as an origin error for stale-if-error (RFC 5861 §4).
ERROR_STATUSES = frozenset({500, 502, 503, 504})


# -- entity tags (RFC 9110 §8.8.3) -------------------------------------------------------


def _opaque(tag: bytes) -> tuple[bool, bytes]:
    """(weak, opaque-tag). Unquoted tags, which some servers send, get their quotes."""
    weak = tag[:2] in (b"W/", b"w/")
    opaque = tag[2:] if weak else tag
    if opaque[:1] != b'"':
        opaque = b'"' + opaque + b'"'
    return weak, opaque


def weak_match(first: bytes, second: bytes) -> bool:
    """Weak comparison: the opaque tags are equal, weakness ignored (RFC 9110 §8.8.3.2)."""
    return _opaque(first)[1] == _opaque(second)[1]


def strong_match(first: bytes, second: bytes) -> bool:
    """Strong comparison: neither is weak and the opaque tags are equal."""
    weak_first, opaque_first = _opaque(first)
    weak_second, opaque_second = _opaque(second)
    return not weak_first and not weak_second and opaque_first == opaque_second


def parse_entity_tags(value: bytes) -> list[bytes] | None:
    """The entity-tags of an If-None-Match / If-Match value; None means `*`."""
    tags = split_list(value)
    if b"*" in tags:
        return None
    return tags


# -- outgoing conditional requests -------------------------------------------------------


def origin_request_fields(
    request_headers: Headers,
    selected: CachedResponse | None = None,
    others: Sequence[CachedResponse] = (),
) -> list[Header]:
    """Request header lines for the origin on a fill (`selected` None) or a revalidation
    of `selected` (with `others`, the key's other stored variants, offering their ETags
    too so a 304 can pick any of them, RFC 9111 §4.3.1)."""
    fields = [(n, v) for n, v in request_headers if n not in CLIENT_VALIDATION_FIELDS]
    if selected is None:
        return fields
    etags: list[bytes] = []
    for entry in (selected, *others):
        etag = entry.response.etag
        if etag is not None and etag not in etags:
            etags.append(etag)
    if etags:
        fields.append((b"if-none-match", b", ".join(etags)))
    last_modified = selected.response.last_modified_value
    if last_modified is not None:
        fields.append((b"if-modified-since", last_modified))
    return fields


# -- 304 from the origin -----------------------------------------------------------------


def select_for_update(
    not_modified: ResponseHead, stored: Sequence[CachedResponse]
) -> list[CachedResponse]:
    """The stored responses a 304 identifies (RFC 9111 §4.3.4).

    A strong ETag selects every stored response with that strong ETag; a weak ETag or a
    Last-Modified selects the most recent matching one. A 304 with no validator selects
    the only stored response: it answers a conditional request built from that one
    response's validators, so it can refer to nothing else. An empty result means the 304
    cannot be used; the proxy then repeats the request without validators.
    """
    etag = not_modified.etag
    if etag is not None:
        weak, _ = _opaque(etag)
        if not weak:
            return [e for e in stored if e.etag is not None and strong_match(e.etag, etag)]
        matches = [e for e in stored if e.etag is not None and weak_match(e.etag, etag)]
        return _most_recent(matches)
    last_modified = not_modified.last_modified
    if last_modified is not None:
        return _most_recent([e for e in stored if e.last_modified == last_modified])
    return list(stored) if len(stored) == 1 else []


def _most_recent(entries: list[CachedResponse]) -> list[CachedResponse]:
    if not entries:
        return []
    return [max(entries, key=lambda entry: entry.response_time)]


def freshen(
    entry: CachedResponse,
    not_modified: ResponseHead,
    *,
    request_time: float,
    response_time: float,
) -> CachedResponse:
    """The stored response updated by a 304 (RFC 9111 §3.2, §4.3.4).

    Each field in the 304 replaces all stored lines of that name, except fields that are
    per-hop, proxy-specific, Set-Cookie (the shared copy never holds cookies; the proxy
    passes a 304's Set-Cookie only to the client that triggered the revalidation), Age and
    Content-Length. Age and freshness restart from this exchange; a 304 without Date gets
    the time it arrived.
    """
    excluded = _NOT_UPDATED | connection_listed(not_modified.headers)
    updates = [(n, v) for n, v in not_modified.headers if n not in excluded]
    replaced = {name for name, _ in updates}
    merged = [(n, v) for n, v in entry.headers if n not in replaced]
    merged.extend(updates)
    if not_modified.date is None:
        merged = [(n, v) for n, v in merged if n != b"date"]
        merged.append((b"date", format_http_date(response_time)))
    directives = parse_response(entry.status, merged).cache_control
    private_fields = directives.private_fields | directives.no_cache_fields
    if private_fields:
        merged = [(n, v) for n, v in merged if n not in private_fields]
    return CachedResponse(
        status=entry.status,
        headers=tuple(merged),
        request_time=request_time,
        response_time=response_time,
        initial_age=corrected_initial_age(
            not_modified.age,
            not_modified.date if not_modified.date is not None else response_time,
            request_time,
            response_time,
        ),
        secondary_key=entry.secondary_key,
    )


class Revalidation(enum.Enum):
    """What the origin's answer to a revalidation means (RFC 9111 §4.3.3)."""

    #: 304: `select_for_update` + `freshen`, answer from the updated entry.
    NOT_MODIFIED = "not-modified"
    #: A full response: forward it, store it if `storage_decision` allows, and drop the
    #: entry it supersedes otherwise.
    USE_RESPONSE = "use-response"
    #: The origin failed and the stale entry may answer instead (stale-if-error).
    SERVE_STALE = "serve-stale"
    #: The origin failed with no response and the entry may not be used: answer 504.
    FAIL = "fail"


def revalidation_outcome(status: int | None, serve_stale_on_error: bool) -> Revalidation:
    """Classify the origin's answer; `status` None means no response (connection error,
    timeout). `serve_stale_on_error` comes from `ReuseDecision`."""
    if status == 304:
        return Revalidation.NOT_MODIFIED
    if status is None:
        return Revalidation.SERVE_STALE if serve_stale_on_error else Revalidation.FAIL
    if status in ERROR_STATUSES and serve_stale_on_error:
        return Revalidation.SERVE_STALE
    return Revalidation.USE_RESPONSE


# -- incoming conditional requests -------------------------------------------------------


class Conditional(enum.Enum):
    """How to answer a client's conditional request from a stored response."""

    #: No precondition applies, or it passed: send the stored response (or its range).
    FULL = "full"
    #: Send 304 with `not_modified_fields(entry)`.
    NOT_MODIFIED = "not-modified"
    #: Preconditions only the origin can evaluate (If-Match, If-Unmodified-Since): pass the
    #: request to the origin as it is.
    FORWARD = "forward"


def evaluate_conditional(request: RequestHead, entry: CachedResponse) -> Conditional:
    """Evaluate the request's preconditions against `entry` (RFC 9110 §13.2.2)."""
    if request.if_match is not None or request.if_unmodified_since is not None:
        return Conditional.FORWARD
    if request.method not in (b"GET", b"HEAD") or not 200 <= entry.status < 300:
        return Conditional.FULL
    if request.if_none_match is not None:
        tags = parse_entity_tags(request.if_none_match)
        if tags is None:
            return Conditional.NOT_MODIFIED
        etag = entry.etag
        if etag is not None and any(weak_match(tag, etag) for tag in tags):
            return Conditional.NOT_MODIFIED
        return Conditional.FULL
    if request.if_modified_since is not None:
        since = parse_http_date(request.if_modified_since)
        if since is None:
            return Conditional.FULL
        modified = entry.last_modified
        if modified is None:
            date = entry.response.date
            modified = date if date is not None else entry.response_time
        return Conditional.NOT_MODIFIED if modified <= since else Conditional.FULL
    return Conditional.FULL


def not_modified_fields(entry: CachedResponse) -> list[Header]:
    """Header lines of a 304 answering from `entry` (RFC 9110 §15.4.5): Cache-Control,
    Content-Location, Date, ETag, Expires, Vary, and Last-Modified when there is no ETag.
    The proxy adds Age, X-Cache and Via as on any hit."""
    names = _NOT_MODIFIED_FIELDS
    if entry.etag is None:
        names = names | {b"last-modified"}
    return [(name, value) for name, value in entry.headers if name in names]
