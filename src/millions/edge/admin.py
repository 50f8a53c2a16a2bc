"""The edge's purge admin API: request parsing, bearer-token check, and applying a purge.

`POST /purge` on the ops listener takes `{"url" | "prefix" | "key": str, "soft": bool}`.
A URL is turned into the same cache key the edge stores under (`request_key`), so
`http://CDN.example:80/a` purges what `GET /a` with `Host: cdn.example` stored. A prefix
is compared with those normalized keys (`http://cdn.example/static/`), or, when it starts
with `/`, with their path on any host (`/static/`). A key purges every
object tagged with it by Surrogate-Key or Cache-Tag. Soft purges mark objects stale (still
usable for stale-if-error), hard purges drop them.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

from millions.edge.keys import CacheKeyError, request_key
from millions.edge.storage import TieredStore

#: Environment variable read when no admin token is passed to `run`.
ADMIN_TOKEN_ENV = "MILLIONS_ADMIN_TOKEN"

#: Largest purge request body accepted.
MAX_PURGE_BODY_BYTES = 64 * 1024


class PurgeKind(Enum):
    URL = "url"
    PREFIX = "prefix"
    KEY = "key"


@dataclass(frozen=True, slots=True)
class PurgeRequest:
    """One purge: what to match (`target` is a cache key, key prefix or surrogate key)."""

    kind: PurgeKind
    target: bytes
    soft: bool


class PurgeRequestError(ValueError):
    """A purge request body that is not what the API takes; the message says why."""


def parse_purge_request(body: bytes) -> PurgeRequest:
    """Parse and check a JSON purge request; PurgeRequestError says what is wrong."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PurgeRequestError(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise PurgeRequestError("body must be a JSON object")
    unknown = set(document) - {kind.value for kind in PurgeKind} - {"soft"}
    if unknown:
        raise PurgeRequestError(f"unknown fields: {', '.join(sorted(unknown))}")
    kinds = [kind for kind in PurgeKind if kind.value in document]
    if len(kinds) != 1:
        raise PurgeRequestError('give exactly one of "url", "prefix", "key"')
    kind = kinds[0]
    value = document[kind.value]
    if not isinstance(value, str) or not value:
        raise PurgeRequestError(f'"{kind.value}" must be a non-empty string')
    soft = document.get("soft", False)
    if not isinstance(soft, bool):
        raise PurgeRequestError('"soft" must be true or false')
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise PurgeRequestError(f'"{kind.value}" must be ASCII (percent-encode URLs)') from None
    if kind is PurgeKind.URL:
        raw = url_cache_key(value)
    return PurgeRequest(kind, raw, soft)


def url_cache_key(url: str) -> bytes:
    """The cache key a GET of absolute `url` is stored under."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise PurgeRequestError('"url" must be an absolute http:// or https:// URL')
    try:
        return request_key(
            b"GET", parts.scheme.encode(), parts.netloc.encode("ascii"), url.encode("ascii")
        ).key
    except CacheKeyError as exc:
        raise PurgeRequestError(f'"url" is not a valid cache key: {exc}') from None


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether an Authorization header carries `token` (constant-time comparison)."""
    if authorization is None:
        return False
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


def require_loopback(host: str) -> None:
    """Refuse an ops address that is not a loopback IP: the ops listener carries the
    purge API and metrics and must not be reachable from the network."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"ops address must be a loopback IP (127.x.x.x), not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"ops address must be a loopback IP (127.x.x.x), not {host!r}")


async def apply_purge(store: TieredStore, request: PurgeRequest) -> int:
    """Run one purge on the store; how many objects it affected."""
    if request.kind is PurgeKind.URL:
        return await store.purge(request.target, soft=request.soft)
    if request.kind is PurgeKind.PREFIX:
        return await store.purge_prefix(request.target, soft=request.soft)
    return await store.purge_surrogate_key(request.target, soft=request.soft)
