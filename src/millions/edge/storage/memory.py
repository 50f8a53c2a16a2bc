"""The memory tier: an LRU of small objects, bounded in bytes.

One `OrderedDict` maps a primary key to its variants, so every operation is O(1) (plus the
handful of variants of one URI) and the unit of recency is the URI: the variants of one URI
are chosen among together, so they are used and evicted together. A variant is a
`__slots__` record of three bytes objects (secondary key, metadata blob, body) and a link
to the URI's next variant (a chain, not a tuple: most URIs have one variant, and a tuple
would cost another 64 bytes per object). That is about 300 bytes of Python overhead per
object, which `ENTRY_OVERHEAD` charges to the budget so that the byte bound bounds the
process's memory, not only the payload.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from millions.edge.storage.base import ObjectTooLarge, TierCounters

#: Python object overhead per stored variant: the record, three bytes object headers and
#: allocator rounding, the ordered dict's slot and its LRU link. Measured as RSS growth on
#: CPython 3.11 with 100,000 objects of 1 KiB (298 bytes each beyond key, metadata and body;
#: tracemalloc sees less, as it misses the allocator's own headers).
ENTRY_OVERHEAD = 300


class MemoryVariant:
    __slots__ = ("body", "meta", "next", "secondary")

    def __init__(
        self, secondary: bytes, meta: bytes, body: bytes, next: MemoryVariant | None
    ) -> None:
        self.secondary = secondary
        self.meta = meta
        self.body = body
        self.next = next


def _chain(first: MemoryVariant | None) -> Iterator[MemoryVariant]:
    while first is not None:
        yield first
        first = first.next


def _link(variants: list[MemoryVariant]) -> MemoryVariant | None:
    """The variants as a chain, in the given order (rebuilt on change: chains are short)."""
    first: MemoryVariant | None = None
    for variant in reversed(variants):
        variant.next = first
        first = variant
    return first


def charged_size(primary: bytes, meta: bytes, body: bytes) -> int:
    """What one variant counts against the byte budget."""
    return len(primary) + len(meta) + len(body) + ENTRY_OVERHEAD


class MemoryTier:
    """LRU by URI, bounded by `max_bytes` of `charged_size`. Not thread-safe: call it from
    the event loop thread only (every operation is a few dict steps)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError("memory tier max_bytes must be positive")
        self.max_bytes = max_bytes
        self.counters = TierCounters()
        self._lru: OrderedDict[bytes, MemoryVariant] = OrderedDict()

    def _drop(self, primary: bytes, variant: MemoryVariant) -> None:
        self.counters.stored_bytes -= charged_size(primary, variant.meta, variant.body)
        self.counters.objects -= 1

    def put(self, primary: bytes, secondary: bytes, meta: bytes, body: bytes) -> None:
        size = charged_size(primary, meta, body)
        if size > self.max_bytes:
            raise ObjectTooLarge(f"{size} bytes exceed the memory tier's {self.max_bytes}")
        first = self._lru.pop(primary, None)
        if first is None:
            new = MemoryVariant(secondary, meta, body, None)
        else:
            kept = []
            for old in _chain(first):
                if old.secondary == secondary:
                    self._drop(primary, old)
                else:
                    kept.append(old)
            new = MemoryVariant(secondary, meta, body, _link(kept))
        self._lru[primary] = new
        self.counters.stored_bytes += size
        self.counters.objects += 1
        self._evict(keep=primary)

    def _evict(self, keep: bytes) -> None:
        counters = self.counters
        lru = self._lru
        while counters.stored_bytes > self.max_bytes:
            oldest = next(iter(lru))
            variants = list(_chain(lru[oldest]))
            if oldest == keep and len(variants) > 1:
                # Only this URI is left: drop its last (oldest stored) variant.
                victim = variants.pop()
                lru[keep] = variants[0]
                variants[-1].next = None
                self._drop(keep, victim)
                counters.evictions += 1
                continue
            for victim in _chain(lru.pop(oldest)):
                self._drop(oldest, victim)
                counters.evictions += 1

    def variants(self, primary: bytes, *, touch: bool = True) -> list[bytes]:
        first = self._lru.get(primary)
        if first is None:
            return []
        if touch:
            self._lru.move_to_end(primary)
        return [variant.meta for variant in _chain(first)]

    def _find(self, primary: bytes, secondary: bytes) -> MemoryVariant | None:
        for variant in _chain(self._lru.get(primary)):
            if variant.secondary == secondary:
                return variant
        return None

    def read_body(self, primary: bytes, secondary: bytes) -> bytes | None:
        variant = self._find(primary, secondary)
        if variant is None:
            self.counters.misses += 1
            return None
        self.counters.hits += 1
        self._lru.move_to_end(primary)
        return variant.body

    def only_variant(self, primary: bytes) -> MemoryVariant | None:
        """The stored variant of `primary` when it is its only one (a response without
        Vary), as a handle for `hit_if_current`."""
        first = self._lru.get(primary)
        return first if first is not None and first.next is None else None

    def hit_if_current(self, primary: bytes, variant: MemoryVariant, meta: bytes) -> bool:
        """Count a hit on `variant` if it is still the only variant of `primary` with the
        metadata `meta` (not replaced, purged, evicted or marked stale since)."""
        if self._lru.get(primary) is not variant or variant.meta is not meta or variant.next:
            return False
        self.counters.hits += 1
        self._lru.move_to_end(primary)
        return True

    def set_meta(self, primary: bytes, secondary: bytes, meta: bytes) -> bool:
        variant = self._find(primary, secondary)
        if variant is None:
            return False
        self.counters.stored_bytes += len(meta) - len(variant.meta)
        variant.meta = meta
        self._evict(keep=primary)
        return True

    def remove(self, primary: bytes) -> int:
        removed = 0
        for variant in _chain(self._lru.pop(primary, None)):
            self._drop(primary, variant)
            removed += 1
        return removed

    def remove_variant(self, primary: bytes, secondary: bytes) -> bool:
        variant = self._find(primary, secondary)
        if variant is None:
            return False
        rest = _link([v for v in _chain(self._lru[primary]) if v is not variant])
        if rest is None:
            del self._lru[primary]
        else:
            self._lru[primary] = rest
        self._drop(primary, variant)
        return True

    def primary_keys(self) -> Iterator[bytes]:
        return iter(list(self._lru))
