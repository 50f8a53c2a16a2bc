"""Header fields as the proxy holds them, and the list syntax shared by cache fields.

A header block is a sequence of `(name, value)` byte pairs, names lower-cased, values as
received (httptools hands out raw bytes; lower-casing the name once on receipt keeps every
lookup here a plain comparison). Order and repeated lines are kept, because RFC 9110 §5.3
lets a recipient combine repeated lines of a list field only in order.

The comma-list splitter is hand-written rather than taken from a library because the proxy
works in bytes and needs only RFC 9110 §5.6.1 lists with §5.6.4 quoted strings; the
stdlib's `urllib.request.parse_http_list` works on str and keeps the quotes.
"""

from __future__ import annotations

from collections.abc import Sequence

Header = tuple[bytes, bytes]
Headers = Sequence[Header]

OWS = b" \t"

#: Hop-by-hop fields (RFC 9110 §7.6.1): meaningful for one connection only, never stored
#: or forwarded. Connection also names further hop-by-hop fields, see `connection_listed`.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)

#: Fields about the proxy hop itself (RFC 9111 §3.1): a shared cache must not store them.
PROXY_FIELDS = frozenset(
    {b"proxy-authenticate", b"proxy-authentication-info", b"proxy-authorization"}
)

SET_COOKIE_FIELDS = frozenset({b"set-cookie", b"set-cookie2"})


def first_value(headers: Headers, name: bytes) -> bytes | None:
    """The first line's value of `name`, for singleton fields (RFC 9111 §4.2.1: use the
    first occurrence when a singleton field repeats)."""
    for field, value in headers:
        if field == name:
            return value
    return None


def split_list(value: bytes) -> list[bytes]:
    """Members of a comma-separated list (RFC 9110 §5.6.1), OWS trimmed, empty members
    dropped. Commas inside quoted strings (§5.6.4) do not split."""
    if b'"' not in value:
        members = (member.strip(OWS) for member in value.split(b","))
        return [member for member in members if member]
    members_q: list[bytes] = []
    start = 0
    in_quotes = False
    index = 0
    length = len(value)
    while index < length:
        byte = value[index]
        if in_quotes:
            if byte == 0x5C:  # backslash: quoted-pair, skip the escaped byte
                index += 1
            elif byte == 0x22:
                in_quotes = False
        elif byte == 0x22:
            in_quotes = True
        elif byte == 0x2C:
            member = value[start:index].strip(OWS)
            if member:
                members_q.append(member)
            start = index + 1
        index += 1
    member = value[start:].strip(OWS)
    if member:
        members_q.append(member)
    return members_q


def unquote(value: bytes) -> bytes | None:
    """The content of a quoted-string (RFC 9110 §5.6.4) with quoted-pairs resolved, or None
    if `value` is not exactly one well-formed quoted-string."""
    if len(value) < 2 or value[0] != 0x22 or value[-1] != 0x22:
        return None
    inner = value[1:-1]
    if b"\\" not in inner:
        return None if b'"' in inner else inner
    out = bytearray()
    index = 0
    while index < len(inner):
        byte = inner[index]
        if byte == 0x5C:
            index += 1
            if index == len(inner):
                return None
            out.append(inner[index])
        elif byte == 0x22:
            return None
        else:
            out.append(byte)
        index += 1
    return bytes(out)


def connection_listed(headers: Headers) -> frozenset[bytes]:
    """Field names the Connection header marks as hop-by-hop (RFC 9110 §7.6.1)."""
    names: set[bytes] = set()
    for field, value in headers:
        if field == b"connection":
            names.update(member.lower() for member in split_list(value))
    return frozenset(names)
