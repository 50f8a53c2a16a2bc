"""Which base URL a simulated user talks to.

Users are spread round-robin over the configured targets. Kept as one function so geo
DNS resolution can replace it without touching the runner.
"""

from __future__ import annotations

from collections.abc import Sequence


def target_for_user(targets: Sequence[str], user_index: int) -> str:
    """The base URL (no trailing slash) that user number `user_index` sends requests to."""
    if not targets:
        raise ValueError("targets: at least one base URL is needed")
    return targets[user_index % len(targets)].rstrip("/")
