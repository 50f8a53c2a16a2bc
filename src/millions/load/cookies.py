"""Per-user cookies, keyed by cookie name only.

Hand-written instead of aiohttp's `CookieJar` because a simulated user is one browser on
one site: its session cookie must follow it when the site's name resolves to another
data center (geo DNS failover moves users between IP addresses). aiohttp's jar scopes
cookies by host and ignores cookies from IP-address hosts unless told otherwise, which
would silently log users out on failover. Each user keeps a plain dict instead, updated
from `Set-Cookie` (expiry and deletion honoured) and sent back as one `Cookie` header.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookies import CookieError, SimpleCookie


def apply_set_cookie(jar: dict[str, str], set_cookie_headers: list[str], now: datetime) -> None:
    """Update `jar` (name -> value as sent) from a response's Set-Cookie header values."""
    for header in set_cookie_headers:
        parsed: SimpleCookie = SimpleCookie()
        try:
            parsed.load(header)
        except CookieError:
            continue
        for name, morsel in parsed.items():
            if _expired(morsel["max-age"], morsel["expires"], now):
                jar.pop(name, None)
            else:
                jar[name] = morsel.coded_value


def cookie_header(jar: dict[str, str]) -> str:
    """The Cookie request header value for `jar` ('' when empty)."""
    return "; ".join(f"{name}={value}" for name, value in jar.items())


def _expired(max_age: str, expires: str, now: datetime) -> bool:
    if max_age:
        try:
            return int(max_age) <= 0
        except ValueError:
            pass
    if expires:
        try:
            when = parsedate_to_datetime(expires)
        except (TypeError, ValueError):
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when <= now
    return False
