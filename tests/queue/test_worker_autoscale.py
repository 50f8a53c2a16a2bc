"""The autoscaler's pure decision: need, bounds, cooldown and the scale-down window."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.queue.config import WorkersConfig
from millions.workers.autoscale import (
    QueueLoad,
    Recommendation,
    ScalingPolicy,
    decide_workers,
    recommend,
    trim_history,
)

POLICY = ScalingPolicy(
    min_workers=1,
    max_workers=10,
    target_drain_s=30.0,
    max_age_s=60.0,
    scale_up_cooldown_s=5.0,
    scale_down_window_s=60.0,
)


def test_the_need_covers_arrivals_and_drains_the_backlog_in_time() -> None:
    # 10/s arriving at 2/s per worker = 5 workers; 120 queued / (2/s * 30 s) = 2 more
    load = QueueLoad(depth=120, arrival_rate=10.0, per_worker_rate=2.0)
    assert recommend(3, load, POLICY)[0] == 7
    assert decide_workers(3, load, POLICY, [], None, now=100.0).desired == 7


def test_the_need_is_rounded_up_and_bounded() -> None:
    assert recommend(1, QueueLoad(depth=0, arrival_rate=2.1, per_worker_rate=2.0), POLICY)[0] == 2
    assert recommend(1, QueueLoad(depth=10_000, per_worker_rate=1.0), POLICY)[0] == 10
    idle, reason = recommend(4, QueueLoad(depth=0, arrival_rate=0.0, per_worker_rate=5.0), POLICY)
    assert idle == 1 and "bounded" in reason


def test_without_a_throughput_estimate_a_backlog_probes_one_up() -> None:
    assert recommend(3, QueueLoad(depth=5), POLICY)[0] == 4
    assert recommend(3, QueueLoad(depth=5, per_worker_rate=0.0), POLICY)[0] == 4
    assert recommend(3, QueueLoad(depth=0), POLICY)[0] == 1


def test_work_waiting_never_leaves_zero_workers() -> None:
    policy = ScalingPolicy(min_workers=0, max_workers=4)
    assert recommend(0, QueueLoad(depth=1, per_worker_rate=1000.0), policy)[0] == 1
    assert recommend(0, QueueLoad(depth=1), policy)[0] == 1
    assert recommend(2, QueueLoad(depth=0, per_worker_rate=1.0), policy)[0] == 0


def test_an_old_message_adds_a_worker_whatever_the_estimate() -> None:
    load = QueueLoad(depth=3, oldest_age_s=90.0, per_worker_rate=50.0)
    need, reason = recommend(2, load, POLICY)
    assert need == 3 and "oldest message 90 s" in reason


def test_scaling_up_waits_for_the_cooldown() -> None:
    load = QueueLoad(depth=600, per_worker_rate=2.0)  # needs 10
    held = decide_workers(2, load, POLICY, [], last_change_at=98.0, now=100.0)
    assert (held.desired, held.recommendation) == (2, 10)
    assert "cooldown" in held.reason
    assert decide_workers(2, load, POLICY, [], last_change_at=95.0, now=100.0).desired == 10


def test_scaling_down_keeps_the_highest_need_of_the_window() -> None:
    quiet = QueueLoad(depth=0, arrival_rate=2.0, per_worker_rate=2.0)  # needs 1
    history = [Recommendation(30.0, 9), Recommendation(50.0, 6), Recommendation(90.0, 2)]
    decision = decide_workers(8, quiet, POLICY, history, last_change_at=None, now=100.0)
    assert (decision.desired, decision.recommendation) == (6, 1)  # 9 is outside the window
    calm = [Recommendation(70.0, 1), Recommendation(90.0, 1)]
    assert decide_workers(8, quiet, POLICY, calm, None, now=100.0).desired == 1


def test_a_burst_inside_the_window_holds_the_workers() -> None:
    quiet = QueueLoad(depth=0, arrival_rate=0.0, per_worker_rate=2.0)
    history = [Recommendation(99.0, 5)]
    decision = decide_workers(5, quiet, POLICY, history, None, now=100.0)
    assert decision.desired == 5 and "scale-down window" in decision.reason


def test_a_count_outside_the_bounds_is_corrected_at_once() -> None:
    load = QueueLoad(depth=0, per_worker_rate=1.0)
    assert decide_workers(0, load, POLICY, [], last_change_at=99.9, now=100.0).desired == 1
    assert decide_workers(15, load, POLICY, [Recommendation(99, 15)], None, 100.0).desired == 10


def test_history_is_trimmed_to_the_window() -> None:
    history = [Recommendation(10.0, 3), Recommendation(50.0, 4), Recommendation(99.0, 5)]
    assert trim_history(history, 100.0, POLICY) == history[1:]


def test_the_policy_comes_from_the_config_and_is_checked() -> None:
    policy = ScalingPolicy.from_config(WorkersConfig(min_workers=2, max_workers=6))
    assert (policy.min_workers, policy.max_workers, policy.target_drain_s) == (2, 6, 30.0)
    with pytest.raises(ValueError, match="min_workers"):
        ScalingPolicy(min_workers=5, max_workers=2)
    with pytest.raises(ValueError, match="negative"):
        decide_workers(-1, QueueLoad(depth=0), POLICY, [], None, 0.0)


@given(
    current=st.integers(0, 20),
    depth=st.integers(0, 1_000_000),
    age=st.none() | st.floats(0, 10_000),
    arrivals=st.none() | st.floats(0, 10_000),
    rate=st.none() | st.floats(0, 1000),
    history=st.lists(st.tuples(st.floats(0, 100), st.integers(0, 20)), max_size=10),
    last_change=st.none() | st.floats(0, 100),
)
def test_decisions_stay_in_bounds_and_move_one_way(
    current: int,
    depth: int,
    age: float | None,
    arrivals: float | None,
    rate: float | None,
    history: list[tuple[float, int]],
    last_change: float | None,
) -> None:
    load = QueueLoad(depth=depth, oldest_age_s=age, arrival_rate=arrivals, per_worker_rate=rate)
    past = [Recommendation(at, workers) for at, workers in history]
    decision = decide_workers(current, load, POLICY, past, last_change, now=100.0)
    assert POLICY.min_workers <= decision.desired <= POLICY.max_workers
    assert POLICY.min_workers <= decision.recommendation <= POLICY.max_workers
    if POLICY.min_workers <= current <= POLICY.max_workers:
        if decision.recommendation >= current:
            assert current <= decision.desired <= decision.recommendation
        else:
            assert decision.recommendation <= decision.desired <= current
    if depth > 0:
        assert decision.desired >= 1


def test_a_pool_is_spread_evenly_over_the_data_centers() -> None:
    from millions.workers.autoscale import spread_workers

    assert spread_workers(5, ["us-east", "eu-west"]) == {"us-east": 3, "eu-west": 2}
    assert spread_workers(4, ["us-east", "eu-west"]) == {"us-east": 2, "eu-west": 2}
    assert spread_workers(1, ["a", "b", "c"]) == {"a": 1, "b": 0, "c": 0}
    assert spread_workers(0, ["a"]) == {"a": 0}
    for total in range(0, 40):
        spread = spread_workers(total, ["a", "b", "c"])
        assert sum(spread.values()) == total
        assert max(spread.values()) - min(spread.values()) <= 1
    with pytest.raises(ValueError, match="no place"):
        spread_workers(3, [])
