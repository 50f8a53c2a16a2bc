"""The edge process: `run()` blocks until SIGTERM or SIGINT; ops endpoints and metrics.

SIGTERM/SIGINT stop gracefully: stop accepting, let requests in flight finish for a few
seconds, exit. The ops listener (loopback only) serves /healthz, /metrics and the purge
API (`millions.edge.admin`) with aiohttp's server: the purge API needs request bodies,
which the proxy core's local-response path does not hand to its handler.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from millions.edge.admin import (
    ADMIN_TOKEN_ENV,
    MAX_PURGE_BODY_BYTES,
    PurgeRequestError,
    apply_purge,
    bearer_matches,
    parse_purge_request,
    require_loopback,
)
from millions.edge.server import (
    DEFAULT_DISK_BYTES,
    DEFAULT_STREAM_THRESHOLD_BYTES,
    HIT,
    MISS,
    REVALIDATED,
    STALE,
    X_CACHE_VALUES,
    EdgeServer,
)
from millions.edge.storage import StorageStats
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
        ratio = GaugeMetricFamily(
            "millions_edge_hit_ratio",
            "Share of cacheable answers served from the cache (HIT and STALE over HIT, STALE, "
            "REVALIDATED and MISS), by requests and by body bytes",
            labels=["by"],
        )
        for basis, counts in (("requests", stats.responses), ("bytes", stats.response_bytes)):
            served = counts[HIT] + counts[STALE]
            total = served + counts[REVALIDATED] + counts[MISS]
            ratio.add_metric([basis], served / total if total else 0.0)
        yield ratio
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
            "millions_edge_sendfile_bytes",
            "Body bytes sent from the disk tier with os.sendfile",
            value=stats.sendfile_bytes,
        )
        yield CounterMetricFamily(
            "millions_edge_streamed_fills",
            "Large origin responses streamed to the client and the disk tier at once",
            value=stats.streamed_fills,
        )
        yield CounterMetricFamily(
            "millions_edge_invalidations",
            "Keys invalidated after unsafe methods",
            value=stats.invalidations,
        )
        yield CounterMetricFamily(
            "millions_edge_bad_requests",
            "Requests refused as not safely cacheable",
            value=stats.bad_requests,
        )
        yield from _storage_metrics(self.edge.store.stats())


def _storage_metrics(storage: StorageStats) -> Iterator[Metric]:
    """Per-tier gauges and counters of the tiered store."""
    families = (
        (
            GaugeMetricFamily,
            "millions_edge_stored_bytes",
            "Bytes held by the cache",
            "stored_bytes",
        ),
        (GaugeMetricFamily, "millions_edge_stored_objects", "Objects held by the cache", "objects"),
        (
            CounterMetricFamily,
            "millions_edge_evictions",
            "Objects evicted to stay within the tier's byte budget",
            "evictions",
        ),
        (CounterMetricFamily, "millions_edge_storage_hits", "Bodies served by the tier", "hits"),
    )
    for family, name, documentation, attribute in families:
        metric = family(name, documentation, labels=["tier"])
        metric.add_metric(["memory"], getattr(storage.memory, attribute))
        metric.add_metric(["disk"], getattr(storage.disk, attribute))
        yield metric
    yield CounterMetricFamily(
        "millions_edge_storage_misses",
        "Lookups that found no stored variant in either tier",
        value=storage.misses,
    )


def ops_app(
    edge: EdgeServer, registry: CollectorRegistry, admin_token: str | None
) -> web.Application:
    """/healthz, /metrics and `POST /purge` (bearer token; 403 when none is configured)."""

    async def healthz(request: web.Request) -> web.Response:
        storage = edge.store.stats()
        return web.json_response(
            {"status": "ok", "origin": edge.origin_url, "stored_objects": storage.disk.objects}
        )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})

    async def purge(request: web.Request) -> web.Response:
        if admin_token is None:
            return web.Response(status=403, text="purge disabled: no admin token configured\n")
        if not bearer_matches(request.headers.get("Authorization"), admin_token):
            return web.Response(
                status=401,
                text="401 Unauthorized: Authorization: Bearer <admin token> required\n",
                headers={"WWW-Authenticate": 'Bearer realm="millions-edge"'},
            )
        try:
            body = await request.content.read(MAX_PURGE_BODY_BYTES + 1)
            if len(body) > MAX_PURGE_BODY_BYTES:
                raise PurgeRequestError("body too large")
            purge_request = parse_purge_request(body)
        except PurgeRequestError as exc:
            return web.Response(status=400, text=f"400 Bad Request: {exc}\n")
        purged = await apply_purge(edge.store, purge_request)
        log.info(
            "purged",
            extra={
                "kind": purge_request.kind.value,
                "target": purge_request.target.decode("ascii"),
                "soft": purge_request.soft,
                "purged": purged,
            },
        )
        return web.json_response({"purged": purged})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/purge", purge)
    return app


class EdgeProcess:
    """An edge plus its ops listener (loopback only) and metrics registry."""

    def __init__(
        self, edge: EdgeServer, ops: tuple[str, int] | None, admin_token: str | None = None
    ) -> None:
        if ops is not None:
            require_loopback(ops[0])
        self.edge = edge
        self.ops_address = ops
        self.admin_token = admin_token or None
        self.registry = CollectorRegistry()
        self.registry.register(EdgeCollector(edge))
        self.ops: web.AppRunner | None = None
        self.ops_port = 0

    async def start(self) -> None:
        await self.edge.start()
        if self.ops_address is not None:
            self.ops = web.AppRunner(
                ops_app(self.edge, self.registry, self.admin_token),
                access_log=None,
                handle_signals=False,
                shutdown_timeout=0.5,
            )
            await self.ops.setup()
            site = web.TCPSite(self.ops, *self.ops_address)
            await site.start()
            self.ops_port = self.ops.addresses[0][1]

    async def stop(self, grace_s: float) -> None:
        if self.ops is not None:
            await self.ops.cleanup()
        await self.edge.stop(grace_s)


def run(
    listen: tuple[str, int],
    origin: str,
    ops: tuple[str, int] | None,
    max_bytes: int,
    name: str,
    log_file: Path | None,
    cache_dir: Path | None = None,
    disk_bytes: int = DEFAULT_DISK_BYTES,
    admin_token: str | None = None,
    stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
) -> None:
    """Run one edge in front of `origin` (http://host:port) until SIGTERM/SIGINT.

    `max_bytes` bounds the memory tier, `disk_bytes` the disk tier kept in `cache_dir`
    across restarts (None: a temporary directory removed at exit). Origin bodies larger
    than `stream_threshold_bytes` stream to the client while they are stored. `admin_token` (else
    the MILLIONS_ADMIN_TOKEN environment variable) enables `POST /purge` on `ops`, which
    must be a loopback address."""
    logs.configure(name, log_file)
    edge = EdgeServer(
        origin,
        listen,
        max_bytes,
        name,
        cache_dir=cache_dir,
        disk_bytes=disk_bytes,
        stream_threshold_bytes=stream_threshold_bytes,
    )
    token = admin_token if admin_token is not None else os.environ.get(ADMIN_TOKEN_ENV)
    process = EdgeProcess(edge, ops, token)
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
