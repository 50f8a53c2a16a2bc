"""Hot keys and hot ranges: sampled load per key and per range over a sliding window, and
the decision whether a range should split.

The window is a ring of `buckets` sub-windows. Each counts its keys exactly, and keeps its
`capacity` heaviest ones once it closes (`KeyCounts`: Space-Saving's error bounds, so any key
with more than 1/capacity of a slice's load is tracked and never under-estimated by more than
its error); memory is bounded by buckets x (capacity + ranges) plus the open slice's keys.

A range over the threshold (CockroachDB splits ranges above 2500 queries/s) should split,
at the load-weighted median of its hot keys when they carry most of its load (else at its
middle). A single key over the threshold is reported instead: no split can bring the range
holding it under the threshold; routers serve its reads from the read cache (`keys_to_cache`),
and writes to it can only be spread by the app (e.g. key suffixes).

Routers store their reports in the metadata store every `report_interval_s`; a report older
than a few intervals belongs to a router that stopped serving and is left out.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from millions.shards.keyspace import KeyRange

DEFAULT_THRESHOLD_OPS_S = 2500.0
FRESH_REPORT_INTERVALS = 2.5


@dataclass(frozen=True)
class KeyLoad:
    """A key's estimated load; the true load is between `ops_per_s - error_per_s` and
    `ops_per_s`."""

    key: str
    keyspace_id: int
    ops_per_s: float
    error_per_s: float


@dataclass(frozen=True)
class RangeLoad:
    key_range: str
    ops_per_s: float


@dataclass(frozen=True)
class HotReport:
    """The hottest keys and every range with load, over the last `window_s` seconds."""

    window_s: float
    keys: tuple[KeyLoad, ...]
    ranges: tuple[RangeLoad, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "keys": [
                [k.key, f"{k.keyspace_id:016x}", k.ops_per_s, k.error_per_s] for k in self.keys
            ],
            "ranges": [[r.key_range, r.ops_per_s] for r in self.ranges],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HotReport:
        return cls(
            window_s=float(data["window_s"]),
            keys=tuple(
                KeyLoad(str(k), int(h, 16), float(ops), float(err))
                for k, h, ops, err in data["keys"]
            ),
            ranges=tuple(RangeLoad(str(name), float(ops)) for name, ops in data["ranges"]),
        )

    @classmethod
    def merge(cls, reports: Iterable[HotReport], top: int = 20) -> HotReport:
        """The load of several processes together: rates of the same key or range add up."""
        keys: dict[str, list[float]] = {}
        hashes: dict[str, int] = {}
        ranges: dict[str, float] = {}
        window = 0.0
        for report in reports:
            window = max(window, report.window_s)
            for item in report.keys:
                totals = keys.setdefault(item.key, [0.0, 0.0])
                totals[0] += item.ops_per_s
                totals[1] += item.error_per_s
                hashes[item.key] = item.keyspace_id
            for load in report.ranges:
                ranges[load.key_range] = ranges.get(load.key_range, 0.0) + load.ops_per_s
        ranked = sorted(keys.items(), key=lambda kv: kv[1][0], reverse=True)[:top]
        return cls(
            window_s=window,
            keys=tuple(KeyLoad(k, hashes[k], ops, err) for k, (ops, err) in ranked),
            ranges=tuple(
                RangeLoad(name, ops)
                for name, ops in sorted(ranges.items(), key=lambda kv: kv[1], reverse=True)
            ),
        )


def fresh_since(now: float, report_interval_s: float) -> float:
    """The oldest time (unix) a router's load report may have and still count: a router
    that serves stores one every interval, so one missed report is tolerated."""
    return now - FRESH_REPORT_INTERVALS * report_interval_s


def keys_to_cache(report: HotReport, over_ops_s: float) -> frozenset[str]:
    """The keys whose load is surely above `over_ops_s` (its estimate minus its error): a
    single key that hot gains nothing from a split, so its reads are served from the cache."""
    return frozenset(k.key for k in report.keys if k.ops_per_s - k.error_per_s > over_ops_s)


def current_load(report: HotReport, ranges: Collection[str]) -> HotReport:
    """`report` without ranges that are not in the current map (`ranges`, by name): load a
    router counted for a range that has since split belongs to neither half."""
    return HotReport(
        report.window_s, report.keys, tuple(r for r in report.ranges if r.key_range in ranges)
    )


#: Pending samples are folded into the window's counts in batches of at most this many: a
#: routed operation only appends to a list, and the batch is counted by `Counter` in C.
FOLD_EVERY = 512
#: The open slice keeps exact counts until it holds this many keys per tracked key; then it
#: is trimmed to `capacity` keys (bounding memory under many distinct keys).
OPEN_KEYS_PER_TRACKED = 16


class KeyCounts:
    """Per-key counts of one window slice, exact until trimmed to the heaviest keys.

    Trimming keeps the `keep` heaviest keys and raises `floor` to the largest count it
    dropped; a key first counted after that starts at `floor`, with `floor` as its error.
    This is Space-Saving's guarantee (Metwally, Agrawal, El Abbadi 2005) without its
    per-item eviction: a tracked key's true count is within [count - error, count], an
    untracked key's is at most `floor`, and every key with more than `floor` is tracked."""

    __slots__ = ("counts", "floor")

    def __init__(self) -> None:
        self.counts: dict[str, list[float]] = {}  # key -> [count, error, keyspace id]
        self.floor = 0.0

    def add(self, key: str, keyspace_id: int, weight: float) -> None:
        entry = self.counts.get(key)
        if entry is None:
            self.counts[key] = [self.floor + weight, self.floor, float(keyspace_id)]
        else:
            entry[0] += weight

    def trim(self, keep: int) -> None:
        if len(self.counts) <= keep:
            return
        ranked = sorted(self.counts.items(), key=lambda item: item[1][0], reverse=True)
        self.floor = max(self.floor, ranked[keep][1][0])
        self.counts = dict(ranked[:keep])


class _Bucket:
    __slots__ = ("index", "keys", "ranges")

    def __init__(self, index: int) -> None:
        self.index = index
        self.keys = KeyCounts()
        self.ranges: dict[str, float] = {}


class HotKeySampler:
    """Sampled per-key and per-range operation counts over a sliding window.

    `record` is called on every routed operation, so it only appends the sample to a list;
    batches are counted when the current one-slice window ends, when `FOLD_EVERY` samples
    wait, and before a report. With `sample_rate` < 1 only that fraction is kept (each
    counting 1/sample_rate). Closed slices keep their `capacity` heaviest keys.
    """

    def __init__(
        self,
        *,
        window_s: float = 10.0,
        buckets: int = 10,
        capacity: int = 64,
        sample_rate: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        chance: Callable[[], float] = random.random,
    ) -> None:
        if window_s <= 0 or buckets < 1 or not 0 < sample_rate <= 1 or capacity < 1:
            raise ValueError(
                "window_s > 0, buckets >= 1, capacity >= 1 and 0 < sample_rate <= 1 are needed"
            )
        self.window_s = window_s
        self.bucket_s = window_s / buckets
        self.buckets = buckets
        self.capacity = capacity
        self.sample_rate = sample_rate
        self._clock = clock
        self._chance = chance
        self._ring: deque[_Bucket] = deque()
        self._started = clock()
        self._pending: list[tuple[str | int, int, str]] = []
        self._pending_index = 0  # the slice every pending sample was taken in
        self._fold_at = float("-inf")  # when that slice ends

    def record(
        self, key: str | int, keyspace_id: int, key_range: str, now: float | None = None
    ) -> None:
        """Count one operation on `key` in `key_range` (by name) at `now` (the sampler's
        clock when None)."""
        if now is None:
            now = self._clock()
        if now >= self._fold_at or len(self._pending) >= FOLD_EVERY:
            self._fold(now)
        if self.sample_rate < 1 and self._chance() >= self.sample_rate:
            return
        self._pending.append((key, keyspace_id, key_range))

    def _fold(self, now: float) -> None:
        """Count the pending samples into their slice; start a new slice when `now` is past
        theirs."""
        if self._pending:
            pending, self._pending = self._pending, []
            bucket = self._bucket(self._pending_index)
            weight = 1.0 / self.sample_rate
            keys, ranges = bucket.keys, bucket.ranges
            for (key, keyspace_id, key_range), count in Counter(pending).items():
                keys.add(key if type(key) is str else str(key), keyspace_id, count * weight)
                ranges[key_range] = ranges.get(key_range, 0.0) + count * weight
            if len(keys.counts) > OPEN_KEYS_PER_TRACKED * self.capacity:
                keys.trim(self.capacity)
        if now >= self._fold_at:
            self._pending_index = int(now // self.bucket_s)
            self._fold_at = (self._pending_index + 1) * self.bucket_s

    def _bucket(self, index: int) -> _Bucket:
        ring = self._ring
        if ring and ring[-1].index == index:
            return ring[-1]
        if ring:
            ring[-1].keys.trim(self.capacity)
        ring.append(_Bucket(index))
        while ring[0].index <= index - self.buckets:
            ring.popleft()
        return ring[-1]

    def report(self, top: int = 20) -> HotReport:
        now = self._clock()
        self._fold(now)
        index = int(now // self.bucket_s)
        oldest = index - self.buckets + 1
        covered = max(now - max(self._started, oldest * self.bucket_s), 1e-3)
        live = [bucket for bucket in self._ring if bucket.index >= oldest]
        counts: dict[str, list[float]] = {}
        ranges: dict[str, float] = {}
        for bucket in live:
            for key, (count, error, keyspace_id) in bucket.keys.counts.items():
                totals = counts.setdefault(key, [0.0, 0.0, keyspace_id])
                totals[0] += count
                totals[1] += error
            for name, count in bucket.ranges.items():
                ranges[name] = ranges.get(name, 0.0) + count
        for bucket in live:  # a slice that dropped a key may have counted it up to its floor
            if bucket.keys.floor:
                for key, totals in counts.items():
                    if key not in bucket.keys.counts:
                        totals[0] += bucket.keys.floor
                        totals[1] += bucket.keys.floor
        ranked = sorted(counts.items(), key=lambda kv: kv[1][0], reverse=True)[:top]
        return HotReport(
            window_s=round(covered, 3),
            keys=tuple(
                KeyLoad(key, int(h), count / covered, error / covered)
                for key, (count, error, h) in ranked
            ),
            ranges=tuple(
                RangeLoad(name, count / covered)
                for name, count in sorted(ranges.items(), key=lambda kv: kv[1], reverse=True)
            ),
        )


@dataclass(frozen=True)
class SplitDecision:
    """Whether `key_range` should split, where, or which single key makes splitting futile."""

    key_range: str
    ops_per_s: float
    threshold_ops_s: float
    split: bool
    split_at: int | None
    too_hot: KeyLoad | None
    reason: str


def _weighted_median(key_range: KeyRange, keys: Sequence[KeyLoad]) -> int | None:
    """The boundary that best halves the load of `keys`, strictly inside the range."""
    ordered = sorted(keys, key=lambda k: k.keyspace_id)
    total = sum(k.ops_per_s for k in ordered)
    best: tuple[float, int] | None = None
    below = 0.0
    for item in ordered:
        for boundary, left in (
            (item.keyspace_id, below),
            (item.keyspace_id + 1, below + item.ops_per_s),
        ):
            if key_range.start < boundary < key_range.end:
                imbalance = abs(total - 2 * left)
                if best is None or imbalance <= best[0]:
                    best = (imbalance, boundary)
        below += item.ops_per_s
    return None if best is None else best[1]


def decide_split(
    key_range: KeyRange,
    ops_per_s: float,
    keys: Sequence[KeyLoad],
    threshold_ops_s: float = DEFAULT_THRESHOLD_OPS_S,
) -> SplitDecision:
    """Should `key_range`, carrying `ops_per_s`, split? `keys` are hot keys (any range)."""
    inside = [k for k in keys if key_range.contains(k.keyspace_id)]
    name = key_range.name

    def decision(split: bool, at: int | None, hot: KeyLoad | None, reason: str) -> SplitDecision:
        return SplitDecision(name, ops_per_s, threshold_ops_s, split, at, hot, reason)

    if ops_per_s <= threshold_ops_s:
        return decision(False, None, None, f"{ops_per_s:.0f} ops/s is within the threshold")
    for item in sorted(inside, key=lambda k: k.ops_per_s, reverse=True):
        if item.ops_per_s - item.error_per_s > threshold_ops_s:
            return decision(
                False,
                None,
                item,
                f"key {item.key!r} alone takes {item.ops_per_s:.0f} ops/s, over the "
                f"{threshold_ops_s:.0f} ops/s threshold: no split can help; cache it or "
                "spread it over several keys",
            )
    if key_range.width < 2:
        return decision(False, None, None, "the range is a single keyspace id")
    at: int | None = None
    if sum(k.ops_per_s for k in inside) * 2 >= ops_per_s:
        at = _weighted_median(key_range, inside)
    where = "the load-weighted median of its hot keys"
    if at is None:
        at = key_range.split()[1].start
        where = "its middle"
    return decision(
        True,
        at,
        None,
        f"{ops_per_s:.0f} ops/s is over the {threshold_ops_s:.0f} ops/s threshold; "
        f"split at {where}",
    )


def decide_splits(
    report: HotReport, threshold_ops_s: float = DEFAULT_THRESHOLD_OPS_S
) -> list[SplitDecision]:
    """A decision for every range of the report over the threshold, hottest first."""
    return [
        decide_split(KeyRange.parse(load.key_range), load.ops_per_s, report.keys, threshold_ops_s)
        for load in report.ranges
        if load.ops_per_s > threshold_ops_s
    ]
