"""Counting what happened: per-phase request tallies, the live snapshot and the final report.

Pure bookkeeping with no I/O: the runner measures each request and hands the result here,
so the accounting rules can be tested without a network.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from millions.load.histogram import LatencyHistogram
from millions.load.outcomes import LOGGED_OUT
from millions.load.rate import RecentRate

ERROR_EXAMPLES_PER_KIND = 3
NO_SERVED_BY = "(none)"


@dataclass
class ActionStats:
    """One action's share of the run."""

    requests: int
    failed: int
    p50_ms: float
    p99_ms: float


@dataclass
class LoadReport:
    """The result of a load run. Latency percentiles cover every main-phase request."""

    users: int
    users_ready: int
    requests: int
    failed_requests: int
    logged_out_users: int
    duration_s: float
    throughput_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    status_counts: dict[int, int]
    errors: dict[str, int]
    error_examples: dict[str, list[str]]
    served_by: dict[str, int]
    actions: dict[str, ActionStats]
    setup_requests: int
    setup_failures: int
    setup_errors: dict[str, int]
    setup_error_examples: dict[str, list[str]]
    setup_duration_s: float
    target_rate: float | None
    dropped_requests: int
    cancelled_requests: int
    stopped_early: bool

    @property
    def ok_requests(self) -> int:
        return self.requests - self.failed_requests

    def to_dict(self) -> dict[str, Any]:
        """JSON-serializable form (status codes become string keys)."""
        data = dataclasses.asdict(self)
        data["status_counts"] = {str(k): v for k, v in sorted(self.status_counts.items())}
        data["ok_requests"] = self.ok_requests
        return data


@dataclass(frozen=True)
class LoadSnapshot:
    """Live counters for a progress display."""

    phase: str  # "idle", "setup", "running", "draining" or "done"
    elapsed_s: float
    duration_s: float
    users: int
    users_ready: int
    users_logged_in: int
    requests: int
    failed_requests: int
    logged_out_users: int
    rps: float
    p50_ms: float
    p99_ms: float
    setup_requests: int
    setup_failures: int
    dropped_requests: int


@dataclass
class PhaseStats:
    """Tallies for one phase (setup or main): counts, latency, statuses, errors, servers."""

    requests: int = 0
    failed: int = 0
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    status_counts: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, list[str]] = field(default_factory=dict)
    served_by: Counter[str] = field(default_factory=Counter)
    action_requests: Counter[str] = field(default_factory=Counter)
    action_failed: Counter[str] = field(default_factory=Counter)
    action_latency: dict[str, LatencyHistogram] = field(default_factory=dict)

    def record(
        self,
        action: str,
        latency_s: float,
        status: int | None,
        served_by: str | None,
        failure: str | None,
        message: str,
    ) -> None:
        self.requests += 1
        self.action_requests[action] += 1
        self.latency.record(latency_s)
        histogram = self.action_latency.get(action)
        if histogram is None:
            histogram = self.action_latency[action] = LatencyHistogram()
        histogram.record(latency_s)
        if status is not None:
            self.status_counts[status] += 1
            self.served_by[served_by or NO_SERVED_BY] += 1
        if failure is not None:
            self.failed += 1
            self.action_failed[action] += 1
            self.errors[failure] += 1
            examples = self.error_examples.setdefault(failure, [])
            if len(examples) < ERROR_EXAMPLES_PER_KIND and message not in examples:
                examples.append(message)

    def action_summary(self) -> dict[str, ActionStats]:
        return {
            action: ActionStats(
                requests=count,
                failed=self.action_failed[action],
                p50_ms=self.action_latency[action].percentile(50) * 1000,
                p99_ms=self.action_latency[action].percentile(99) * 1000,
            )
            for action, count in sorted(self.action_requests.items())
        }


class LoadStats:
    """Everything a run counts; `record` is called once per finished request."""

    def __init__(self, users: int, duration_s: float, target_rate: float | None) -> None:
        self.users = users
        self.duration_s = duration_s
        self.target_rate = target_rate
        self.setup = PhaseStats()
        self.main = PhaseStats()
        self.users_ready = 0
        self.users_logged_in = 0
        self.logged_out_user_ids: set[int] = set()
        self.dropped_requests = 0
        self.cancelled_requests = 0
        self.recent = RecentRate()
        self.phase = "idle"
        self.setup_duration_s = 0.0
        self.main_started_at: float | None = None
        self.main_duration_s = 0.0
        self.stopped_early = False

    def record(
        self,
        *,
        setup: bool,
        user_id: int,
        action: str,
        latency_s: float,
        status: int | None,
        served_by: str | None,
        failure: str | None,
        message: str,
        now: float,
    ) -> None:
        """Count one finished request; a logged-out failure marks its user once."""
        phase = self.setup if setup else self.main
        phase.record(action, latency_s, status, served_by, failure, message)
        if failure == LOGGED_OUT:
            self.logged_out_user_ids.add(user_id)
        if not setup:
            self.recent.add(now)

    def snapshot(self, now: float) -> LoadSnapshot:
        if self.main_started_at is None:
            elapsed = 0.0
        elif self.phase in ("running", "draining"):
            elapsed = now - self.main_started_at
        else:
            elapsed = self.main_duration_s
        return LoadSnapshot(
            phase=self.phase,
            elapsed_s=elapsed,
            duration_s=self.duration_s,
            users=self.users,
            users_ready=self.users_ready,
            users_logged_in=self.users_logged_in,
            requests=self.main.requests,
            failed_requests=self.main.failed,
            logged_out_users=len(self.logged_out_user_ids),
            rps=self.recent.rate(now),
            p50_ms=self.main.latency.percentile(50) * 1000,
            p99_ms=self.main.latency.percentile(99) * 1000,
            setup_requests=self.setup.requests,
            setup_failures=self.setup.failed,
            dropped_requests=self.dropped_requests,
        )

    def report(self) -> LoadReport:
        main = self.main
        duration = self.main_duration_s
        return LoadReport(
            users=self.users,
            users_ready=self.users_ready,
            requests=main.requests,
            failed_requests=main.failed,
            logged_out_users=len(self.logged_out_user_ids),
            duration_s=duration,
            throughput_rps=main.requests / duration if duration > 0 else 0.0,
            p50_ms=main.latency.percentile(50) * 1000,
            p90_ms=main.latency.percentile(90) * 1000,
            p99_ms=main.latency.percentile(99) * 1000,
            max_ms=main.latency.max_s * 1000,
            mean_ms=main.latency.mean_s * 1000,
            status_counts=dict(main.status_counts),
            errors=dict(main.errors),
            error_examples={k: list(v) for k, v in main.error_examples.items()},
            served_by=dict(main.served_by),
            actions=main.action_summary(),
            setup_requests=self.setup.requests,
            setup_failures=self.setup.failed,
            setup_errors=dict(self.setup.errors),
            setup_error_examples={k: list(v) for k, v in self.setup.error_examples.items()},
            setup_duration_s=self.setup_duration_s,
            target_rate=self.target_rate,
            dropped_requests=self.dropped_requests,
            cancelled_requests=self.cancelled_requests,
            stopped_early=self.stopped_early,
        )
