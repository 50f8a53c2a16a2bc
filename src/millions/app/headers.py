"""Headers every response gets: which server answered, and a safe caching default.

`X-Served-By` names the web server so the load balancer's spreading is visible. Pages and
API answers depend on the session, so unless a handler says otherwise they are
`no-store` (a shared cache such as the CDN edge must never hand one user's page to
another); static assets and photo images set their own public caching.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_CACHE_CONTROL = "no-store"


class ServerHeadersMiddleware:
    """Adds X-Served-By, anti-sniffing and anti-framing headers and a default Cache-Control."""

    def __init__(self, app: ASGIApp, component: str) -> None:
        self.app = app
        self.component = component

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["x-served-by"] = self.component
                headers.setdefault("x-content-type-options", "nosniff")
                headers.setdefault("x-frame-options", "DENY")
                headers.setdefault("cache-control", DEFAULT_CACHE_CONTROL)
            await send(message)

        await self.app(scope, receive, send_with_headers)
