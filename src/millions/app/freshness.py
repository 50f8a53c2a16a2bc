"""Read-your-writes over a read cache that lives in each web server's memory.

The shards' embedded read cache is per process: a write invalidates the cached reads of
the process that made it, not those of the other web servers, which keep the old rows
until the cache's TTL. The load balancer may send a user's next request to any of them.
So a user's successful write (any unsafe request answered below 400) stamps the shared
session, and every request of that user within the TTL after it reads from the shards,
not the cache (`fresh_reads()`), while other users keep the cache's benefit: they see
the change within the TTL, as the cache promises.
"""

from __future__ import annotations

import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from millions.sessions.base import Session

WROTE_AT_KEY = "wrote_at"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
USER_ID_KEY = "user_id"  # where the session keeps the logged-in user's id

_fresh_reads: ContextVar[bool] = ContextVar("millions_app_fresh_reads", default=False)


def fresh_reads() -> bool:
    """Whether the current request must not be answered from the read cache."""
    return _fresh_reads.get()


def wrote_recently(session: Session, ttl_s: float, now: float) -> bool:
    wrote_at = session.get(WROTE_AT_KEY)
    return isinstance(wrote_at, int | float) and 0 <= now - wrote_at < ttl_s


class ReadYourWritesMiddleware:
    """Marks requests of recent writers as `fresh_reads()`; stamps writes in the session.

    Runs inside the session middleware (the session is in the scope)."""

    def __init__(self, app: ASGIApp, ttl_s: float) -> None:
        self.app = app
        self.ttl_s = ttl_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        session = scope.get("session")
        if scope["type"] != "http" or not isinstance(session, Session):
            await self.app(scope, receive, send)
            return
        token = _fresh_reads.set(wrote_recently(session, self.ttl_s, time.time()))
        unsafe = scope["method"] not in SAFE_METHODS

        async def stamp_writes(message: Message) -> None:
            if (
                unsafe
                and message["type"] == "http.response.start"
                and message["status"] < 400
                and session.get(USER_ID_KEY) is not None
            ):
                session[WROTE_AT_KEY] = time.time()
            await send(message)

        try:
            await self.app(scope, receive, stamp_writes)
        finally:
            _fresh_reads.reset(token)
