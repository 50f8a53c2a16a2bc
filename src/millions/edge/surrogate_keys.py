"""Surrogate keys: the groups a stored response belongs to, for purge by key.

Two response fields name them, as CDNs do: `Surrogate-Key` (space-separated, Fastly and
Varnish xkey) and `Cache-Tag` (comma-separated, Cloudflare). Keys are case-sensitive
opaque strings. Limits keep a hostile or buggy origin from bloating the purge index: at
most `MAX_KEYS` keys per response (later ones are dropped), each 1 to `MAX_KEY_LENGTH` bytes
of visible ASCII (others are dropped).

The proxy should not forward these fields to clients (they describe the origin's
internals); `SURROGATE_KEY_FIELDS` names them.
"""

from __future__ import annotations

from millions.edge.headers import Headers

SURROGATE_KEY_FIELDS = frozenset({b"surrogate-key", b"cache-tag"})
MAX_KEYS = 256
MAX_KEY_LENGTH = 1024


def _visible_ascii(key: bytes) -> bool:
    return key.isascii() and all(0x21 <= byte <= 0x7E for byte in key)


def parse_surrogate_keys(
    headers: Headers, *, max_keys: int = MAX_KEYS, max_key_length: int = MAX_KEY_LENGTH
) -> list[bytes]:
    """The keys named by Surrogate-Key and Cache-Tag lines, in order, de-duplicated."""
    keys: list[bytes] = []
    seen: set[bytes] = set()
    for name, value in headers:
        if name == b"surrogate-key":
            candidates = value.split()
        elif name == b"cache-tag":
            candidates = [member.strip(b" \t") for member in value.split(b",")]
        else:
            continue
        for key in candidates:
            if len(keys) >= max_keys:
                return keys
            if 0 < len(key) <= max_key_length and key not in seen and _visible_ascii(key):
                seen.add(key)
                keys.append(key)
    return keys


def surrogate_keys(headers: Headers) -> frozenset[bytes]:
    """The set of surrogate keys of a response (default limits)."""
    return frozenset(parse_surrogate_keys(headers))
