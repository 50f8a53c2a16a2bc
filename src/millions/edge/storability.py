"""May this response be stored by a shared cache, and which of its fields (RFC 9111 §3).

`storage_decision` applies, in order: the request method (only GET is stored; a HEAD is
answered from the stored GET, and a proxy that sees a HEAD miss fetches with GET to fill),
the status (final, not 206 or 304: partial content is not combined here, §3.3, and a 304
only updates, §4.3.4), no-store in request or response (§5.2.1.5, §5.2.2.5), unqualified
private (§5.2.2.7), Authorization (§3.5), Vary: * (can never be reused, §4.1), Set-Cookie
(below), and finally §3's requirement of explicit freshness, public, or a heuristically
cacheable status. must-understand (§5.2.2.3) stores only status codes this cache knows.

Set-Cookie — the edge's safe default. A shared cache that replays one user's Set-Cookie to
others leaks sessions. So a response carrying Set-Cookie is stored only when the origin
explicitly marks it shareable (public, or s-maxage, or a targeted field such as
CDN-Cache-Control, or `private="set-cookie"` / `no-cache="set-cookie"` which say exactly
"store it without the cookie"), and the stored copy never contains Set-Cookie: the client
whose request filled the cache gets the cookie, nobody else does. (Varnish and Fastly go
further and never store such responses by default.)

Fields left out of every stored copy: hop-by-hop and Connection-listed fields (RFC 9110
§7.6.1), the proxy's own authentication fields (§3.1), fields named by qualified private
and no-cache (§5.2.2.4, §5.2.2.7; removing them is what makes reusing the rest safe),
Set-Cookie, Age (kept as the entry's initial age) and Content-Length (the server frames
the stored body itself).

A response is complete (§3.1) only once its body arrived as framed; the proxy stores it
only then, and drops an entry whose body was cut short.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from millions.edge.freshness import HEURISTIC_STATUSES
from millions.edge.headers import (
    HOP_BY_HOP,
    PROXY_FIELDS,
    SET_COOKIE_FIELDS,
    Header,
    Headers,
    connection_listed,
)
from millions.edge.messages import RequestHead, ResponseHead

_KNOWN_STATUSES = frozenset(status.value for status in HTTPStatus)
_ALWAYS_OMITTED = HOP_BY_HOP | PROXY_FIELDS | SET_COOKIE_FIELDS | {b"age", b"content-length"}


@dataclass(frozen=True, slots=True)
class StorageDecision:
    """`store` says whether to keep the response; `reason` names the rule that refused
    (for logs and metrics, e.g. "no-store"); `omit` lists fields to leave out of the copy."""

    store: bool
    reason: str
    omit: frozenset[bytes] = frozenset()


def _refuse(reason: str) -> StorageDecision:
    return StorageDecision(False, reason)


def storage_decision(request: RequestHead, response: ResponseHead) -> StorageDecision:
    """Whether a shared cache may store `response` to `request` (RFC 9111 §3)."""
    if request.method != b"GET":
        return _refuse("method")
    status = response.status
    if status < 200 or status in (206, 304):
        return _refuse("status")
    directives = response.cache_control
    if request.cache_control.no_store:
        return _refuse("request-no-store")
    if directives.no_store:
        return _refuse("no-store")
    if directives.private:
        return _refuse("private")
    if directives.must_understand and status not in _KNOWN_STATUSES:
        return _refuse("must-understand")
    if request.has_authorization and not (
        directives.public or directives.s_maxage is not None or directives.must_revalidate
    ):
        return _refuse("authorization")
    if response.vary is None:
        return _refuse("vary-star")
    if response.has_set_cookie and not (
        directives.public
        or directives.s_maxage is not None
        or response.targeted
        or b"set-cookie" in directives.private_fields
        or b"set-cookie" in directives.no_cache_fields
    ):
        return _refuse("set-cookie")
    if not (
        directives.public
        or directives.max_age is not None
        or directives.s_maxage is not None
        or response.expires is not None
        or status in HEURISTIC_STATUSES
    ):
        return _refuse("no-freshness-information")
    omit = (
        _ALWAYS_OMITTED
        | connection_listed(response.headers)
        | directives.private_fields
        | directives.no_cache_fields
    )
    return StorageDecision(True, "stored", omit)


def stored_fields(headers: Headers, decision: StorageDecision) -> list[Header]:
    """The header lines to keep in the stored copy (order kept)."""
    omit = decision.omit or _ALWAYS_OMITTED
    return [(name, value) for name, value in headers if name not in omit]
