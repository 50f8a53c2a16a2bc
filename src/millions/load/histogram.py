"""Latency histogram with logarithmic buckets: bounded memory, bounded relative error.

Hand-written rather than taking `hdrhistogram` as a dependency: the load generator needs
only `record` and nearest-rank `percentile`, which fit in a few lines, and a fixed list
of ~1100 counters keeps memory constant whether a run makes a thousand requests or a
hundred million, while a percentile query (four times a second for the live display)
walks the counters instead of sorting every sample.

Bucket i holds values in [lowest * g**i, lowest * g**(i+1)) with g = (1+e)/(1-e); its
representative value lowest * g**i * (1+e) is within a fraction e of anything in it, and
the reported value is clamped to the exact observed [min, max].
"""

from __future__ import annotations

import math


def nearest_rank(q: float, count: int) -> int:
    """1-based rank of the q-th percentile (0 <= q <= 100) among `count` sorted samples."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within [0, 100], got {q}")
    if count < 1:
        raise ValueError("no samples")
    return max(1, math.ceil(q / 100 * count))


class LatencyHistogram:
    """Counts of latencies (seconds) in log buckets; percentiles within `relative_error`."""

    def __init__(
        self, lowest_s: float = 1e-6, highest_s: float = 3600.0, relative_error: float = 0.01
    ) -> None:
        if not 0 < lowest_s < highest_s:
            raise ValueError("need 0 < lowest_s < highest_s")
        if not 0 < relative_error < 0.5:
            raise ValueError("relative_error must be within (0, 0.5)")
        self.lowest_s = lowest_s
        self.relative_error = relative_error
        self._growth_log = math.log((1 + relative_error) / (1 - relative_error))
        self._buckets = [0] * (self._index(highest_s) + 1)
        self.count = 0
        self.total_s = 0.0
        self.min_s = math.inf
        self.max_s = 0.0

    def _index(self, value_s: float) -> int:
        if value_s <= self.lowest_s:
            return 0
        return int(math.log(value_s / self.lowest_s) / self._growth_log)

    def record(self, value_s: float) -> None:
        """Count one latency. Negative values are clamped to 0; huge ones go to the top bucket."""
        value_s = max(value_s, 0.0)
        index = min(self._index(value_s), len(self._buckets) - 1)
        self._buckets[index] += 1
        self.count += 1
        self.total_s += value_s
        self.min_s = min(self.min_s, value_s)
        self.max_s = max(self.max_s, value_s)

    def percentile(self, q: float) -> float:
        """Nearest-rank q-th percentile in seconds (0.0 when nothing was recorded)."""
        if self.count == 0:
            return 0.0
        rank = nearest_rank(q, self.count)
        if rank == self.count:
            return self.max_s
        if rank == 1:
            return self.min_s
        seen = 0
        for index, bucket_count in enumerate(self._buckets):
            seen += bucket_count
            if seen >= rank:
                lower = self.lowest_s * math.exp(index * self._growth_log)
                representative = lower * (1 + self.relative_error)
                return min(max(representative, self.min_s), self.max_s)
        return self.max_s

    @property
    def mean_s(self) -> float:
        return self.total_s / self.count if self.count else 0.0
