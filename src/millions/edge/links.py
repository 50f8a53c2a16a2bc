"""How an origin app uses the CDN: links through its region's edge, and purges.

`CdnLinks.url(path)` gives the edge URL of a path while the edge answers its health
check, and the origin-relative path while it does not (the seed's CDN-failure case:
pages keep working, served by the origin). A background probe keeps that view fresh;
`EdgeHealthView` is its pure core. `purge_keys` tells every edge to drop objects by
surrogate key (a deleted photo must not outlive its record in any edge's cache).

The web runner (`millions web --dc DC`) exports the environment variables below for the
servers of a DC with an edge; any ASGI app can call `CdnLinks.from_env()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from millions.edge.admin import ADMIN_TOKEN_ENV

log = logging.getLogger("millions.cdn")

CDN_URL_ENV = "MILLIONS_CDN_URL"
CDN_HEALTH_URL_ENV = "MILLIONS_CDN_HEALTH_URL"
CDN_PURGE_URLS_ENV = "MILLIONS_CDN_PURGE_URLS"

PROBE_INTERVAL_S = 1.0
PROBE_TIMEOUT_S = 0.5
PURGE_TIMEOUT_S = 2.0


@dataclass
class EdgeHealthView:
    """Whether pages link through the edge: down at the first failed probe (a broken
    link costs users more than a few origin hits), up again after `rise` passes in a row.
    Starts down: the edge may start after the web servers."""

    rise: int = 2
    up: bool = False
    passes: int = field(default=0, repr=False)

    def observe(self, healthy: bool) -> bool:
        """Record one probe; returns whether the view changed."""
        before = self.up
        if not healthy:
            self.passes = 0
            self.up = False
        else:
            self.passes += 1
            if self.passes >= self.rise:
                self.up = True
        return self.up != before


@dataclass(frozen=True)
class PurgeOutcome:
    """What one edge did with one purge request."""

    edge: str
    ok: bool
    purged: int = 0
    error: str = ""


class CdnLinks:
    """Edge-or-origin links for one web server, plus purges on every edge."""

    def __init__(
        self,
        base_url: str | None,
        health_url: str | None = None,
        purge_urls: tuple[str, ...] = (),
        admin_token: str | None = None,
        probe_interval_s: float = PROBE_INTERVAL_S,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.health_url = health_url
        self.purge_urls = purge_urls
        self.admin_token = admin_token
        self.probe_interval_s = probe_interval_s
        # Without a health URL there is nothing to probe: trust the configured edge.
        self.health = EdgeHealthView(up=base_url is not None and health_url is None)
        self._http: aiohttp.ClientSession | None = None
        self._probe: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CdnLinks:
        env = os.environ if env is None else env
        purge = tuple(url for url in env.get(CDN_PURGE_URLS_ENV, "").split(",") if url)
        return cls(
            env.get(CDN_URL_ENV) or None,
            env.get(CDN_HEALTH_URL_ENV) or None,
            purge,
            env.get(ADMIN_TOKEN_ENV) or None,
        )

    @property
    def edge_up(self) -> bool:
        return self.base_url is not None and self.health.up

    def url(self, path: str) -> str:
        """`path` (origin-relative, starting with /) through the edge while it is up."""
        return f"{self.base_url}{path}" if self.edge_up else path

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        if self.base_url is not None and self.health_url is not None:
            await self.probe_once()
            self._probe = asyncio.create_task(self._probe_forever())

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probe
        if self._http is not None:
            await self._http.close()

    async def probe_once(self) -> bool:
        assert self._http is not None and self.health_url is not None
        try:
            async with self._http.get(
                self.health_url, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)
            ) as response:
                healthy = response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            healthy = False
        if self.health.observe(healthy):
            state = "up: pages link through it" if self.health.up else "down: pages use origin"
            log.warning(f"CDN edge {state}", extra={"edge": self.base_url})
        return healthy

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_interval_s)
            await self.probe_once()

    async def purge_keys(self, keys: list[str]) -> list[PurgeOutcome]:
        """Hard-purge objects tagged with any of `keys` on every edge; never raises.

        A failed purge is logged and returned: the caller's change stands either way."""
        if not self.purge_urls or not keys:
            return []
        assert self._http is not None, "call start() first"
        requests = [(url, key) for url in self.purge_urls for key in keys]
        outcomes = await asyncio.gather(*(self._purge(url, key) for url, key in requests))
        for outcome in outcomes:
            if not outcome.ok:
                log.error("CDN purge failed", extra={"edge": outcome.edge, "error": outcome.error})
        return list(outcomes)

    async def _purge(self, url: str, key: str) -> PurgeOutcome:
        assert self._http is not None
        return await send_purge(self._http, url, self.admin_token, {"key": key})


async def send_purge(
    http: aiohttp.ClientSession,
    purge_url: str,
    token: str | None,
    request: dict[str, Any],
    timeout_s: float = PURGE_TIMEOUT_S,
) -> PurgeOutcome:
    """POST one purge request (the edge admin API's JSON body) to one edge; never raises."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with http.post(
            purge_url,
            json=request,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            body = await response.text()
            if response.status != 200:
                return PurgeOutcome(
                    purge_url, False, error=f"HTTP {response.status}: {body.strip()}"
                )
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return PurgeOutcome(purge_url, False, error=f"unreachable: {exc or type(exc).__name__}")
    try:
        purged = json.loads(body)["purged"]
    except (ValueError, KeyError, TypeError):
        purged = None
    if not isinstance(purged, int):
        return PurgeOutcome(
            purge_url, False, error="the edge's answer was not the purge API's JSON"
        )
    return PurgeOutcome(purge_url, True, purged=purged)
