"""Prometheus metrics of a data center's replicator, read from its latest pass at scrape
time (the DNS server and load balancer collect the same way)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from millions.shards.replication.replicator import Replicator


class ReplicationCollector(Collector):
    """All `millions_replication_*` metrics of one replicator process."""

    def __init__(self, replicator: Replicator) -> None:
        self.replicator = replicator

    def collect(self) -> Iterator[Metric]:
        labels = ["shard", "dc"]
        changes = GaugeMetricFamily(
            "millions_replication_lag_changes",
            "Change-log entries the primary has that this DC's replica has not applied",
            labels=labels,
        )
        seconds = GaugeMetricFamily(
            "millions_replication_lag_seconds",
            "Age of the oldest change this DC's replica has not applied (0: caught up)",
            labels=labels,
        )
        applied = GaugeMetricFamily(
            "millions_replication_applied_seq",
            "The primary's change-log sequence this DC's replica has applied up to",
            labels=labels,
        )
        failing = GaugeMetricFamily(
            "millions_replication_failing",
            "1 when the last replication pass of the shard failed (numbers are then the "
            "last known)",
            labels=labels,
        )
        for lag in sorted(self.replicator.lags.values(), key=lambda lag: lag.shard):
            values = [lag.shard, lag.dc]
            changes.add_metric(values, lag.changes_behind)
            seconds.add_metric(values, lag.seconds_behind)
            applied.add_metric(values, max(lag.applied or 0, 0))
            failing.add_metric(values, 1.0 if lag.error else 0.0)
        yield changes
        yield seconds
        yield applied
        yield failing
        placement = self.replicator.cluster.placement
        lost = GaugeMetricFamily(
            "millions_replication_lost_writes",
            "Writes counted lost by promotions (RPO), per shard and failed DC",
            labels=["shard", "failed_dc"],
        )
        unknown = GaugeMetricFamily(
            "millions_replication_unknown_losses",
            "Promotions whose lost writes could not be counted (old primary unreadable)",
            labels=["shard", "failed_dc"],
        )
        totals: dict[tuple[str, str], int] = {}
        unknowns: dict[tuple[str, str], int] = {}
        for loss in () if placement is None else placement.losses:
            key = (loss.shard, loss.failed_dc)
            if loss.count is None:
                unknowns[key] = unknowns.get(key, 0) + 1
            else:
                totals[key] = totals.get(key, 0) + loss.count
        for key, count in sorted(totals.items()):
            lost.add_metric(list(key), count)
        for key, count in sorted(unknowns.items()):
            unknown.add_metric(list(key), count)
        yield lost
        yield unknown
