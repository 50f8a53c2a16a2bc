"""Backoff with equal jitter and the retry-or-dead-letter decision (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.queue.retry import FailurePlan, backoff_delay, plan_failure


def test_delay_doubles_per_attempt_until_the_cap() -> None:
    ceilings = [backoff_delay(n, 1.0, 30.0, jitter=0.999999) for n in range(1, 8)]
    assert [round(c, 3) for c in ceilings] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_jitter_spans_the_upper_half_of_the_ceiling() -> None:
    assert backoff_delay(3, 1.0, 30.0, jitter=0.0) == 2.0
    assert backoff_delay(3, 1.0, 30.0, jitter=0.5) == 3.0
    assert backoff_delay(3, 1.0, 30.0, jitter=0.999) == pytest.approx(3.998)


def test_huge_attempt_numbers_stay_at_the_cap() -> None:
    assert backoff_delay(10_000, 0.5, 300.0, jitter=0.0) == 150.0


@given(
    attempt=st.integers(1, 2000),
    base=st.floats(0.001, 100.0),
    cap=st.floats(0.001, 10_000.0),
    jitter=st.floats(0.0, 1.0, exclude_max=True),
)
def test_delay_is_within_half_and_all_of_the_capped_ceiling(
    attempt: int, base: float, cap: float, jitter: float
) -> None:
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 64))
    delay = backoff_delay(attempt, base, cap, jitter)
    assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.5), (-1, 0.5), (1, 1.0), (1, -0.1)])
def test_bad_inputs_are_refused(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, 1.0, 10.0, jitter)


def test_failures_retry_until_the_last_attempt() -> None:
    assert plan_failure(1, 3, True, 1.0, 10.0, 0.0) == FailurePlan(False, 0.5)
    assert plan_failure(2, 3, True, 1.0, 10.0, 0.0) == FailurePlan(False, 1.0)
    assert plan_failure(3, 3, True, 1.0, 10.0, 0.0) == FailurePlan(True)
    assert plan_failure(7, 3, True, 1.0, 10.0, 0.0) == FailurePlan(True)


def test_a_permanent_failure_is_dead_lettered_on_any_attempt() -> None:
    assert plan_failure(1, 10, False, 1.0, 10.0, 0.3).dead_letter
