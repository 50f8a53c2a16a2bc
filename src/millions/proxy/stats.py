"""Proxy counters kept as plain ints on the hot path and read at scrape time.

prometheus_client metrics take a lock and a dict lookup per update; the proxy instead bumps
integers and a bisected histogram bucket, and a collector turns them into Prometheus
metrics only when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left

from millions.telemetry.metrics import LATENCY_BUCKETS


class ProxyStats:
    """Counters for one proxy listener (all its connections)."""

    __slots__ = (
        "active_connections",
        "bad_requests",
        "client_aborts",
        "latency_bounds",
        "latency_counts",
        "latency_sum",
        "passive_failures",
        "responses",
        "retries",
    )

    def __init__(self, bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.latency_bounds = bounds
        self.latency_counts = [0] * (len(bounds) + 1)  # last one is +Inf
        self.latency_sum = 0.0
        self.responses = [0] * 6  # index = status // 100
        self.retries = 0
        self.passive_failures = 0
        self.bad_requests = 0
        self.client_aborts = 0
        self.active_connections = 0

    def observe(self, status: int, seconds: float) -> None:
        """One finished response: its status class and time from request head to last byte."""
        self.responses[status // 100] += 1
        self.latency_counts[bisect_left(self.latency_bounds, seconds)] += 1
        self.latency_sum += seconds

    def cumulative_buckets(self) -> list[tuple[str, int]]:
        """Prometheus `le` buckets (cumulative), ending with +Inf."""
        buckets = []
        total = 0
        for bound, count in zip(self.latency_bounds, self.latency_counts, strict=False):
            total += count
            buckets.append((repr(bound), total))
        total += self.latency_counts[-1]
        buckets.append(("+Inf", total))
        return buckets
