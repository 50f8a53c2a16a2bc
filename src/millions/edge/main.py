"""The edge process: `run()` blocks until SIGTERM or SIGINT; ops endpoints and metrics.

SIGTERM/SIGINT stop gracefully: stop accepting, let requests in flight finish for a few
seconds, exit. The ops listener serves /healthz and /metrics through the proxy core's
local-response path, like the load balancer's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Iterator
from pathlib import Path

import uvloop
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from millions.edge.server import X_CACHE_VALUES, EdgeServer
from millions.proxy.exchange import Exchange
from millions.proxy.server import ProxyServer
from millions.proxy.settings import ProxySettings
from millions.proxy.stats import ProxyStats
from millions.telemetry import logs
from millions.telemetry.metrics import CONTENT_TYPE

log = logging.getLogger("millions.edge")

#: Longest wait for requests in flight at shutdown.
STOP_GRACE_S = 5.0


class EdgeCollector(Collector):
    """All `millions_edge_*` metrics of one edge, read from its counters at scrape time."""

    def __init__(self, edge: EdgeServer) -> None:
        self.edge = edge

    def collect(self) -> Iterator[Metric]:
        stats = self.edge.stats
        responses = CounterMetricFamily(
            "millions_edge_responses", "Responses by X-Cache outcome", labels=["cache"]
        )
        response_bytes = CounterMetricFamily(
            "millions_edge_response_bytes", "Body bytes sent by X-Cache outcome", labels=["cache"]
        )
        for outcome in X_CACHE_VALUES:
            label = [outcome.decode().lower()]
            responses.add_metric(label, stats.responses[outcome])
            response_bytes.add_metric(label, stats.response_bytes[outcome])
        yield responses
        yield response_bytes
        yield CounterMetricFamily(
            "millions_edge_origin_fetches",
            "Requests the edge sent to the origin for the cache",
            value=stats.origin_fetches,
        )
        yield CounterMetricFamily(
            "millions_edge_origin_errors",
            "Origin fetches without a response",
            value=stats.origin_errors,
        )
        yield CounterMetricFamily(
            "millions_edge_origin_seconds",
            "Total time spent on origin fetches",
            value=stats.origin_seconds,
        )
        yield CounterMetricFamily(
            "millions_edge_coalesced_waiters",
            "Misses that waited for another's origin fetch",
            value=stats.coalesced_waiters,
        )
        yield CounterMetricFamily(
            "millions_edge_invalidations",
            "Keys invalidated after unsafe methods",
            value=stats.invalidations,
        )
        yield CounterMetricFamily(
            "millions_edge_evictions",
            "Keys evicted to stay within the byte budget",
            value=self.edge.store.evictions,
        )
        yield CounterMetricFamily(
            "millions_edge_bad_requests",
            "Requests refused as not safely cacheable",
            value=stats.bad_requests,
        )
        stored = GaugeMetricFamily(
            "millions_edge_stored_bytes", "Bytes held by the cache", labels=["tier"]
        )
        stored.add_metric(["memory"], self.edge.store.stored_bytes)
        yield stored


class OpsHandler:
    """/healthz and /metrics on the ops listener."""

    def __init__(self, edge: EdgeServer, registry: CollectorRegistry) -> None:
        self.edge = edge
        self.registry = registry

    def handle(self, exchange: Exchange) -> None:
        if exchange.method not in (b"GET", b"HEAD"):
            exchange.respond(405, b"405 Method Not Allowed\n", extra_headers=((b"Allow", b"GET"),))
            return
        path = exchange.path
        if path == b"/healthz":
            body = {
                "status": "ok",
                "origin": self.edge.origin_url,
                "stored_objects": len(self.edge.store),
            }
            exchange.respond(200, json.dumps(body).encode(), b"application/json")
        elif path == b"/metrics":
            exchange.respond(200, generate_latest(self.registry), CONTENT_TYPE.encode())
        else:
            exchange.respond(404, b"404 Not Found\n")


class EdgeProcess:
    """An edge plus its ops listener and metrics registry."""

    def __init__(self, edge: EdgeServer, ops: tuple[str, int] | None) -> None:
        self.edge = edge
        self.ops_address = ops
        self.registry = CollectorRegistry()
        self.registry.register(EdgeCollector(edge))
        self.ops: ProxyServer | None = None

    async def start(self) -> None:
        await self.edge.start()
        if self.ops_address is not None:
            self.ops = ProxyServer(
                OpsHandler(self.edge, self.registry),
                ProxySettings(),
                ProxyStats(),
                self.edge.deadlines,
            )
            await self.ops.start(*self.ops_address)

    async def stop(self, grace_s: float) -> None:
        if self.ops is not None:
            await self.ops.shutdown(0.5)
        await self.edge.stop(grace_s)


def run(
    listen: tuple[str, int],
    origin: str,
    ops: tuple[str, int] | None,
    max_bytes: int,
    name: str,
    log_file: Path | None,
) -> None:
    """Run one edge in front of `origin` (http://host:port) until SIGTERM/SIGINT."""
    logs.configure(name, log_file)
    process = EdgeProcess(EdgeServer(origin, listen, max_bytes, name), ops)
    uvloop.run(_serve(process))


async def _serve(process: EdgeProcess) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await process.start()
    await stop.wait()
    log.info("stopping")
    await process.stop(STOP_GRACE_S)
