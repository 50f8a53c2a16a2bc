"""The DNS server's admin API (loopback only) and the client the CLI calls.

Open: `GET /healthz` (the process answers) and `GET /metrics` (Prometheus). With the
bearer token (403 when the server has none): `GET /state` (health, drains and each
region's current answers as JSON), `POST /drain` and `POST /undrain` with `{"dc": NAME}`.
A drained data center gets no new clients while another healthy one exists (see
`millions.dns.answers`); answers follow at once, resolvers follow within the TTL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from millions.edge.admin import bearer_matches
from millions.telemetry.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from millions.dns.main import GeoDns

MAX_BODY_BYTES = 4096
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def admin_app(geodns: GeoDns, registry: CollectorRegistry, token: str | None) -> web.Application:
    """The admin routes of one DNS server process."""

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/metrics"):
            return await handler(request)
        if token is None:
            return _error(403, "admin API disabled: no admin token configured")
        if not bearer_matches(request.headers.get("Authorization"), token):
            response = _error(401, "missing or wrong token (Authorization: Bearer <token>)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="millions-dns"'
            return response
        return await handler(request)

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "zone": geodns.config.zone})

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    async def state(_request: web.Request) -> web.Response:
        return web.json_response(geodns.state())

    async def dc_of(request: web.Request) -> str | web.Response:
        body = await request.content.read(MAX_BODY_BYTES + 1)
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return _error(400, 'body must be JSON: {"dc": NAME}')
        if not isinstance(document, dict) or set(document) != {"dc"}:
            return _error(400, 'body must be {"dc": NAME}')
        dc = document["dc"]
        if not isinstance(dc, str) or dc not in geodns.config.dcs:
            names = ", ".join(geodns.config.dcs)
            return _error(404, f"no data center named {dc!r}; data centers: {names}")
        return dc

    async def drain(request: web.Request) -> web.Response:
        dc = await dc_of(request)
        if isinstance(dc, web.Response):
            return dc
        return web.json_response({"dc": dc, "drained": geodns.drain(dc)})

    async def undrain(request: web.Request) -> web.Response:
        dc = await dc_of(request)
        if isinstance(dc, web.Response):
            return dc
        return web.json_response({"dc": dc, "drained": geodns.undrain(dc)})

    app = web.Application(middlewares=[authenticate], client_max_size=MAX_BODY_BYTES)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/state", state)
    app.router.add_post("/drain", drain)
    app.router.add_post("/undrain", undrain)
    return app


class DnsAdminError(Exception):
    """An admin call failed; the message says why."""


def _call(admin_url: str, token: str, method: str, path: str, body: Any, timeout_s: float) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        admin_url.rstrip("/") + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except (ValueError, AttributeError):
            message = exc.reason
        raise DnsAdminError(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DnsAdminError(f"cannot reach the DNS admin API at {admin_url}: {reason}") from None
    except ValueError:
        raise DnsAdminError(f"the DNS admin API at {admin_url} did not answer JSON") from None


def drain_dc(admin_url: str, token: str, dc: str, timeout_s: float = 5.0) -> list[str]:
    """Drain `dc` (`millions dc drain NAME`); returns every drained DC."""
    result = _call(admin_url, token, "POST", "/drain", {"dc": dc}, timeout_s)
    return list(result["drained"])


def undrain_dc(admin_url: str, token: str, dc: str, timeout_s: float = 5.0) -> list[str]:
    """Undrain `dc` (`millions dc undrain NAME`); returns the DCs still drained."""
    result = _call(admin_url, token, "POST", "/undrain", {"dc": dc}, timeout_s)
    return list(result["drained"])


def fetch_state(admin_url: str, token: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """The server's health view, drains and current answers per region (`GET /state`)."""
    result = _call(admin_url, token, "GET", "/state", None, timeout_s)
    if not isinstance(result, dict):
        raise DnsAdminError(f"the DNS admin API at {admin_url} answered an unexpected body")
    return result
