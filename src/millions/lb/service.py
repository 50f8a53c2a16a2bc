"""The load balancer: the proxy core, the balancer, health checks, drain and ops endpoints.

`LoadBalancer` wires the pure `Balancer` to the I/O: one `UpstreamPool` per backend, one
health-check task per backend, a drain task per removed backend, the client listener and
the ops listener (/healthz, /metrics, /backends served by the proxy core's local-response
path, no web framework).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from millions.lb.backends_file import BackendsFileError, read_backends
from millions.lb.balancer import Backend, Balancer
from millions.lb.health import check_health
from millions.lb.metrics import LoadBalancerCollector
from millions.proxy.deadlines import Deadlines
from millions.proxy.exchange import Exchange
from millions.proxy.server import ProxyServer
from millions.proxy.settings import ProxySettings
from millions.proxy.stats import ProxyStats
from millions.proxy.upstream import UpstreamPool
from millions.telemetry.metrics import CONTENT_TYPE
from millions.topology.config import LoadBalancerConfig

log = logging.getLogger("millions.lb")

HEALTH_PATH = "/healthz"
JSON = b"application/json"


class BalancingPicker:
    """The proxy's `UpstreamPicker` backed by the `Balancer`."""

    def __init__(self, service: LoadBalancer) -> None:
        self.service = service
        self.balancer = service.balancer
        self.pool_of: dict[Backend, UpstreamPool] = {}
        self.backend_of: dict[UpstreamPool, Backend] = {}

    def pick(self, tried: tuple[UpstreamPool, ...]) -> UpstreamPool | None:
        if tried:
            backend_of = self.backend_of
            backend = self.balancer.choose([backend_of[p] for p in tried if p in backend_of])
        else:
            backend = self.balancer.choose()
        return None if backend is None else self.pool_of[backend]

    def done(self, pool: UpstreamPool) -> None:
        backend = self.backend_of.get(pool)
        if backend is not None:
            backend.in_flight -= 1  # Balancer.finish, inlined: this runs per request
            if backend.draining and backend.in_flight == 0:
                self.service.drained(backend)

    def failed(self, pool: UpstreamPool) -> None:
        backend = self.backend_of.get(pool)
        if backend is not None and self.balancer.passive_failure(backend):
            log.warning("backend down (passive)", extra={"backend": backend.address})


class BalancingHandler:
    """Every client request goes to a backend."""

    def __init__(self, picker: BalancingPicker) -> None:
        self.picker = picker

    def handle(self, exchange: Exchange) -> None:
        exchange.forward(self.picker)


class OpsHandler:
    """/healthz, /metrics and /backends on the ops listener."""

    def __init__(self, service: LoadBalancer) -> None:
        self.service = service

    def handle(self, exchange: Exchange) -> None:
        if exchange.method not in (b"GET", b"HEAD"):
            exchange.respond(405, b"405 Method Not Allowed\n", extra_headers=((b"Allow", b"GET"),))
            return
        path = exchange.path
        balancer = self.service.balancer
        if path == b"/healthz":
            up = balancer.up_count
            total = sum(1 for b in balancer.backends.values() if not b.draining)
            if up:
                body = {"status": "ok", "backends_up": up, "backends": total}
            else:
                body = {"status": "no healthy backend", "backends_up": 0, "backends": total}
            exchange.respond(200 if up else 503, json.dumps(body).encode(), JSON)
        elif path == b"/metrics":
            exchange.respond(200, generate_latest(self.service.registry), CONTENT_TYPE.encode())
        elif path == b"/backends":
            exchange.respond(200, json.dumps(self.service.describe_backends()).encode(), JSON)
        else:
            exchange.respond(404, b"404 Not Found\n")


def proxy_settings(config: LoadBalancerConfig, name: str) -> ProxySettings:
    return ProxySettings(
        max_header_bytes=config.max_header_bytes,
        connect_timeout_s=config.connect_timeout_s,
        response_timeout_s=config.response_timeout_s,
        retries=config.retries,
        via=b"1.1 " + name.encode("ascii", "replace"),
    )


class LoadBalancer:
    """One load balancer: start it, change its backends, stop it."""

    def __init__(
        self,
        config: LoadBalancerConfig,
        listen: tuple[str, int],
        ops: tuple[str, int],
        backends: list[str] | None = None,
        backends_file: Path | None = None,
        name: str = "lb",
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        if not backends and backends_file is None:
            raise ValueError("give backends or a backends file")
        self.config = config
        self.listen = listen
        self.ops_address = ops
        self.static_backends = list(backends or [])
        self.backends_file = backends_file
        self.name = name
        self.registry = registry
        self.balancer = Balancer(config.rise, config.fall)
        self.stats = ProxyStats()
        self.picker = BalancingPicker(self)
        self._health_tasks: dict[Backend, asyncio.Task[None]] = {}
        self._drain_events: dict[Backend, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._collector: LoadBalancerCollector | None = None
        self.proxy: ProxyServer | None = None
        self.ops: ProxyServer | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        settings = proxy_settings(self.config, self.name)
        self.deadlines = Deadlines(loop, settings.timer_resolution_s)
        self.settings = settings
        self.apply(self._configured_backends(initial=True))
        self.proxy = ProxyServer(
            BalancingHandler(self.picker), settings, self.stats, self.deadlines, loop
        )
        self.ops = ProxyServer(OpsHandler(self), ProxySettings(), ProxyStats(), self.deadlines)
        await self.proxy.start(*self.listen)
        await self.ops.start(*self.ops_address)
        self._collector = LoadBalancerCollector(self.stats, self.balancer)
        self.registry.register(self._collector)
        log.info(
            "load balancer listening",
            extra={
                "listen": f"{self.listen[0]}:{self.proxy.port}",
                "ops": f"{self.ops_address[0]}:{self.ops.port}",
                "backends": list(self.balancer.backends),
            },
        )

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight finish within `grace_s`, close all."""
        if self.proxy is not None:
            await self.proxy.shutdown(grace_s)
        if self.ops is not None:
            await self.ops.shutdown(0.5)
        for task in [*self._health_tasks.values(), *self._tasks]:
            task.cancel()
        await asyncio.gather(*self._health_tasks.values(), *self._tasks, return_exceptions=True)
        self._health_tasks.clear()
        for pool in self.picker.pool_of.values():
            pool.close()
        self.deadlines.stop()
        if self._collector is not None:
            self.registry.unregister(self._collector)
            self._collector = None
        log.info("load balancer stopped")

    # -- backends -------------------------------------------------------------------------

    def _configured_backends(self, initial: bool) -> list[str]:
        if self.backends_file is None:
            return self.static_backends
        try:
            return read_backends(self.backends_file)
        except BackendsFileError as exc:
            if initial and not self.static_backends:
                raise
            log.error("backends file not used", extra={"error": str(exc)})
            return self.static_backends if initial else list(self.balancer.backends)

    def reload(self) -> None:
        """Re-read the backends file (SIGHUP)."""
        if self.backends_file is None:
            log.info("reload ignored: no backends file")
            return
        try:
            addresses = read_backends(self.backends_file)
        except BackendsFileError as exc:
            log.error("reload failed, keeping the current backends", extra={"error": str(exc)})
            return
        self.apply(addresses)

    def apply(self, addresses: list[str]) -> None:
        """Make `addresses` the backends: new ones are checked at once, missing ones drain."""
        added, draining = self.balancer.set_backends(addresses)
        for backend in added:
            pool = UpstreamPool(
                backend.address, self.settings, self.deadlines, asyncio.get_running_loop()
            )
            self.picker.pool_of[backend] = pool
            self.picker.backend_of[pool] = backend
            self._health_tasks[backend] = asyncio.create_task(self._check_forever(backend))
        for backend in draining:
            self._spawn(self._drain(backend))
        if added or draining:
            log.info(
                "backends changed",
                extra={
                    "added": [b.address for b in added],
                    "draining": [b.address for b in draining],
                    "backends": addresses,
                },
            )

    def describe_backends(self) -> list[dict[str, object]]:
        return [
            {
                "address": b.address,
                "state": b.state,
                "in_flight": b.in_flight,
                "requests": b.requests,
            }
            for b in self.balancer.backends.values()
        ]

    def _spawn(self, coroutine: object) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _check_forever(self, backend: Backend) -> None:
        config = self.config
        while True:
            passed = await check_health(backend.address, HEALTH_PATH, config.health_timeout_s)
            if passed:
                if self.balancer.check_passed(backend):
                    log.info("backend up", extra={"backend": backend.address})
            elif self.balancer.check_failed(backend):
                log.warning("backend down (health check)", extra={"backend": backend.address})
            await asyncio.sleep(config.health_interval_s)

    def drained(self, backend: Backend) -> None:
        """A draining backend has no request in flight any more."""
        event = self._drain_events.get(backend)
        if event is not None:
            event.set()

    async def _drain(self, backend: Backend) -> None:
        """Wait for the requests in flight on a removed backend, then forget it."""
        event = self._drain_events[backend] = asyncio.Event()
        if backend.in_flight == 0:
            event.set()
        try:
            async with asyncio.timeout(self.config.drain_timeout_s):
                await event.wait()
        except TimeoutError:
            log.warning(
                "drain timed out, closing connections",
                extra={"backend": backend.address, "in_flight": backend.in_flight},
            )
        if self._drain_events.get(backend) is not event:
            return  # listed again and removed again: a newer drain is in charge
        del self._drain_events[backend]
        if not backend.draining:  # listed again meanwhile
            return
        self.balancer.forget(backend)
        task = self._health_tasks.pop(backend, None)
        if task is not None:
            task.cancel()
        pool = self.picker.pool_of.pop(backend, None)
        if pool is not None:
            pool.close()  # busy connections too, when the drain timed out
            self.picker.backend_of.pop(pool, None)
        log.info("backend removed", extra={"backend": backend.address})
