"""The simplest upstream choice: one server (an edge in front of its origin, tests)."""

from __future__ import annotations

from millions.proxy.upstream import UpstreamPool


class SingleUpstream:
    """Always the same server; a failed attempt is not repeated elsewhere."""

    __slots__ = ("pool",)

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool

    def pick(self, tried: tuple[UpstreamPool, ...]) -> UpstreamPool | None:
        return None if tried else self.pool

    def done(self, pool: UpstreamPool) -> None:
        """Nothing to count for a single server."""

    def failed(self, pool: UpstreamPool) -> None:
        """No health state to update for a single server."""
