"""Requests per second over the last second, for the live display.

Completions are counted in fixed time slots; the rate is the sum of the most recent
complete slots divided by their span, so it moves smoothly at ~4 updates/s and costs one
integer increment per request.
"""

from __future__ import annotations

from collections import deque


class RecentRate:
    """Events/s over the last `window_s`, counted in `slots` equal slots (time passed in)."""

    def __init__(self, window_s: float = 1.0, slots: int = 4) -> None:
        if window_s <= 0 or slots < 1:
            raise ValueError("need window_s > 0 and slots >= 1")
        self.slot_s = window_s / slots
        self.slots = slots
        self._counts: deque[tuple[int, int]] = deque()  # (slot number, events), oldest first

    def add(self, now: float, events: int = 1) -> None:
        slot = int(now / self.slot_s)
        if self._counts and self._counts[-1][0] == slot:
            self._counts[-1] = (slot, self._counts[-1][1] + events)
        else:
            self._counts.append((slot, events))
        while self._counts[0][0] < slot - self.slots:
            self._counts.popleft()

    def rate(self, now: float) -> float:
        """Events/s in the `slots` complete slots before the one containing `now`."""
        current = int(now / self.slot_s)
        events = sum(n for slot, n in self._counts if current - self.slots <= slot < current)
        return events / (self.slots * self.slot_s)
