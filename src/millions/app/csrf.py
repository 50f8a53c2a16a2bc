"""Cross-site request forgery defences. Pure functions over the session and headers.

HTML forms carry a per-session secret token in a hidden field; a POST whose token does
not match the session's is refused (the synchronizer-token pattern). Another site can
make a browser submit a form, but it cannot read our pages to learn the token.

The JSON API has no forms. Its bodies must be `application/json` (a cross-site page can
only send that with a CORS preflight, which this app never approves) or multipart (for
uploads), and every unsafe API request passes a same-origin check: browsers label each
request with `Sec-Fetch-Site`, and older ones send `Origin`; a request labelled as
coming from another site is refused. A request with neither header does not come from
a browser (curl, the load generator) and carries no ambient browser credentials to
abuse, so it is allowed. This is the rule of Go's `http.CrossOriginProtection`.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping, MutableMapping
from typing import Any
from urllib.parse import urlsplit

SESSION_KEY = "csrf_token"
FORM_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_ALLOWED_FETCH_SITES = frozenset({"same-origin", "none"})


def session_token(session: MutableMapping[str, Any]) -> str:
    """The session's form token, created on first use."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[SESSION_KEY] = token
    return token


def renew_token(session: MutableMapping[str, Any]) -> None:
    """A fresh token after login, so a token seen before authentication is worthless."""
    session[SESSION_KEY] = secrets.token_urlsafe(32)


def token_matches(session: Mapping[str, Any], submitted: object) -> bool:
    """Whether the submitted form token is this session's token."""
    expected = session.get(SESSION_KEY)
    if not isinstance(expected, str) or not isinstance(submitted, str) or not submitted:
        return False
    return hmac.compare_digest(expected.encode(), submitted.encode())


def cross_origin_reason(method: str, headers: Mapping[str, str]) -> str | None:
    """Why an API request looks cross-site and must be refused, or None to allow it.

    `headers` must be looked up case-insensitively (Starlette's `Headers` is).
    """
    if method.upper() in SAFE_METHODS:
        return None
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site.strip().lower() in _ALLOWED_FETCH_SITES:
            return None
        return f"cross-site request refused (Sec-Fetch-Site: {fetch_site})"
    origin = headers.get("origin")
    if origin is None:
        return None
    host = headers.get("host", "")
    if origin.strip().lower() == "null" or not host:
        return "cross-site request refused (opaque origin)"
    try:
        origin_host = urlsplit(origin.strip()).netloc
    except ValueError:
        return f"cross-site request refused (bad Origin: {origin!r})"
    if origin_host.lower() != host.strip().lower():
        return f"cross-site request refused (Origin {origin} is not {host})"
    return None
