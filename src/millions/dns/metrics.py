"""Prometheus metrics of the geo DNS server, read from plain counters at scrape time.

The query path only bumps `Counter` entries (or a template's hit count, folded into them
when the stats are read); this collector turns them into metric families when /metrics
is read (the load balancer does the same).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Set

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from millions.dns.health import HealthBoard, TargetKind
from millions.dns.responder import ResponderStats
from millions.dns.server import ServerStats


class DnsCollector(Collector):
    """All `millions_dns_*` metrics of one DNS server process."""

    def __init__(
        self,
        responder: Callable[[], ResponderStats],
        server: ServerStats,
        board: HealthBoard,
        drained: Callable[[], Set[str]],
    ) -> None:
        self.responder = responder
        self.server = server
        self.board = board
        self.drained = drained

    def collect(self) -> Iterator[Metric]:
        stats = self.responder()
        queries = CounterMetricFamily(
            "millions_dns_queries",
            "Queries answered, by query type, response code and client region",
            labels=["qtype", "rcode", "region"],
        )
        for (qtype, rcode, region), count in list(stats.queries.items()):
            queries.add_metric([qtype, rcode, region], count)
        yield queries
        answers = CounterMetricFamily(
            "millions_dns_answers",
            "Geo answers, by name (www, cdn) and the data center or edge answered",
            labels=["name", "target"],
        )
        for (name, target), count in list(stats.answers.items()):
            answers.add_metric([name, target], count)
        yield answers
        fail_open = CounterMetricFamily(
            "millions_dns_fail_open_answers",
            "Geo answers given while no healthy target was left",
            labels=["name"],
        )
        for name, count in list(stats.fail_open.items()):
            fail_open.add_metric([name], count)
        yield fail_open
        yield CounterMetricFamily(
            "millions_dns_dropped", "Packets not answered (no header, or a response)", stats.dropped
        )
        yield CounterMetricFamily(
            "millions_dns_truncated", "UDP replies sent truncated (TC)", stats.truncated
        )
        yield CounterMetricFamily(
            "millions_dns_internal_errors",
            "Queries that failed inside the server (answered SERVFAIL)",
            self.server.internal_errors,
        )
        yield CounterMetricFamily(
            "millions_dns_udp_unsent",
            "UDP replies the kernel would not take (send buffer full, client unreachable)",
            self.server.udp_unsent,
        )
        yield GaugeMetricFamily(
            "millions_dns_tcp_connections", "Open TCP connections", self.server.tcp_connections
        )
        yield CounterMetricFamily(
            "millions_dns_tcp_refused",
            "TCP connections closed at once because the limit was reached",
            self.server.tcp_refused,
        )
        up = GaugeMetricFamily(
            "millions_dns_target_up", "1 when the target passes its checks", labels=["kind", "name"]
        )
        checks = CounterMetricFamily(
            "millions_dns_health_checks", "Health checks run", labels=["kind", "name", "result"]
        )
        for kind in TargetKind:
            for name, state in list(self.board.states[kind].items()):
                up.add_metric([kind.value, name], 1.0 if state.up else 0.0)
                checks.add_metric([kind.value, name, "pass"], state.checks - state.failures)
                checks.add_metric([kind.value, name, "fail"], state.failures)
        yield up
        yield checks
        drained = GaugeMetricFamily(
            "millions_dns_dc_drained", "1 when the data center is drained", labels=["dc"]
        )
        drained_now = self.drained()
        for dc in self.board.states[TargetKind.DC]:
            drained.add_metric([dc], 1.0 if dc in drained_now else 0.0)
        yield drained
