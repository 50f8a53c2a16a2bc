"""Pure ASGI session middleware: any app gets `scope["session"]` backed by the shared store.

Pure ASGI rather than Starlette's BaseHTTPMiddleware: nothing is buffered, response
bodies stream straight through, and the only interception is `http.response.start`,
where the session is persisted *before* the headers leave, so the client's next request
finds it on whichever web server the load balancer picks.

The store is read only when the request carries a valid session cookie and written only
as `millions.sessions.commit.plan_commit` decides (see there for the rules, and
`millions.sessions.cookies` for the cookie and the touch throttle).

A bad cookie never fails a request: it reads as a fresh anonymous session. A store
outage does: a session that cannot be read or saved is answered with a short 503 (the
user is neither silently logged out nor shown a page whose session change was lost),
logged, and counted. A failed touch only costs sliding expiry and is tolerated.
WebSocket connections get the session read-only; changes made there are not saved.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from millions.sessions.base import Session, SessionStore, SessionStoreError
from millions.sessions.commit import plan_commit
from millions.sessions.cookies import CookieReading, SessionCookies, is_https
from millions.telemetry.metrics import LATENCY_BUCKETS

log = logging.getLogger("millions.sessions")

SESSIONS_CREATED = Counter("millions_sessions_created_total", "Sessions first stored")
SESSIONS_DESTROYED = Counter(
    "millions_sessions_destroyed_total", "Sessions deleted by destroy() or emptied"
)
SESSIONS_ROTATED = Counter(
    "millions_sessions_rotated_total", "Sessions moved to a new id (e.g. at login)"
)
INVALID_COOKIES = Counter(
    "millions_session_invalid_cookies_total",
    "Session cookies that did not lead to a session",
    ["reason"],
)
STORE_ERRORS = Counter(
    "millions_session_store_errors_total", "Failed session store operations", ["op"]
)
STORE_LATENCY = Histogram(
    "millions_session_store_seconds",
    "Session store operation latency",
    ["op"],
    buckets=LATENCY_BUCKETS,
)

UNAVAILABLE_BODY = b"503 Service Unavailable: the session store is unreachable, retry shortly.\n"
UNAVAILABLE_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", str(len(UNAVAILABLE_BODY)).encode()),
    (b"retry-after", b"1"),
    (b"cache-control", b"no-store"),
]
MIN_TOUCH_INTERVAL_S = 1.0

T = TypeVar("T")


def default_touch_interval(ttl_s: int) -> float:
    """A tenth of the TTL (an idle session loses at most 10% of its life), at least 1 s
    since cookie timestamps have whole-second resolution."""
    return max(MIN_TOUCH_INTERVAL_S, ttl_s / 10)


class SessionMiddleware:
    """Loads the session named by the signed cookie and saves it before the response."""

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore,
        secret: str,
        cookie_name: str = "millions_session",
        ttl_s: int = 1800,
        touch_interval_s: float | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl_s < 1:
            raise ValueError(f"ttl_s must be >= 1, got {ttl_s}")
        if touch_interval_s is None:
            touch_interval_s = default_touch_interval(ttl_s)
        if not 0 <= touch_interval_s < ttl_s:
            raise ValueError(
                f"touch_interval_s must be in [0, ttl_s={ttl_s}), got {touch_interval_s}"
            )
        self.app = app
        self.store = store
        self.ttl_s = ttl_s
        self.touch_interval_s = touch_interval_s
        self.cookies = SessionCookies(secret, cookie_name, ttl_s, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        cookie = self.cookies.read_headers(headers)
        if cookie.problem is not None:
            INVALID_COOKIES.labels(cookie.problem).inc()
        try:
            session = await self._load(cookie)
        except SessionStoreError as exc:
            log.warning("session store unavailable on load: %s", exc, extra={"op": "load"})
            await _refuse(kind, send)
            return
        scope["session"] = session
        if kind == "websocket":
            await self.app(scope, receive, send)
            return

        loaded_id = session.id
        refused = False

        async def send_with_session(message: Message) -> None:
            nonlocal refused
            if refused:
                return
            if message["type"] == "http.response.start":
                try:
                    set_cookie = await self._commit(session, loaded_id, cookie, scope)
                except SessionStoreError as exc:
                    log.warning("session store unavailable on save: %s", exc)
                    refused = True
                    await _refuse("http", send)
                    return
                if set_cookie is not None:
                    message = _with_cookie(message, set_cookie)
            await send(message)

        await self.app(scope, receive, send_with_session)

    async def _load(self, cookie: CookieReading) -> Session:
        if cookie.session_id is None:
            return Session(None)
        data = await self._timed("load", self.store.load(cookie.session_id))
        if data is None:
            INVALID_COOKIES.labels("unknown").inc()
            return Session(None)
        return Session(cookie.session_id, data)

    async def _commit(
        self, session: Session, loaded_id: str | None, cookie: CookieReading, scope: Scope
    ) -> bytes | None:
        """Carry out the plan; returns the Set-Cookie header value to add, if any."""
        plan = plan_commit(session, loaded_id, cookie, self.touch_interval_s)
        if plan.save == "new":
            session.id = secrets.token_urlsafe(32)
        if plan.save != "none" and session.id is not None:
            await self._timed("save", self.store.save(session.id, session.to_dict(), self.ttl_s))
        for old_id in plan.delete_ids:
            await self._timed("delete", self.store.delete(old_id))
        if plan.touch and session.id is not None:
            try:
                await self._timed("touch", self.store.touch(session.id, self.ttl_s))
            except SessionStoreError as exc:
                log.warning("session touch failed, expiry not extended: %s", exc)
                return None
        if plan.created:
            SESSIONS_CREATED.inc()
        if plan.rotated:
            SESSIONS_ROTATED.inc()
        if plan.destroyed:
            SESSIONS_DESTROYED.inc()
        if plan.cookie == "keep":
            return None
        secure = is_https(scope.get("scheme", "http"), scope["headers"])
        if plan.cookie == "set" and session.id is not None:
            return self.cookies.set_header(session.id, secure)
        session.id = None
        return self.cookies.clear_header(secure)

    async def _timed(self, op: str, operation: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await operation
        except SessionStoreError:
            STORE_ERRORS.labels(op).inc()
            raise
        finally:
            STORE_LATENCY.labels(op).observe(time.perf_counter() - started)


def _with_cookie(message: Message, set_cookie: bytes) -> Message:
    """The response start with our Set-Cookie added.

    A response that sets a session cookie must never be stored by a shared cache (the
    CDN would hand one user's session to everyone), so unless the app chose its own
    caching it is marked private.
    """
    headers = list(message.get("headers", ()))
    if not any(key.lower() == b"cache-control" for key, _ in headers):
        headers.append((b"cache-control", b"private"))
    headers.append((b"set-cookie", set_cookie))
    return {**message, "headers": headers}


async def _refuse(kind: str, send: Send) -> None:
    """Answer without the app: 503 for HTTP, close (server replies 403) for WebSocket."""
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1011})
        return
    await send({"type": "http.response.start", "status": 503, "headers": UNAVAILABLE_HEADERS})
    await send({"type": "http.response.body", "body": UNAVAILABLE_BODY})
