"""How many worker processes a queue needs. Pure: no I/O, no clock; the caller passes `now`.

The need ("recommendation") is what keeps up with arrivals and clears the backlog
within `target_drain_s`:

    workers = arrival_rate / per_worker_rate + depth / (per_worker_rate * target_drain_s)

rounded up. Without a throughput estimate (nothing measured yet) a backlog asks for
one worker more than now, so the pool probes upwards until messages flow. A queue
whose oldest message is older than `max_age_s` also asks for one more: whatever the
estimate says, the workers are not keeping up.

Moving toward the need is damped, as Kubernetes' HPA does it:

* up at once to the need, but not again within `scale_up_cooldown_s` of the last
  change (the new workers need time to show up in the throughput);
* down only to the highest need recommended during the last `scale_down_window_s`
  (the caller keeps those recommendations as `history`), so a brief lull does not
  stop workers that the next burst needs.

`min_workers`/`max_workers` always win. The per-worker rate is best measured while the
workers are busy (a backlog exists): acknowledged messages per second divided by the
worker count; an idle pool's rate says nothing about its capacity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from millions.queue.config import WorkersConfig


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    min_workers: int
    max_workers: int
    target_drain_s: float = 30.0
    max_age_s: float = 60.0
    scale_up_cooldown_s: float = 5.0
    scale_down_window_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError(
                f"need 0 <= min_workers <= max_workers, got {self.min_workers}, {self.max_workers}"
            )
        if self.target_drain_s <= 0 or self.max_age_s <= 0:
            raise ValueError("target_drain_s and max_age_s must be positive")

    @classmethod
    def from_config(cls, config: WorkersConfig) -> ScalingPolicy:
        return cls(
            min_workers=config.min_workers,
            max_workers=config.max_workers,
            target_drain_s=config.target_drain_s,
            max_age_s=config.max_age_s,
            scale_up_cooldown_s=config.scale_up_cooldown_s,
            scale_down_window_s=config.scale_down_window_s,
        )


@dataclass(frozen=True, slots=True)
class QueueLoad:
    """What the queue looks like now. Unknown values are None."""

    depth: int
    oldest_age_s: float | None = None
    arrival_rate: float | None = None
    per_worker_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A past recommendation, kept by the caller for the scale-down window."""

    at: float
    workers: int


@dataclass(frozen=True, slots=True)
class ScalingDecision:
    """`desired` workers now; `recommendation` goes into the history; `reason` into logs."""

    desired: int
    recommendation: int
    reason: str


def recommend(current: int, load: QueueLoad, policy: ScalingPolicy) -> tuple[int, str]:
    """The undamped need, within the policy's bounds, and why."""
    rate = load.per_worker_rate
    if rate is not None and rate > 0:
        arrivals = max(load.arrival_rate or 0.0, 0.0)
        exact = arrivals / rate + max(load.depth, 0) / (rate * policy.target_drain_s)
        # beyond the ceiling (or inf for a tiny rate) is as good as the ceiling
        need = math.ceil(round(exact, 9)) if exact <= policy.max_workers else policy.max_workers
        reason = f"{arrivals:.2f}/s arriving, {load.depth} queued, {rate:.2f}/s per worker"
    elif load.depth > 0:
        need = current + 1
        reason = f"{load.depth} queued and no throughput estimate: probing upwards"
    else:
        need = 0
        reason = "queue empty"
    if load.depth > 0 and need < 1:
        need = 1
    if load.oldest_age_s is not None and load.oldest_age_s > policy.max_age_s:
        if need <= current:
            need = current + 1
        reason += f"; oldest message {load.oldest_age_s:.0f} s > {policy.max_age_s:.0f} s"
    bounded = min(max(need, policy.min_workers), policy.max_workers)
    if bounded != need:
        reason += f"; bounded to [{policy.min_workers}, {policy.max_workers}]"
    return bounded, reason


def decide_workers(
    current: int,
    load: QueueLoad,
    policy: ScalingPolicy,
    history: Sequence[Recommendation],
    last_change_at: float | None,
    now: float,
) -> ScalingDecision:
    """The worker count to run now. Append `Recommendation(now, decision.recommendation)`
    to `history` afterwards, and set `last_change_at = now` when `desired != current`."""
    if current < 0:
        raise ValueError(f"current worker count cannot be negative, got {current}")
    need, reason = recommend(current, load, policy)
    if current < policy.min_workers or current > policy.max_workers:
        target = min(max(current, policy.min_workers), policy.max_workers)
        return ScalingDecision(target, need, f"{reason}; {current} is outside the bounds")
    if need > current:
        cooling = last_change_at is not None and now - last_change_at < policy.scale_up_cooldown_s
        if cooling:
            return ScalingDecision(current, need, f"{reason}; up-scaling cooldown")
        return ScalingDecision(need, need, reason)
    if need < current:
        window_start = now - policy.scale_down_window_s
        recent = [r.workers for r in history if r.at >= window_start]
        floor = max([need, *recent])
        target = min(floor, current)
        if target < current:
            return ScalingDecision(target, need, reason)
        return ScalingDecision(current, need, f"{reason}; held by the scale-down window")
    return ScalingDecision(current, need, reason)


def trim_history(
    history: Sequence[Recommendation], now: float, policy: ScalingPolicy
) -> list[Recommendation]:
    """The recommendations still inside the scale-down window (keeps the history bounded)."""
    window_start = now - policy.scale_down_window_s
    return [r for r in history if r.at >= window_start]


def spread_workers(total: int, places: Sequence[str]) -> dict[str, int]:
    """`total` workers over `places` (data centers sharing one queue) as evenly as possible,
    the first places taking the remainder."""
    if not places:
        raise ValueError("no place to run workers")
    share, extra = divmod(max(total, 0), len(places))
    return {place: share + (1 if i < extra else 0) for i, place in enumerate(places)}
