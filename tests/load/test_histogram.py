"""The latency histogram's percentiles match sorted-list percentiles within its error."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from millions.load.histogram import LatencyHistogram, nearest_rank
from millions.load.rate import RecentRate


def sorted_percentile(samples: list[float], q: float) -> float:
    """Reference nearest-rank percentile: the smallest sample with >= q% at or below it."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


latencies = st.floats(min_value=0.0, max_value=600.0, allow_nan=False, allow_infinity=False)


@given(
    samples=st.lists(latencies, min_size=1, max_size=300),
    q=st.floats(min_value=0.0, max_value=100.0, allow_nan=False),
)
def test_percentile_within_relative_error_of_sorted_list(samples: list[float], q: float) -> None:
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    exact = sorted_percentile(samples, q)
    approx = histogram.percentile(q)
    # Relative error bound, plus the width of the lowest bucket for sub-microsecond values.
    tolerance = exact * histogram.relative_error * 1.0001 + histogram.lowest_s * 1.02
    assert abs(approx - exact) <= tolerance, (exact, approx)
    assert min(samples) <= approx <= max(samples)


@given(samples=st.lists(latencies, min_size=1, max_size=100))
def test_extremes_and_count_are_exact(samples: list[float]) -> None:
    histogram = LatencyHistogram()
    for sample in samples:
        histogram.record(sample)
    assert histogram.count == len(samples)
    assert histogram.percentile(100) == max(samples)
    assert histogram.percentile(0) == min(samples)
    assert histogram.max_s == max(samples)
    assert histogram.mean_s == pytest.approx(sum(samples) / len(samples))


def test_known_percentiles_of_one_to_hundred_ms() -> None:
    histogram = LatencyHistogram()
    for ms in range(1, 101):
        histogram.record(ms / 1000)
    assert histogram.percentile(50) == pytest.approx(0.050, rel=0.01)
    assert histogram.percentile(90) == pytest.approx(0.090, rel=0.01)
    assert histogram.percentile(99) == pytest.approx(0.099, rel=0.01)
    assert histogram.percentile(100) == 0.1


def test_empty_histogram_reports_zero() -> None:
    assert LatencyHistogram().percentile(99) == 0.0
    assert LatencyHistogram().mean_s == 0.0


def test_values_beyond_highest_land_in_top_bucket_with_exact_max() -> None:
    histogram = LatencyHistogram(highest_s=10.0)
    histogram.record(5000.0)
    histogram.record(1.0)
    assert histogram.percentile(100) == 5000.0
    assert histogram.count == 2


def test_memory_is_bounded_by_bucket_count() -> None:
    histogram = LatencyHistogram()
    buckets_before = len(histogram._buckets)
    for i in range(10_000):
        histogram.record(i * 1e-4)
    assert len(histogram._buckets) == buckets_before < 2000


def test_nearest_rank() -> None:
    assert nearest_rank(50, 100) == 50
    assert nearest_rank(99, 100) == 99
    assert nearest_rank(100, 100) == 100
    assert nearest_rank(0, 100) == 1
    assert nearest_rank(50, 1) == 1
    with pytest.raises(ValueError, match="percentile"):
        nearest_rank(101, 10)
    with pytest.raises(ValueError, match="no samples"):
        nearest_rank(50, 0)


def test_recent_rate_counts_last_window_only() -> None:
    rate = RecentRate(window_s=1.0, slots=4)
    for i in range(100):  # 100 events spread over [10.0, 11.0)
        rate.add(10.0 + i / 100)
    assert rate.rate(11.0) == pytest.approx(100.0)
    assert rate.rate(11.3) == pytest.approx(75.0)  # the slot [10.0, 10.25) fell out
    assert rate.rate(13.0) == 0.0
    rate.add(20.0)
    assert len(rate._counts) <= 5


def test_recent_rate_rejects_bad_window() -> None:
    with pytest.raises(ValueError):
        RecentRate(window_s=0)
