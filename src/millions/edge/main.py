"""The edge process: `run()` blocks until SIGTERM or SIGINT; ops endpoints and metrics.

SIGTERM/SIGINT stop gracefully: stop accepting, let requests in flight finish for a few
seconds, exit. The ops listener (loopback only) serves /healthz, /metrics and the purge
API (`millions.edge.admin`) through `millions.edge.ops`, a minimal server that reads request
bodies (which the proxy core's local-response path does not hand to its handler).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import uvloop
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
from millions.edge.ops import OpsRequest, OpsResponse, OpsRoutes, OpsServer, text
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

JSON = b"application/json; charset=utf-8"

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


def ops_routes(edge: EdgeServer, registry: CollectorRegistry, admin_token: str | None) -> OpsRoutes:
    """/healthz, /metrics and `POST /purge` (bearer token; 403 when none is configured)."""

    async def healthz(request: OpsRequest) -> OpsResponse:
        storage = edge.store.stats()
        document = {
            "status": "ok",
            "origin": edge.origin_url,
            "stored_objects": storage.disk.objects,
        }
        return OpsResponse(200, json.dumps(document).encode(), JSON)

    async def metrics(request: OpsRequest) -> OpsResponse:
        return OpsResponse(200, generate_latest(registry), CONTENT_TYPE.encode())

    async def purge(request: OpsRequest) -> OpsResponse:
        if admin_token is None:
            return OpsResponse(403, b"purge disabled: no admin token configured\n")
        authorization = request.headers.get(b"authorization")
        if not bearer_matches(
            None if authorization is None else authorization.decode("latin-1"), admin_token
        ):
            return text(
                401,
                "Unauthorized: Authorization: Bearer <admin token> required",
                ((b"WWW-Authenticate", b'Bearer realm="millions-edge"'),),
            )
        try:
            purge_request = parse_purge_request(request.body)
        except PurgeRequestError as exc:
            return text(400, f"Bad Request: {exc}")
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
        return OpsResponse(200, json.dumps({"purged": purged}).encode(), JSON)

    return OpsRoutes(
        {
            (b"GET", b"/healthz"): healthz,
            (b"GET", b"/metrics"): metrics,
            (b"POST", b"/purge"): purge,
        },
        max_body_bytes=MAX_PURGE_BODY_BYTES,
    )


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
        self.ops: OpsServer | None = None
        self.ops_port = 0

    async def start(self) -> None:
        await self.edge.start()
        if self.ops_address is not None:
            self.ops = OpsServer(ops_routes(self.edge, self.registry, self.admin_token))
            await self.ops.start(*self.ops_address)
            self.ops_port = self.ops.port

    async def stop(self, grace_s: float) -> None:
        if self.ops is not None:
            await self.ops.close()
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
