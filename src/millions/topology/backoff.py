"""Restart backoff for crashed components (pure).

A component that crashes right after starting is restarted after `base`, then 2x,
4x ... up to `cap`; one that ran for `stable_s` before crashing starts over at `base`,
so a single crash of a long-lived server restarts it quickly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RestartBackoff:
    base_s: float
    cap_s: float
    stable_s: float = 10.0
    consecutive: int = 0

    def next_delay(self, uptime_s: float) -> float:
        """Delay before restarting a process that exited after `uptime_s` seconds."""
        if uptime_s >= self.stable_s:
            self.consecutive = 0
        delay = min(self.cap_s, self.base_s * float(2**self.consecutive))
        self.consecutive += 1
        return delay
