"""Prometheus metrics of a worker process, and the loopback listener that serves them.

`/metrics` refreshes the queue gauges (depth, in flight, delayed, dead letters, oldest
message age) from the queue's stats at scrape time, so they are as fresh as the scrape
and cost nothing between scrapes. `/healthz` answers 200 while the worker takes work
and 503 once it is stopping (the supervisor's health check).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from millions.queue.base import QueueStats
from millions.telemetry.metrics import CONTENT_TYPE

log = logging.getLogger("millions.workers")

#: Task durations span milliseconds (a message hop) to minutes (video work).
TASK_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
REFRESH_TIMEOUT_S = 2.0


class WorkerMetrics:
    """The `millions_worker_*` and `millions_queue_*` metrics of one worker process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["task"]
        self.processed = Counter(
            "millions_worker_processed",
            "Messages handled and acknowledged",
            labels,
            registry=self.registry,
        )
        self.failed = Counter(
            "millions_worker_failed",
            "Messages dead-lettered after failing",
            labels,
            registry=self.registry,
        )
        self.retried = Counter(
            "millions_worker_retried",
            "Failed messages scheduled for another attempt",
            labels,
            registry=self.registry,
        )
        self.released = Counter(
            "millions_worker_released",
            "Messages given back unfinished at shutdown",
            labels,
            registry=self.registry,
        )
        self.lost = Counter(
            "millions_worker_lost_leases",
            "Answers that came after the lease expired (the message is redelivered)",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "millions_worker_task_seconds",
            "Handler run time, any outcome",
            labels,
            buckets=TASK_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "millions_worker_in_flight", "Handlers running now", registry=self.registry
        )
        self.concurrency = Gauge(
            "millions_worker_concurrency",
            "Handlers this process may run at once",
            registry=self.registry,
        )
        queue = ["queue"]
        self.queue_ready = Gauge(
            "millions_queue_depth", "Messages ready for delivery", queue, registry=self.registry
        )
        self.queue_in_flight = Gauge(
            "millions_queue_in_flight",
            "Messages leased to consumers",
            queue,
            registry=self.registry,
        )
        self.queue_delayed = Gauge(
            "millions_queue_delayed",
            "Messages waiting for their delivery time",
            queue,
            registry=self.registry,
        )
        self.queue_dead = Gauge(
            "millions_queue_dead_letters",
            "Messages in the dead-letter queue",
            queue,
            registry=self.registry,
        )
        self.queue_oldest_age = Gauge(
            "millions_queue_oldest_message_age_seconds",
            "Age of the oldest message waiting or in flight",
            queue,
            registry=self.registry,
        )

    def observe_stats(self, stats: QueueStats) -> None:
        """Set the queue gauges; what the engine cannot observe (None) is not exported."""
        name = stats.queue
        self.queue_ready.labels(name).set(stats.ready)
        self.queue_dead.labels(name).set(stats.dead)
        if stats.in_flight is not None:
            self.queue_in_flight.labels(name).set(stats.in_flight)
        if stats.delayed is not None:
            self.queue_delayed.labels(name).set(stats.delayed)
        if stats.oldest_age_s is not None:
            self.queue_oldest_age.labels(name).set(stats.oldest_age_s)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def check_loopback(host: str) -> str:
    """Admin listeners stay on loopback addresses (secure by default)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"metrics address must be a loopback IP address, got {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"metrics address must be on loopback (127.0.0.0/8 or ::1), got {host}")
    return host


class MetricsServer:
    """`/metrics` and `/healthz` on a loopback address."""

    def __init__(
        self,
        metrics: WorkerMetrics,
        refresh: Callable[[], Awaitable[None]],
        health: Callable[[], dict[str, object]],
    ) -> None:
        self.metrics = metrics
        self.refresh = refresh
        self.health = health
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> None:
        check_loopback(host)
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self.refresh(), REFRESH_TIMEOUT_S)
        except Exception as exc:  # stale queue gauges beat a failed scrape
            log.warning("queue stats unavailable for metrics", extra={"error": str(exc)})
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    async def _healthz(self, request: web.Request) -> web.Response:
        state = self.health()
        status = 200 if state.get("status") == "ok" else 503
        return web.Response(
            body=json.dumps(state).encode(), status=status, content_type="application/json"
        )
