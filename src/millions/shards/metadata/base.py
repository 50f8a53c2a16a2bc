"""The metadata store: the shard map (every version), the shard registry, id sequences, the
resharding operation record, hot-key load reports and the cross-DC placement (which data
center's copy of each shard is the primary) — what every router and operator process must
agree on. Engines: one SQLite file (embedded) or a PostgreSQL schema.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from millions.shards.shard_map import ShardMap
from millions.shards.storage.base import ShardLocation
from millions.shards.workflow import Operation

LOAD_REPORT_RETENTION_S = 3600.0


@dataclass(frozen=True)
class MapRecord:
    """One published map version: when and why."""

    version: int
    at: float
    reason: str


class MetadataStore(Protocol):
    """Both engines pass tests/shards/test_shard_metadata_contract.py."""

    async def current_map(self) -> ShardMap | None:
        """The newest map, or None before the cluster is initialized."""
        ...

    async def initialize(
        self, initial: ShardMap, prepare: Callable[[ShardMap], Awaitable[None]]
    ) -> ShardMap:
        """Publish `initial` as version 1 unless a map exists, calling `prepare(initial)`
        first (it records each shard's fence); one process at a time runs this. Returns the
        current map."""
        ...

    async def publish(self, new_map: ShardMap, reason: str) -> None:
        """Publish `new_map`, whose version must be the current one plus 1
        (MapConflictError otherwise)."""
        ...

    async def history(self, limit: int = 20) -> list[MapRecord]:
        """Published versions, newest first."""
        ...

    async def locations(self) -> dict[str, ShardLocation]:
        """Every registered shard, by name."""
        ...

    async def register(self, location: ShardLocation) -> None:
        """Register a shard; registering the same location again is a no-op, a different
        location under a registered name is a ShardError."""
        ...

    async def reserve_ids(self, sequence: str, count: int) -> int:
        """Reserve `count` consecutive ids of `sequence` (starting at 1); returns the first."""
        ...

    async def begin_operation(self, operation: Operation) -> None:
        """Record a new operation; OperationError when another one is active."""
        ...

    async def save_operation(self, operation: Operation) -> None: ...

    async def claim_operation(self, operation: Operation, seen_updated_at: float) -> bool:
        """Save `operation` only if its stored record is still the one last updated at
        `seen_updated_at` (so two processes cannot both take over one operation)."""
        ...

    async def active_operation(self) -> Operation | None: ...

    async def operations(self, limit: int = 10) -> list[Operation]:
        """Recent operations, newest first."""
        ...

    async def save_load_report(self, reporter: str, report: dict[str, Any], at: float) -> None:
        """Store one process's latest hot-key report (replacing its previous one)."""
        ...

    async def load_reports(self, newer_than: float) -> list[dict[str, Any]]:
        """Reports stored after `newer_than` (unix time), one per reporting process."""
        ...

    async def current_placement(self) -> tuple[int, dict[str, Any]] | None:
        """The newest cross-DC placement (version, record), or None before there is one."""
        ...

    async def publish_placement(self, version: int, record: dict[str, Any], reason: str) -> None:
        """Publish a placement record as `version`, which must be the current one plus 1
        (MapConflictError otherwise), like `publish` for maps."""
        ...

    async def close(self) -> None: ...
