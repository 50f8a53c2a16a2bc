"""The memory tier: small objects in a log-structured ring of segments, bounded in bytes.

Per-object Python objects were most of the tier's cost (a 1 KiB body as a `bytes` object,
a record, an ordered-dict node: about 300 bytes beyond the payload), so bodies and metadata
live in an arena instead: segments of anonymous memory (`mmap`, so a segment's untouched
tail costs nothing) written in order. A stored variant is one record `meta length, body
length, meta, body` appended to the head segment; the index is one dict from the primary
key to the record's location, a packed int `segment << 32 | offset` (a tuple of them for
the rare URI with several Vary variants). What a variant costs beyond its bytes is a dict
slot, an int and the key object (which the disk tier's index shares).

Eviction drops the oldest whole segment and unindexes its records that are still current.
Recency is kept approximately (FIFO with reinsertion): a hit on a record in the older half
of the ring (more than half a budget of bytes appended since its segment opened) copies it
to the head, so what is used survives and what is not ages out. Replacing a variant or its
metadata appends a new record; the old one is dead but its bytes are held (and charged)
until its segment goes, so the budget counts what is really held.

Bodies are handed out as `memoryview` slices (zero copy into the socket). A segment's
memory is never reused: a dropped segment is unmapped only once the last view of it is
released, so a view stays valid after its object is evicted.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterator

from millions.edge.storage.base import ObjectTooLarge, TierCounters
from millions.edge.storage.codec import SECONDARY_AT, SECONDARY_LENGTH_AT, secondary_of

#: meta length, body length
_RECORD = struct.Struct("<II")
#: A record's header and its metadata's secondary key length, read at once by lookups.
_LOOKUP = struct.Struct(f"<II{SECONDARY_LENGTH_AT}xI")

#: The usual segment size; a segment is at most 1/16 of the budget, so eviction drops a
#: small slice of it, and a record larger than a segment gets a segment of its own.
SEGMENT_BYTES = 4 << 20

#: What a variant costs beyond its key, metadata and body bytes: the record header (8),
#: the index's dict slot (about 60 at 100,000 entries) and int (32), the key object's header
#: and allocator rounding (about 40) and the segment's reference to the key (8). From RSS
#: growth on CPython 3.11 with 100,000 objects of 1 KiB.
ENTRY_OVERHEAD = 150

_OFFSET_MASK = (1 << 32) - 1

#: Called with (primary key, metadata) for each variant evicted: the tiered store hands the
#: metadata back to the disk tier, which does not keep its own copy while memory has one.
EvictionHook = Callable[[bytes, bytes], None]


def segment_of(handle: int) -> int:
    """The segment a handle's record is in (see `MemoryTier.on_segment_dropped`)."""
    return handle >> 32


def charged_size(primary: bytes, meta: bytes, body: bytes | memoryview) -> int:
    """What one variant counts against the byte budget."""
    return len(primary) + len(meta) + len(body) + ENTRY_OVERHEAD


class _Segment:
    """One arena segment: records written in order, and the keys they were written for
    (to unindex the current ones when the segment is dropped)."""

    __slots__ = ("buffer", "charged", "keys", "start", "used", "view")

    def __init__(self, capacity: int, start: int) -> None:
        self.buffer = mmap.mmap(-1, capacity, flags=mmap.MAP_PRIVATE)
        self.view = memoryview(self.buffer)
        self.keys: list[bytes] = []
        self.used = 0
        self.charged = 0
        self.start = start  # bytes charged to the tier before this segment opened


class MemoryTier:
    """Segmented FIFO with reinsertion, bounded by `max_bytes` of `charged_size` (dead
    records included until their segment is dropped). Not thread-safe: call it from the
    event loop thread only. `on_evict` is called for each variant evicted."""

    def __init__(
        self,
        max_bytes: int,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        on_evict: EvictionHook | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("memory tier max_bytes must be positive")
        self.max_bytes = max_bytes
        self.on_evict = on_evict
        #: Called with a segment's id when it is dropped (after its records are unindexed).
        self.on_segment_dropped: Callable[[int], None] | None = None
        self.counters = TierCounters()
        self._segment_bytes = max(1, min(segment_bytes, max_bytes // 16))
        self._index: dict[bytes, int | tuple[int, ...]] = {}
        self._segments: dict[int, _Segment] = {}
        self._head: _Segment | None = None
        self._head_id = -1
        self._tail_id = 0
        self._charged_total = 0
        #: Segments with lower ids are in the older half: a hit there re-appends the record.
        self._old_below = 0

    # -- the arena -------------------------------------------------------------------

    def _append(self, primary: bytes, meta: bytes | memoryview, body: bytes | memoryview) -> int:
        """Write one record at the head; its location."""
        size = _RECORD.size + len(meta) + len(body)
        head = self._head
        if head is None or head.used + size > len(head.buffer):
            head = self._open(size)
        offset = head.used
        view = head.view
        _RECORD.pack_into(view, offset, len(meta), len(body))
        start = offset + _RECORD.size
        view[start : start + len(meta)] = meta
        view[start + len(meta) : offset + size] = body
        head.used = offset + size
        head.keys.append(primary)
        charge = len(primary) + len(meta) + len(body) + ENTRY_OVERHEAD
        head.charged += charge
        self.counters.stored_bytes += charge
        self._charged_total += charge
        segments = self._segments
        old = self._old_below
        half = self._charged_total - self.max_bytes // 2
        while old < self._head_id and (old < self._tail_id or segments[old].start < half):
            old += 1
        self._old_below = old
        return (self._head_id << 32) | offset

    def _open(self, size: int) -> _Segment:
        segment = _Segment(max(self._segment_bytes, size), self._charged_total)
        self._head_id += 1
        self._segments[self._head_id] = segment
        self._head = segment
        return segment

    def _record(self, loc: int) -> tuple[_Segment, int, int, int]:
        """(segment, offset of the metadata, metadata length, body length) of a record."""
        segment = self._segments[loc >> 32]
        offset = loc & _OFFSET_MASK
        meta_length, body_length = _RECORD.unpack_from(segment.view, offset)
        return segment, offset + _RECORD.size, meta_length, body_length

    def _meta(self, loc: int) -> bytes:
        segment, start, meta_length, _ = self._record(loc)
        return segment.buffer[start : start + meta_length]

    def _body(self, loc: int) -> memoryview:
        segment, start, meta_length, body_length = self._record(loc)
        start += meta_length
        return segment.view[start : start + body_length]

    def _secondary_is(self, loc: int, secondary: bytes) -> bool:
        segment, start, meta_length, _ = self._record(loc)
        return secondary_of(segment.view[start : start + meta_length]) == secondary

    def _evict(self) -> None:
        """Drop the oldest segments until the budget holds (never the head: it holds the
        record just written, and one record never exceeds the budget)."""
        while self.counters.stored_bytes > self.max_bytes and self._tail_id < self._head_id:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        tail = self._tail_id
        segment = self._segments.pop(tail)
        self._tail_id = tail + 1
        self.counters.stored_bytes -= segment.charged
        index = self._index
        for primary in segment.keys:
            value = index.get(primary)
            if value is None:
                continue
            if isinstance(value, int):
                if value >> 32 == tail:
                    del index[primary]
                    self._evicted(primary, segment, value)
                continue
            kept = tuple(loc for loc in value if loc >> 32 != tail)
            for loc in value:
                if loc >> 32 == tail:
                    self._evicted(primary, segment, loc)
            self._set(primary, kept)
        if self.on_segment_dropped is not None:
            self.on_segment_dropped(tail)

    def _evicted(self, primary: bytes, segment: _Segment, loc: int) -> None:
        self.counters.objects -= 1
        self.counters.evictions += 1
        if self.on_evict is not None:
            offset = loc & _OFFSET_MASK
            meta_length, _ = _RECORD.unpack_from(segment.view, offset)
            start = offset + _RECORD.size
            self.on_evict(primary, segment.buffer[start : start + meta_length])

    def _set(self, primary: bytes, locs: tuple[int, ...]) -> None:
        if not locs:
            self._index.pop(primary, None)
        elif len(locs) == 1:
            self._index[primary] = locs[0]
        else:
            self._index[primary] = locs

    def _locs(self, primary: bytes) -> tuple[int, ...]:
        value = self._index.get(primary)
        if value is None:
            return ()
        return (value,) if isinstance(value, int) else value

    def _find(self, primary: bytes, secondary: bytes) -> int | None:
        for loc in self._locs(primary):
            if self._secondary_is(loc, secondary):
                return loc
        return None

    def _replace(self, primary: bytes, old: int, new: int) -> None:
        value = self._index[primary]
        if isinstance(value, int):
            self._index[primary] = new
        else:
            self._index[primary] = tuple(new if loc == old else loc for loc in value)

    def _refresh(self, primary: bytes, loc: int) -> int:
        """Copy a record that was hit to the head (reinsertion); its new location."""
        segment, start, meta_length, body_length = self._record(loc)
        view = segment.view
        body_start = start + meta_length
        new = self._append(
            primary, view[start:body_start], view[body_start : body_start + body_length]
        )
        self._replace(primary, loc, new)
        self._evict()
        return new

    # -- the tier interface ----------------------------------------------------------

    def put(self, primary: bytes, secondary: bytes, meta: bytes, body: bytes) -> None:
        if secondary_of(meta) != secondary:  # records keep the secondary key in the meta only
            raise ValueError("metadata is for another secondary key")
        size = charged_size(primary, meta, body)
        if size > self.max_bytes:
            raise ObjectTooLarge(f"{size} bytes exceed the memory tier's {self.max_bytes}")
        loc = self._append(primary, meta, body)
        kept = tuple(old for old in self._locs(primary) if not self._secondary_is(old, secondary))
        self.counters.objects += 1 - (len(self._locs(primary)) - len(kept))
        self._set(primary, (*kept, loc))
        self._evict()

    def variants(self, primary: bytes, *, touch: bool = True) -> list[bytes]:
        locs = self._locs(primary)
        if touch and any(loc >> 32 < self._old_below for loc in locs):
            for loc in locs:
                # a refresh may have evicted a sibling: refresh only what is still current
                if loc >> 32 < self._old_below and loc in self._locs(primary):
                    self._refresh(primary, loc)
            locs = self._locs(primary)
        return [self._meta(loc) for loc in locs]

    def read_body(self, primary: bytes, secondary: bytes) -> memoryview | None:
        value = self._index.get(primary)
        if isinstance(value, int) and value >> 32 >= self._old_below:
            # the common case, in one struct read: one variant, in the newer half
            view = self._segments[value >> 32].view
            offset = value & _OFFSET_MASK
            meta_length, body_length, secondary_length = _LOOKUP.unpack_from(view, offset)
            start = offset + _RECORD.size
            if secondary_length == len(secondary) and (
                not secondary
                or view[start + SECONDARY_AT : start + SECONDARY_AT + secondary_length] == secondary
            ):
                self.counters.hits += 1
                start += meta_length
                return view[start : start + body_length]
        loc = self._find(primary, secondary)
        if loc is None:
            self.counters.misses += 1
            return None
        self.counters.hits += 1
        if loc >> 32 < self._old_below:
            loc = self._refresh(primary, loc)
        return self._body(loc)

    def only_variant(self, primary: bytes) -> tuple[int, memoryview] | None:
        """When `primary` has one stored variant (a response without Vary): a handle for
        `hit_if_current` and a view of its body. A caller that keeps the view must drop it
        when `on_segment_dropped` reports the handle's segment (`segment_of`) gone, or it
        keeps the segment's memory past the budget."""
        loc = self._index.get(primary)
        if not isinstance(loc, int):
            return None
        return loc, self._body(loc)

    def hit_if_current(self, primary: bytes, handle: int) -> bool:
        """Count a hit if `handle` (from `only_variant`) is still the only variant of
        `primary`: not replaced, purged, evicted, moved or marked stale since."""
        if self._index.get(primary) != handle:
            return False
        self.counters.hits += 1
        if handle >> 32 < self._old_below:
            self._refresh(primary, handle)  # the handle is stale from here
        return True

    def set_meta(self, primary: bytes, secondary: bytes, meta: bytes) -> bool:
        loc = self._find(primary, secondary)
        if loc is None:
            return False
        body = self._body(loc)
        if charged_size(primary, meta, body) > self.max_bytes:
            self._set(primary, tuple(other for other in self._locs(primary) if other != loc))
            self.counters.objects -= 1
            self.counters.evictions += 1
            if self.on_evict is not None:
                self.on_evict(primary, meta)
            return True
        new = self._append(primary, meta, body)
        self._replace(primary, loc, new)
        self._evict()
        return True

    def remove(self, primary: bytes) -> int:
        removed = len(self._locs(primary))
        self._index.pop(primary, None)
        self.counters.objects -= removed
        return removed

    def remove_variant(self, primary: bytes, secondary: bytes) -> bool:
        loc = self._find(primary, secondary)
        if loc is None:
            return False
        self._set(primary, tuple(other for other in self._locs(primary) if other != loc))
        self.counters.objects -= 1
        return True

    @property
    def arena_bytes(self) -> int:
        """Bytes written to the segments held (records, current and dead)."""
        return sum(segment.used for segment in self._segments.values())

    def primary_keys(self) -> Iterator[bytes]:
        return iter(list(self._index))
