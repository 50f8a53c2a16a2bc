"""The interface both storage tiers implement, and their counters.

Objects are keyed by (primary key, secondary key) bytes: the primary key is the request
URI (`RequestKey.key`), the secondary key the Vary selection (`CachedResponse.secondary_key`).
Tiers hold metadata as encoded blobs (`codec.encode_entry`) so both keep the same bytes
and decode only on use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class TierCounters:
    """What one tier reports to metrics: lookups, evictions and what it holds now."""

    hits: int = 0
    misses: int = 0
    evictions: int = 0
    stored_bytes: int = 0
    objects: int = 0


class ObjectTooLarge(Exception):
    """A body larger than the tier can ever hold."""


class StorageTier(Protocol):
    """One tier: memory or disk. Synchronous; the tiered store decides where to run it."""

    counters: TierCounters

    def put(self, primary: bytes, secondary: bytes, meta: bytes, body: bytes) -> None:
        """Store one variant, replacing the one with the same keys; evicts as needed."""
        ...

    def variants(self, primary: bytes, *, touch: bool = True) -> list[bytes]:
        """The metadata blobs of every variant stored under `primary`; `touch` marks them
        recently used (a lookup does, a purge scan does not)."""
        ...

    def read_body(self, primary: bytes, secondary: bytes) -> bytes | memoryview | None:
        """The whole body of one variant (the memory tier: a view into its arena), or None
        if it is not stored."""
        ...

    def set_meta(self, primary: bytes, secondary: bytes, meta: bytes) -> bool:
        """Replace one variant's metadata, keeping its body; False if it is not stored."""
        ...

    def remove(self, primary: bytes) -> int:
        """Drop every variant under `primary`; how many were dropped."""
        ...

    def remove_variant(self, primary: bytes, secondary: bytes) -> bool:
        """Drop one variant; False if it was not stored."""
        ...

    def primary_keys(self) -> Iterator[bytes]:
        """Every primary key stored (a snapshot, safe to mutate the tier while iterating)."""
        ...
