"""What every consumer in the queue benchmark records, whatever the system under test.

A message is `{"i": index, "p": phase, "t": publish time}`, `t` being `time.monotonic()`
in the producer just before its publish call (CLOCK_MONOTONIC is one clock for every
process on the machine). Phase 0 is consumed after it was all published (the drain),
phase 1 while it is being published (end to end). The consumer calls `started` first
thing in its handler and `acked_one` once its acknowledgement went out; when every index
of a phase has been acknowledged, the phase's numbers go to `<out>/phase<p>.json`, with
the CPU time the consumer process used since its first delivery.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any


def payload(index: int, phase: int) -> dict[str, Any]:
    """The benchmark message (about 40 bytes of JSON), the same for every system."""
    return {"i": index, "p": phase, "t": time.monotonic()}


def percentile(values: list[float], fraction: float) -> float:
    """The `fraction` quantile (nearest rank) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class PhaseClock:
    """Counts deliveries and acknowledgements per phase and writes a phase's result."""

    def __init__(self, messages: int, out: Path) -> None:
        self.messages = messages
        self.out = out
        self.first_start: dict[int, float] = {}
        self.latencies: dict[int, list[float]] = {0: [], 1: []}
        self.acked: dict[int, set[int]] = {0: set(), 1: set()}
        self.deliveries = {0: 0, 1: 0}
        self.cpu_start: float | None = None

    def started(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        if self.cpu_start is None:
            self.cpu_start = time.process_time()
        phase = message["p"]
        self.first_start.setdefault(phase, now)
        self.deliveries[phase] += 1
        self.latencies[phase].append(now - message["t"])

    def acked_one(self, message: dict[str, Any]) -> None:
        phase = message["p"]
        done = self.acked[phase]
        done.add(message["i"])
        if len(done) == self.messages:
            self._write(phase, time.monotonic())

    @property
    def finished(self) -> bool:
        return all(len(done) == self.messages for done in self.acked.values())

    def _write(self, phase: int, last_ack: float) -> None:
        latencies = self.latencies[phase]
        result = {
            "phase": phase,
            "first_start": self.first_start[phase],
            "last_ack": last_ack,
            "deliveries": self.deliveries[phase],
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "mean_ms": statistics.fmean(latencies) * 1000,
            "cpu_s": time.process_time() - (self.cpu_start or 0.0),
        }
        target = self.out / f"phase{phase}.json"
        partial = target.with_suffix(".tmp")
        partial.write_text(json.dumps(result))
        os.replace(partial, target)  # the driver never reads half a file
