"""Invalidation after unsafe requests (RFC 9111 §4.4).

A non-error response (2xx or 3xx) to an unsafe method — anything but GET, HEAD, OPTIONS
and TRACE, so unknown methods too — means the origin's state may have changed. The cache
then invalidates the target URI and the URIs in Location and Content-Location, the latter
two only when they have the same origin (scheme, host and port) as the target: otherwise a
response could purge another site's objects. Relative references are resolved against the
target URI (RFC 3986 §5, via `urllib.parse.urljoin`).

The result is a list of normalized URIs, which are the storage keys of GET responses
(`keys.RequestKey.key`); the proxy marks every variant under them invalid (or drops them).
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit

from millions.edge.headers import Headers, first_value
from millions.edge.keys import CacheKeyError, RequestKey, request_key

SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE"})


def _same_origin_uri(reference: bytes, request: RequestKey) -> bytes | None:
    resolved = urljoin(request.uri.decode("latin-1"), reference.strip().decode("latin-1"))
    parts = urlsplit(resolved)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        key = request_key(
            b"GET",
            parts.scheme.encode("latin-1"),
            parts.netloc.encode("latin-1"),
            target.encode("latin-1"),
        )
    except (CacheKeyError, ValueError):
        return None
    if key.scheme != request.scheme or key.host != request.host:
        return None
    return key.uri


def invalidation_uris(
    method: bytes, status: int, request: RequestKey, response_headers: Headers
) -> list[bytes]:
    """The URIs (GET keys) to invalidate after `method` got a `status` response."""
    if method in SAFE_METHODS or not 200 <= status < 400:
        return []
    uris = [request.uri]
    for field in (b"location", b"content-location"):
        reference = first_value(response_headers, field)
        if reference is None:
            continue
        uri = _same_origin_uri(reference, request)
        if uri is not None and uri not in uris:
            uris.append(uri)
    return uris
