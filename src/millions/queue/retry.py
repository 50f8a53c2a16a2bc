"""What happens to a message whose handling failed: retry later, or dead-letter. Pure.

Retries back off exponentially with "equal jitter": the n-th retry waits between half
and all of `min(cap, base * 2**(n-1))`. The jitter spreads a burst of failures (a
dependency that was down for everyone) so the retries do not arrive together, and the
fixed half keeps a retry from coming back at once, as full jitter may.

A message gets `max_attempts` deliveries in all. A delivery counts whether it ended in a
handler error, a timeout or a consumer that died without answering; only a release
(graceful shutdown) gives the attempt back.
"""

from __future__ import annotations

from dataclasses import dataclass


def backoff_delay(attempt: int, base_s: float, cap_s: float, jitter: float) -> float:
    """Seconds to wait before retrying after failed attempt number `attempt` (1-based).

    `jitter` is a random fraction in [0, 1) supplied by the caller (`random.random()`), so
    the function stays deterministic under test.
    """
    if attempt < 1:
        raise ValueError(f"attempt is 1-based, got {attempt}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    # 2**(attempt-1) overflows a float near attempt 1024; the cap is reached long before.
    exponent = min(attempt - 1, 64)
    ceiling = min(cap_s, base_s * float(2**exponent))
    return ceiling / 2 + ceiling / 2 * jitter


@dataclass(frozen=True, slots=True)
class FailurePlan:
    """`dead_letter`, or retry after `delay_s`."""

    dead_letter: bool
    delay_s: float = 0.0


def plan_failure(
    attempt: int,
    max_attempts: int,
    retryable: bool,
    base_s: float,
    cap_s: float,
    jitter: float,
) -> FailurePlan:
    """The plan for a message whose `attempt`-th delivery failed."""
    if not retryable or attempt >= max_attempts:
        return FailurePlan(dead_letter=True)
    return FailurePlan(dead_letter=False, delay_s=backoff_delay(attempt, base_s, cap_s, jitter))
