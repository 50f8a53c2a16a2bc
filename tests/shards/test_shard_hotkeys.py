"""Hot keys: Space-Saving counts, the sliding window, sampling and split decisions."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from millions.shards.hotkeys import (
    HotKeySampler,
    HotReport,
    KeyLoad,
    RangeLoad,
    SpaceSaving,
    decide_split,
    decide_splits,
)
from millions.shards.keyspace import KeyRange, key_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(st.lists(st.integers(min_value=0, max_value=30), max_size=300))
def test_space_saving_never_undercounts_and_tracks_every_heavy_key(stream: list[int]) -> None:
    summary = SpaceSaving(capacity=8)
    for item in stream:
        summary.add(str(item), item)
    assert len(summary.counters) <= 8
    for key, (count, error, _) in summary.counters.items():
        true = stream.count(int(key))
        assert count - error <= true <= count
    for item in set(stream):
        if stream.count(item) > len(stream) / 8:
            assert str(item) in summary.counters


def test_rates_cover_the_window_and_old_load_slides_out() -> None:
    clock = Clock()
    sampler = HotKeySampler(window_s=10, buckets=10, clock=clock)
    clock.now += 10.5  # 9 whole one-second slices and half of the current one
    for _ in range(500):
        sampler.record("celebrity", key_hash("celebrity"), "-80")
    for i in range(100):
        sampler.record(f"user{i}", key_hash(f"user{i}"), "80-")
    report = sampler.report(top=3)
    assert report.keys[0].key == "celebrity"
    assert report.keys[0].ops_per_s == 500 / report.window_s
    assert report.window_s == 9.5
    assert {r.key_range: r.ops_per_s for r in report.ranges} == {"-80": 500 / 9.5, "80-": 100 / 9.5}
    assert len(report.keys) == 3
    clock.now += 11
    later = sampler.report()
    assert later.keys == () and later.ranges == ()


def test_a_young_sampler_measures_rates_over_its_age() -> None:
    clock = Clock()
    sampler = HotKeySampler(window_s=10, clock=clock)
    clock.now += 2
    for _ in range(100):
        sampler.record("k", 1, "-")
    assert sampler.report().keys[0].ops_per_s == 50.0


def test_sampling_counts_each_sample_for_the_skipped_ones() -> None:
    clock = Clock()
    chance = random.Random(7).random
    sampler = HotKeySampler(window_s=10, sample_rate=0.1, clock=clock, chance=chance)
    clock.now += 10
    for _ in range(20_000):
        sampler.record("k", 1, "-")
    rate = sampler.report().keys[0].ops_per_s
    assert 1800 < rate < 2200  # 20000 ops over 10 s, estimated from ~2000 samples


def test_reports_merge_across_processes_and_survive_json() -> None:
    one = HotReport(10, (KeyLoad("a", 5, 100.0, 1.0),), (RangeLoad("-80", 100.0),))
    two = HotReport(
        10, (KeyLoad("a", 5, 50.0, 0.0), KeyLoad("b", 9, 70.0, 0.0)), (RangeLoad("-80", 120.0),)
    )
    merged = HotReport.merge([HotReport.from_dict(one.to_dict()), two])
    assert merged.keys == (KeyLoad("a", 5, 150.0, 1.0), KeyLoad("b", 9, 70.0, 0.0))
    assert merged.ranges == (RangeLoad("-80", 220.0),)


def test_ranges_within_the_threshold_do_not_split() -> None:
    decision = decide_split(KeyRange.parse("-80"), 2500.0, ())
    assert not decision.split and decision.threshold_ops_s == 2500.0


def test_a_hot_range_splits_at_its_middle_when_load_is_spread() -> None:
    decision = decide_split(KeyRange.parse("-80"), 4000.0, (KeyLoad("k", 1, 10.0, 0.0),))
    assert decision.split and decision.split_at == 0x40 << 56
    assert decision.too_hot is None


def test_a_hot_range_splits_at_the_load_median_of_its_hot_keys() -> None:
    key_range = KeyRange.parse("-80")
    keys = (
        KeyLoad("a", 0x10 << 56, 1000.0, 0.0),
        KeyLoad("b", 0x11 << 56, 1000.0, 0.0),
        KeyLoad("c", 0x12 << 56, 1000.0, 0.0),
        KeyLoad("d", 0x13 << 56, 1000.0, 0.0),
        KeyLoad("elsewhere", 0x90 << 56, 9000.0, 0.0),
    )
    decision = decide_split(key_range, 4100.0, keys, threshold_ops_s=2500)
    assert decision.split
    assert decision.split_at == 0x12 << 56  # a and b below, c and d above


def test_a_single_key_over_the_threshold_is_reported_instead_of_a_split() -> None:
    celebrity = KeyLoad("celebrity", 0x20 << 56, 3000.0, 10.0)
    decision = decide_split(KeyRange.parse("-80"), 3500.0, (celebrity,), threshold_ops_s=2500)
    assert not decision.split and decision.split_at is None
    assert decision.too_hot == celebrity
    assert "no split can help" in decision.reason
    # an estimate that might be inflated by its error does not count as too hot
    unsure = KeyLoad("maybe", 0x20 << 56, 3000.0, 600.0)
    assert decide_split(KeyRange.parse("-80"), 3500.0, (unsure,)).split


def test_decide_splits_covers_every_range_over_the_threshold() -> None:
    report = HotReport(
        10, (), (RangeLoad("-80", 3000.0), RangeLoad("80-", 100.0), RangeLoad("40-", 2600.0))
    )
    decisions = decide_splits(report, threshold_ops_s=2500)
    assert [d.key_range for d in decisions] == ["-80", "40-"]
    assert all(d.split for d in decisions)


@given(
    st.lists(st.integers(min_value=0, max_value=30), min_size=1, max_size=400),
    st.integers(min_value=1, max_value=8),
)
def test_space_saving_bounds_hold_with_the_count_index(stream: list[int], capacity: int) -> None:
    """Every count over-estimates by at most its error, the counts add up to the stream,
    and a key with more than 1/capacity of the stream is always tracked."""
    summary = SpaceSaving(capacity)
    for item in stream:
        summary.add(f"k{item}", item)
    true = {f"k{item}": stream.count(item) for item in set(stream)}
    assert len(summary.counters) <= capacity
    assert sum(count for count, _, _ in summary.counters.values()) == len(stream)
    for key, (count, error, _) in summary.counters.items():
        assert count - error <= true[key] <= count
    for key, count in true.items():
        if count > len(stream) / capacity:
            assert key in summary.counters
