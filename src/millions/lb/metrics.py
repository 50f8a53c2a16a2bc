"""Prometheus metrics of the load balancer, read from plain counters at scrape time.

The proxy hot path only bumps integers (`ProxyStats`, `Backend.requests`); this collector
turns them into metric families when /metrics is read, so metrics cost nothing per request
beyond the increments.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from millions.lb.balancer import Balancer
from millions.proxy.stats import ProxyStats


class LoadBalancerCollector(Collector):
    """All `millions_lb_*` metrics of one load balancer process."""

    def __init__(self, stats: ProxyStats, balancer: Balancer) -> None:
        self.stats = stats
        self.balancer = balancer

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        requests = CounterMetricFamily(
            "millions_lb_requests",
            "Responses sent to clients, by status class",
            labels=["status_class"],
        )
        for status_class in range(1, 6):
            requests.add_metric([f"{status_class}xx"], stats.responses[status_class])
        yield requests
        yield HistogramMetricFamily(
            "millions_lb_request_seconds",
            "Time from the request head to the last response byte",
            buckets=stats.cumulative_buckets(),
            sum_value=stats.latency_sum,
        )
        up = GaugeMetricFamily(
            "millions_lb_backend_up", "1 when the backend takes traffic", labels=["backend"]
        )
        in_flight = GaugeMetricFamily(
            "millions_lb_backend_in_flight", "Requests in progress", labels=["backend"]
        )
        per_backend = CounterMetricFamily(
            "millions_lb_backend_requests", "Requests sent to the backend", labels=["backend"]
        )
        for backend in list(self.balancer.backends.values()):
            labels = [backend.address]
            up.add_metric(labels, 1.0 if backend.eligible else 0.0)
            in_flight.add_metric(labels, backend.in_flight)
            per_backend.add_metric(labels, backend.requests)
        yield up
        yield in_flight
        yield per_backend
        yield CounterMetricFamily(
            "millions_lb_retries", "Requests retried on another server", value=stats.retries
        )
        yield CounterMetricFamily(
            "millions_lb_passive_failures",
            "Connect failures and resets seen in traffic",
            value=stats.passive_failures,
        )
        yield CounterMetricFamily(
            "millions_lb_bad_requests",
            "Requests rejected as malformed",
            value=stats.bad_requests,
        )
        yield CounterMetricFamily(
            "millions_lb_client_aborts",
            "Clients gone before their response was complete",
            value=stats.client_aborts,
        )
        yield GaugeMetricFamily(
            "millions_lb_active_connections",
            "Open client connections",
            value=stats.active_connections,
        )
