"""Hot keys: per-slice counts with Space-Saving bounds, the sliding window, sampling and
split decisions."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from millions.shards.hotkeys import (
    FOLD_EVERY,
    HotKeySampler,
    HotReport,
    KeyCounts,
    KeyLoad,
    RangeLoad,
    decide_split,
    decide_splits,
)
from millions.shards.keyspace import KeyRange, key_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@given(
    st.lists(st.lists(st.integers(min_value=0, max_value=30), max_size=60), max_size=8),
    st.integers(min_value=1, max_value=8),
)
def test_trimmed_counts_keep_space_saving_bounds(batches: list[list[int]], keep: int) -> None:
    """Counted in batches, trimmed to `keep` keys after each: a tracked key's count is within
    its error of the truth, an untracked key had at most the floor, and every key heavier
    than the floor is tracked."""
    summary = KeyCounts()
    stream: list[int] = []
    for batch in batches:
        for item in batch:
            summary.add(str(item), item, 1.0)
        stream += batch
        summary.trim(keep)
        assert len(summary.counts) <= keep
    for key, (count, error, _) in summary.counts.items():
        assert count - error <= stream.count(int(key)) <= count
    for item in set(stream):
        if str(item) not in summary.counts:
            assert stream.count(item) <= summary.floor


def test_a_slice_with_more_keys_than_it_tracks_still_bounds_every_key() -> None:
    """Many distinct keys in one slice (every read a new user) trim the open slice; the
    celebrity stays tracked, and a report's estimate of every key is an upper bound."""
    clock = Clock()
    sampler = HotKeySampler(window_s=10, buckets=10, capacity=4, clock=clock)
    clock.now += 10
    truth: dict[str, int] = {}
    for i in range(5 * FOLD_EVERY):
        key = "celebrity" if i % 3 == 0 else f"user{i}"
        truth[key] = truth.get(key, 0) + 1
        sampler.record(key, key_hash(key), "-80")
        if i == 2 * FOLD_EVERY:
            clock.now += 1  # the next slice: the first is trimmed to 4 keys
    report = sampler.report(top=10)
    assert report.keys[0].key == "celebrity"
    for item in report.keys:
        true_rate = truth[item.key] / report.window_s
        assert item.ops_per_s - item.error_per_s <= true_rate + 1e-9
        assert true_rate <= item.ops_per_s + 1e-9
    assert report.ranges == (RangeLoad("-80", 5 * FOLD_EVERY / report.window_s),)


def test_samples_count_in_the_slice_they_were_taken_in() -> None:
    """A sample waiting to be counted when its slice ends is counted in it, not in the
    slice that is current when it is folded."""
    clock = Clock()
    sampler = HotKeySampler(window_s=10, buckets=10, clock=clock)
    for _ in range(10):
        sampler.record("early", 1, "-")
    clock.now += 10.5  # the early slice has left the window by now
    sampler.record("late", 2, "-")
    report = sampler.report()
    assert [k.key for k in report.keys] == ["late"]


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
