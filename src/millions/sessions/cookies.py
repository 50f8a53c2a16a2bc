"""The session cookie: a signed, timestamped session id. Pure functions, no I/O.

The cookie value is `<session id>.<timestamp>.<signature>` (itsdangerous
`TimestampSigner`, HMAC-SHA256). The timestamp is when the store's expiry for this
session was last pushed out (a save or a touch), and the cookie is re-issued each time
that happens. It serves two purposes without a store round trip:

* sliding expiry is throttled: a request touches the store only when the cookie is older
  than the touch interval;
* a cookie older than the TTL is known dead (the store has expired it too) and is
  rejected without a lookup.

Anything that is not exactly such a cookie (too long, not ASCII, bad signature, wrong id
shape, too old) reads as "no session", with the reason kept for metrics.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, TimestampSigner
from starlette.requests import cookie_parser

# Our cookies are about 100 characters; anything much longer is not one of ours.
MAX_COOKIE_CHARS = 256
SESSION_ID_SHAPE = re.compile(r"[A-Za-z0-9_\-]{43}")  # secrets.token_urlsafe(32)
SIGNER_SALT = "millions.sessions.cookie"
COOKIE_NAME_SHAPE = re.compile(r"[A-Za-z0-9_\-]{1,64}")

CookieProblem = Literal["oversized", "malformed", "bad_signature", "expired"]


@dataclass(frozen=True, slots=True)
class CookieReading:
    """What a request's session cookie says: a session id to look up, or why not."""

    session_id: str | None = None
    age_s: float | None = None
    problem: CookieProblem | None = None

    @property
    def present(self) -> bool:
        """The client sent a session cookie, valid or not."""
        return self.session_id is not None or self.problem is not None


class _ClockedSigner(TimestampSigner):
    """A TimestampSigner reading the time from an injectable clock."""

    def __init__(self, secret: str, clock: Callable[[], float]) -> None:
        super().__init__(secret, salt=SIGNER_SALT, digest_method=hashlib.sha256)
        self.clock = clock

    def get_timestamp(self) -> int:
        return int(self.clock())


class SessionCookies:
    """Signs and verifies session cookies and builds their Set-Cookie headers."""

    def __init__(self, secret: str, name: str, ttl_s: int, clock: Callable[[], float]) -> None:
        if not secret:
            raise ValueError("the session cookie needs a non-empty signing secret")
        if not COOKIE_NAME_SHAPE.fullmatch(name):
            raise ValueError(f"cookie name must be 1-64 of A-Z a-z 0-9 _ -, got {name!r}")
        self.name = name
        self.ttl_s = ttl_s
        self.clock = clock
        self._signer = _ClockedSigner(secret, clock)
        self._name_bytes = name.encode("latin-1")

    def sign(self, session_id: str) -> str:
        """The cookie value for `session_id`, stamped with the current time."""
        return self._signer.sign(session_id).decode("ascii")

    def read(self, value: str | None) -> CookieReading:
        """Verify a cookie value; never raises."""
        if value is None:
            return CookieReading()
        if len(value) > MAX_COOKIE_CHARS:
            return CookieReading(problem="oversized")
        if not value.isascii():
            return CookieReading(problem="malformed")
        try:
            signed, stamped = self._signer.unsign(value, return_timestamp=True)
            session_id = signed.decode("ascii")
            age_s = self.clock() - stamped.timestamp()
        except BadSignature:
            return CookieReading(problem="bad_signature")
        except (ValueError, OverflowError, OSError):
            return CookieReading(problem="malformed")
        if not SESSION_ID_SHAPE.fullmatch(session_id):
            return CookieReading(problem="malformed")
        if age_s > self.ttl_s:
            return CookieReading(problem="expired")
        return CookieReading(session_id=session_id, age_s=max(age_s, 0.0))

    def read_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> CookieReading:
        """Find and verify the session cookie among ASGI request headers."""
        cookie_headers = [value for key, value in headers if key == b"cookie"]
        if not cookie_headers:
            return CookieReading()
        joined = b"; ".join(cookie_headers)
        if self._name_bytes not in joined:
            return CookieReading()
        return self.read(cookie_parser(joined.decode("latin-1")).get(self.name))

    def set_header(self, session_id: str, secure: bool) -> bytes:
        """Set-Cookie for a fresh signed cookie living as long as the session."""
        return self._header(self.sign(session_id), self.ttl_s, secure)

    def clear_header(self, secure: bool) -> bytes:
        """Set-Cookie that makes the browser drop the session cookie now."""
        return self._header("", 0, secure)

    def _header(self, value: str, max_age: int, secure: bool) -> bytes:
        header = f"{self.name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax"
        if secure:
            header += "; Secure"
        return header.encode("latin-1")


def is_https(scheme: str, headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the client reached us over TLS, directly or via our load balancer.

    X-Forwarded-Proto is trusted: web servers are reachable only through the load
    balancer, which sets it. (Marking a cookie Secure wrongly only withholds it on http.)
    """
    if scheme in ("https", "wss"):
        return True
    for key, value in headers:
        if key == b"x-forwarded-proto":
            return value.split(b",", 1)[0].strip().lower() == b"https"
    return False
