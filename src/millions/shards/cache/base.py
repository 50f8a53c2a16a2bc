"""The read cache: cache-aside for hot single-key reads, invalidated by the write path.

Entries are tagged with the shard key they were read for; a write for that key invalidates
every entry of the tag. A read-then-fill races with writes (read the old row, a write
commits and invalidates, then the old row is filled), so `get` hands out a token and `fill`
is dropped when the tag was invalidated after the token was taken: once a write has
returned, no read can bring its old value back into the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class CacheLookup:
    """A cached value (None: a miss) and the token a fill after this miss must present."""

    value: bytes | None
    token: int


class ReadCache(Protocol):
    """Both engines pass tests/shards/test_shard_cache_contract.py."""

    async def get(self, tag: str, query: str) -> CacheLookup: ...

    async def fill(self, tag: str, query: str, value: bytes, token: int) -> None:
        """Store `value` unless `tag` was invalidated since `token` was handed out."""
        ...

    async def invalidate(self, tag: str) -> None:
        """Forget every entry of `tag` and refuse fills holding older tokens."""
        ...

    async def close(self) -> None: ...
