"""The embedded read cache: in-process, bounded by entries, least recently used first out.

Hand-written on an OrderedDict rather than cachetools' TTLCache: the cache must drop every
entry of a tag at once and refuse fills that raced an invalidation, which needs the tag
index and the invalidation record below.

It is per process: a write invalidates the cache of the process that made it. With several
web server processes, use the Redis engine for read-your-writes across them (or accept
staleness up to the TTL).

Invalidations are numbered by a process-wide counter; a lookup's token is the counter's
value. A fill is refused when its tag was invalidated after the token. Invalidation records
are kept for `fill_window_s` (and at most `max_entries` of them); a fill whose token is
older than the oldest forgotten record is refused too, so memory stays bounded without ever
accepting a stale fill.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from millions.shards.cache.base import CacheLookup

FILL_WINDOW_S = 60.0


class MemoryReadCache:
    """A `ReadCache` in a dict: LRU over at most `max_entries`, each living `ttl_s`."""

    def __init__(
        self,
        *,
        ttl_s: float,
        max_entries: int,
        fill_window_s: float = FILL_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError("ttl_s must be > 0 and max_entries >= 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.fill_window_s = fill_window_s
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], tuple[float, bytes]] = OrderedDict()
        self._by_tag: dict[str, set[str]] = {}
        self._counter = 0
        self._invalidated: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._floor = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, tag: str, query: str) -> CacheLookup:
        key = (tag, query)
        entry = self._entries.get(key)
        if entry is not None:
            if entry[0] > self._clock():
                self._entries.move_to_end(key)
                return CacheLookup(entry[1], self._counter)
            self._remove(key)
        return CacheLookup(None, self._counter)

    async def fill(self, tag: str, query: str, value: bytes, token: int) -> None:
        self._forget_old_invalidations()
        if token < self._floor:
            return
        record = self._invalidated.get(tag)
        if record is not None and record[0] > token:
            return
        key = (tag, query)
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        self._by_tag.setdefault(tag, set()).add(query)
        while len(self._entries) > self.max_entries:
            self._remove(next(iter(self._entries)))

    async def invalidate(self, tag: str) -> None:
        self._counter += 1
        self._invalidated[tag] = (self._counter, self._clock())
        self._invalidated.move_to_end(tag)
        for query in self._by_tag.pop(tag, set()):
            self._entries.pop((tag, query), None)
        self._forget_old_invalidations()

    async def close(self) -> None:
        self._entries.clear()
        self._by_tag.clear()

    def _remove(self, key: tuple[str, str]) -> None:
        self._entries.pop(key, None)
        queries = self._by_tag.get(key[0])
        if queries is not None:
            queries.discard(key[1])
            if not queries:
                del self._by_tag[key[0]]

    def _forget_old_invalidations(self) -> None:
        horizon = self._clock() - self.fill_window_s
        while self._invalidated:
            tag, (number, at) = next(iter(self._invalidated.items()))
            if at > horizon and len(self._invalidated) <= self.max_entries:
                break
            del self._invalidated[tag]
            self._floor = max(self._floor, number)
