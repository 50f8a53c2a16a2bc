"""Shared by the geo DNS tests: a two-region config, a running in-process server, fake
health endpoints that can be flipped to 503, and polling with a deadline.

Addresses (all inside the DNS tests' range 127.0.130.0-127.0.139.255):
127.0.130.1 the in-process DNS server, 127.0.131.x clients in region "us",
127.0.132.x clients in region "eu", 127.0.133.x clients no prefix matches,
127.0.134.x fake health endpoints, 127.0.135.1 the DNS server run as a subprocess.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import dns.asyncquery
import dns.message
import dns.rdatatype
from aiohttp import web

from millions.dns.config import DnsConfig, parse
from millions.dns.main import GeoDns

ZONE = "millions.test"
DNS_HOST = "127.0.130.1"
US_CLIENT = "127.0.131.7"
EU_CLIENT = "127.0.132.7"
UNMAPPED_CLIENT = "127.0.133.7"
HEALTH_HOST = "127.0.134.1"
TOKEN = "dns-test-token"
US_LB, EU_LB = "127.0.1.1", "127.0.2.1"
US_EDGE, EU_EDGE = "127.0.1.2", "127.0.2.2"


def config_data(
    health: dict[str, str] | None = None, host: str = DNS_HOST, **overrides: Any
) -> dict[str, Any]:
    """The test topology: DCs us-east and eu-west, an edge in front of each, regions us and
    eu (default us). `health` maps a target name to its health URL."""
    urls = health or {}

    def url(name: str) -> str:
        return urls.get(name, f"http://{HEALTH_HOST}:9/{name}")

    data: dict[str, Any] = {
        "zone": ZONE,
        "listen": f"{host}:0",
        "admin": f"{host}:0",
        "prefixes": {
            "127.0.131.0/24": "us",
            "127.0.132.0/24": "eu",
            "127.0.132.128/25": "us",
            "2001:db8::/32": "eu",
        },
        "default_region": "us",
        "regions": {"us": ["us-east", "eu-west"], "eu": ["eu-west", "us-east"]},
        "dcs": {
            "us-east": {"address": US_LB, "health_url": url("us-east")},
            "eu-west": {"address": EU_LB, "health_url": url("eu-west")},
        },
        "edges": {
            "edge-us": {"address": US_EDGE, "health_url": url("edge-us"), "dc": "us-east"},
            "edge-eu": {"address": EU_EDGE, "health_url": url("edge-eu"), "dc": "eu-west"},
        },
    }
    data.update(overrides)
    return data


def make_config(**overrides: Any) -> DnsConfig:
    return parse(config_data(**overrides))


async def always_healthy(_url: str, _timeout_s: float) -> bool:
    return True


@asynccontextmanager
async def running_dns(
    config: DnsConfig | None = None,
    token: str | None = TOKEN,
    check: Callable[[str, float], Awaitable[bool]] | None = None,
    **kwargs: Any,
) -> AsyncIterator[GeoDns]:
    """A started GeoDns (health checks always pass unless `check` is given)."""
    server = GeoDns(config or make_config(), token, check=check or always_healthy, **kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@contextmanager
def dns_in_thread(config: DnsConfig) -> Iterator[GeoDns]:
    """A started GeoDns on its own event loop thread, for synchronous (Hypothesis) tests."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="dns-test-loop", daemon=True)
    thread.start()
    server = GeoDns(config, TOKEN, check=always_healthy)
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def udp(
    server: GeoDns, query: dns.message.Message, source: str = US_CLIENT
) -> dns.message.Message:
    return await dns.asyncquery.udp(query, DNS_HOST, port=server.port, source=source, timeout=2)


async def tcp(
    server: GeoDns, query: dns.message.Message, source: str = US_CLIENT
) -> dns.message.Message:
    return await dns.asyncquery.tcp(query, DNS_HOST, port=server.port, source=source, timeout=2)


async def address_of(server: GeoDns, name: str, source: str = US_CLIENT) -> str:
    """The single A record `name` answers with, asked over UDP from `source`."""
    response = await udp(server, dns.message.make_query(name, "A"), source)
    (rrset,) = response.answer
    (rdata,) = rrset
    return str(rdata)


async def eventually(
    probe: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 5.0
) -> float:
    """Poll `probe` until it is true; fail after `timeout_s`. Returns the seconds taken."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if await probe():
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class FakeHealth:
    """An HTTP endpoint answering GET /<name> with each target's current status."""

    def __init__(self, host: str = HEALTH_HOST) -> None:
        self.host = host
        self.status: dict[str, int] = {}
        self.hits: dict[str, int] = {}
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self, names: list[str]) -> None:
        for name in names:
            self.status[name] = 200
            self.hits[name] = 0

        async def handle(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits[name] = self.hits.get(name, 0) + 1
            return web.Response(status=self.status.get(name, 404), text="health\n")

        app = web.Application()
        app.router.add_get("/{name}", handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, 0).start()
        self.port = self._runner.addresses[0][1]

    def urls(self) -> dict[str, str]:
        return {name: f"http://{self.host}:{self.port}/{name}" for name in self.status}

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def a_query(name: str, **kwargs: Any) -> dns.message.Message:
    return dns.message.make_query(name, dns.rdatatype.A, **kwargs)
