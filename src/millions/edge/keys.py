"""Primary cache keys (RFC 9111 §2, §4) and the request inputs that must not be trusted.

The primary key is the target URI, built from the connection's scheme, the Host and the
request-target, normalized so that equivalent URIs share an entry (RFC 9110 §4.2.3,
RFC 3986 §6.2.2): lower-case host without a trailing dot, no default port, empty path as
"/", percent-encoding with upper-case hex, percent-encoded unreserved characters decoded,
and bytes that may not appear raw (space-free but unsafe characters such as `"<>\\^{|}`
and non-ASCII) percent-encoded. Dot-segments are kept as sent: the origin, not the edge,
decides what `/a/../b` means.

The key must describe exactly what the origin is asked for, or one URL's response can be
stored under another's key (cache poisoning). So the proxy forwards `RequestKey.target` and
`RequestKey.host`, never the raw ones, and refuses (400) what cannot be keyed safely,
raising `CacheKeyError`: control characters or spaces anywhere, a fragment, malformed
percent-encoding, a Host that is not a plain host[:port] (CR/LF, userinfo, paths), an
absolute-form target naming another host or scheme than the request's, the `*` and
authority forms, and keys over `MAX_KEY_LENGTH`.

GET and HEAD share a key: only GET responses are stored, and HEAD is answered from them.
Other methods get the method as a prefix so their keys can never name a stored GET.

`UNKEYED_OVERRIDE_FIELDS` lists request fields that some frameworks use to rewrite the
host, URL, scheme or method (Werkzeug's ProxyFix, Django, Symfony, Rack, IIS rewrites).
They are not part of the key, so a client could use them to make the origin return a
different response for a keyed URL; the proxy strips them from requests before
forwarding (`is_override_field`, which also catches underscore spellings).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_KEY_LENGTH = 8192
_MAX_HOST_LENGTH = 255
DEFAULT_PORTS = {b"http": b"80", b"https": b"443"}

UNKEYED_OVERRIDE_FIELDS = frozenset(
    {
        b"x-forwarded-host",
        b"x-forwarded-server",
        b"x-forwarded-scheme",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-forwarded-uri",
        b"x-forwarded-ssl",
        b"front-end-https",
        b"x-url-scheme",
        b"x-host",
        b"x-http-host-override",
        b"x-original-url",
        b"x-original-uri",
        b"x-original-host",
        b"x-rewrite-url",
        b"x-http-method-override",
        b"x-http-method",
        b"x-method-override",
        b"forwarded",
    }
)


def is_override_field(name: bytes) -> bool:
    """Whether a lower-cased field name is an override field, also when spelled with
    underscores: CGI-style servers (WSGI, PHP) read `X_Forwarded_Host` as
    `X-Forwarded-Host`, since both become `HTTP_X_FORWARDED_HOST`."""
    return name in UNKEYED_OVERRIDE_FIELDS or (
        b"_" in name and name.replace(b"_", b"-") in UNKEYED_OVERRIDE_FIELDS
    )


class CacheKeyError(ValueError):
    """The request cannot be keyed safely; the proxy answers 400 Bad Request."""


@dataclass(frozen=True, slots=True)
class RequestKey:
    """`key` is the storage key; `uri` the normalized target URI (equal to `key` for GET
    and HEAD); `host` and `target` are what the proxy forwards to the origin."""

    key: bytes
    uri: bytes
    scheme: bytes
    host: bytes
    target: bytes


_REG_NAME = re.compile(rb"[a-z0-9\-._~]+")
_IPV6 = re.compile(rb"\[[0-9a-f:.]+\]")
_PORT = re.compile(rb"[0-9]{1,5}")
_PLAIN_TARGET = re.compile(rb"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ALLOWED = _UNRESERVED | frozenset(b"!$&'()*+,;=:@/?")
_HEX = frozenset(b"0123456789ABCDEFabcdef")


@lru_cache(maxsize=1024)
def normalize_authority(scheme: bytes, authority: bytes) -> bytes:
    """`host[:port]` lower-cased, trailing dot and default port removed; CacheKeyError if
    it is anything but a DNS name, IPv4 address or bracketed IPv6 address with a port.
    Results are cached: a server sees the same few Host values over and over."""
    authority = authority.lower()
    if authority.startswith(b"["):
        end = authority.find(b"]")
        host, rest = authority[: end + 1], authority[end + 1 :]
        if end < 0 or _IPV6.fullmatch(host) is None:
            raise CacheKeyError("invalid IPv6 host")
        if rest and not rest.startswith(b":"):
            raise CacheKeyError("invalid host")
        port = rest[1:] if rest else b""
    else:
        host, _, port = authority.partition(b":")
        if host.endswith(b"."):
            host = host[:-1]
        if _REG_NAME.fullmatch(host) is None:
            raise CacheKeyError("invalid host")
    if len(host) > _MAX_HOST_LENGTH:
        raise CacheKeyError("host too long")
    if port:
        if _PORT.fullmatch(port) is None or not 0 < int(port) < 65536:
            raise CacheKeyError("invalid port")
        port = str(int(port)).encode()
        if port != DEFAULT_PORTS.get(scheme):
            return host + b":" + port
    return host


def normalize_target(target: bytes) -> bytes:
    """An origin-form request-target in normal form (see module docstring)."""
    if not target.startswith(b"/"):
        raise CacheKeyError("request-target is not in origin-form")
    if _PLAIN_TARGET.fullmatch(target) is not None:
        return target
    out = bytearray()
    index = 0
    length = len(target)
    while index < length:
        byte = target[index]
        if byte == 0x25:  # "%"
            pair = target[index + 1 : index + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                raise CacheKeyError("malformed percent-encoding")
            decoded = int(pair, 16)
            if decoded in _UNRESERVED:
                out.append(decoded)
            else:
                out += b"%" + pair.upper()
            index += 3
            continue
        if byte in _ALLOWED:
            out.append(byte)
        elif byte <= 0x20 or byte == 0x7F:
            raise CacheKeyError("control character or space in request-target")
        elif byte == 0x23:  # "#"
            raise CacheKeyError("fragment in request-target")
        else:
            out += b"%%%02X" % byte
        index += 1
    return bytes(out)


def _split_absolute(scheme: bytes, target: bytes) -> tuple[bytes, bytes]:
    """(authority, origin-form) of an absolute-form target (RFC 9112 §3.2.2)."""
    target_scheme, _, rest = target.partition(b"://")
    if target_scheme.lower() != scheme:
        raise CacheKeyError("absolute-form target has another scheme")
    cut = len(rest)
    for delimiter in (b"/", b"?"):
        position = rest.find(delimiter)
        if 0 <= position < cut:
            cut = position
    authority, path = rest[:cut], rest[cut:]
    if b"@" in authority:
        raise CacheKeyError("userinfo in request-target")
    if not path.startswith(b"/"):
        path = b"/" + path
    return authority, path


def request_key(
    method: bytes,
    scheme: bytes,
    host: bytes,
    target: bytes,
    *,
    max_length: int = MAX_KEY_LENGTH,
) -> RequestKey:
    """The cache key of a request. `scheme` is the connection's (b"http" / b"https"),
    `host` the Host field value, `target` the request-target as received."""
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise CacheKeyError("unsupported scheme")
    if not host:
        raise CacheKeyError("missing Host")
    authority = normalize_authority(scheme, host.strip(b" \t"))
    if len(target) > max_length:
        raise CacheKeyError("request-target too long")
    if target[:1] != b"/" and b"://" in target[:8]:
        target_authority, target = _split_absolute(scheme, target)
        if normalize_authority(scheme, target_authority) != authority:
            raise CacheKeyError("absolute-form target names another host than Host")
    target = normalize_target(target)
    uri = b"%s://%s%s" % (scheme, authority, target)
    if len(uri) > max_length:
        raise CacheKeyError("cache key too long")
    key = uri if method in (b"GET", b"HEAD") else method + b" " + uri
    return RequestKey(key=key, uri=uri, scheme=scheme, host=authority, target=target)
