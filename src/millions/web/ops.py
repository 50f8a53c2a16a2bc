"""Operational endpoints and request metrics for a web server, as pure ASGI middleware.

`/healthz` and `/metrics` are answered here, before the app, so any ASGI app run by
`millions web` gets them. Web servers sit behind the load balancer, which health-checks
`/healthz`; Prometheus scrapes `/metrics`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from millions.telemetry.metrics import CONTENT_TYPE, LATENCY_BUCKETS, render

REQUESTS = Counter(
    "millions_web_requests_total", "HTTP requests answered", ["method", "status_class"]
)
LATENCY = Histogram(
    "millions_web_request_seconds", "Time to the end of the response", buckets=LATENCY_BUCKETS
)
IN_FLIGHT_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


class OpsMiddleware:
    """Serves /healthz and /metrics and counts every other request."""

    def __init__(self, app: ASGIApp, component: str) -> None:
        self.app = app
        self.component = component
        self.started = time.time()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path == "/healthz":
            body = json.dumps(
                {
                    "status": "ok",
                    "component": self.component,
                    "uptime_s": round(time.time() - self.started, 3),
                }
            ).encode()
            await _respond(send, 200, b"application/json", body)
            return
        if path == "/metrics":
            await _respond(send, 200, CONTENT_TYPE.encode(), render())
            return
        started = time.perf_counter()
        status = 500

        async def send_counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_counted)
        finally:
            method = scope["method"] if scope["method"] in IN_FLIGHT_METHODS else "other"
            REQUESTS.labels(method, f"{status // 100}xx").inc()
            LATENCY.observe(time.perf_counter() - started)


async def _respond(send: Send, status: int, content_type: bytes, body: bytes) -> None:
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    start: dict[str, Any] = {"type": "http.response.start", "status": status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": body})
