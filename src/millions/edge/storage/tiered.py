"""Memory over disk, with purges and the counters an edge exports.

Small objects (at most `small_object_bytes`) live in memory and are written through to
disk, so they survive a restart; large ones go to disk only, streamed, and leave through
`os.sendfile`. A disk hit on a small object promotes it back to memory. While memory holds
a variant, the disk index lends it its metadata (keeps a placeholder, not a second copy of
the blob) and gets it back when memory evicts it; lookups read memory first, so they see
every variant once. A disk write that fails drops the disk's older copy, so that memory
never hands back metadata for a body the disk does not have.

Disk work runs in worker threads (`asyncio.to_thread`); memory work runs inline on the
loop. One `asyncio.Lock` orders the steps that publish or drop objects (commits, metadata
updates, purges, promotions) so that a purge can never be undone by a write that was in
flight when it ran; body bytes are written outside it.

Purge by surrogate key scans the stored metadata instead of keeping an index: purges are
rare admin calls, while an index would have to follow every store and every eviction in
two tiers, and a scan cannot go stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from millions.edge.entry import CachedResponse
from millions.edge.storage.base import ObjectTooLarge, TierCounters
from millions.edge.storage.codec import (
    CorruptMetadata,
    decode_entry,
    encode_entry,
    headers_of,
    secondary_of,
)
from millions.edge.storage.disk import DiskBody, DiskTier, DiskWriter
from millions.edge.storage.memory import MemoryTier
from millions.edge.surrogate_keys import surrogate_keys

logger = logging.getLogger(__name__)

#: Bodies up to this size are kept in memory (and written through to disk).
DEFAULT_SMALL_OBJECT_BYTES = 1024 * 1024  # as the streaming threshold: larger ones live on disk


@dataclass(frozen=True, slots=True)
class StorageStats:
    """A snapshot of both tiers' counters, for metrics."""

    memory: TierCounters
    disk: TierCounters
    misses: int


class BodyWriter:
    """Streams a body to the disk tier from the event loop: each call runs in a thread."""

    def __init__(self, store: TieredStore, writer: DiskWriter) -> None:
        self._store = store
        self._writer = writer

    async def write(self, chunk: bytes) -> None:
        await asyncio.to_thread(self._writer.write, chunk)

    async def commit(self, entry: CachedResponse) -> None:
        """Publish the body with `entry` as its metadata."""
        store, writer = self._store, self._writer
        async with store._lock:
            store.memory.remove_variant(writer.primary, writer.secondary)
            try:
                await asyncio.to_thread(writer.commit, encode_entry(entry))
            except BaseException:
                # an older copy on disk may be lent to memory, which no longer holds it
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(
                        store.disk.remove_variant, writer.primary, writer.secondary
                    )
                raise

    async def abort(self) -> None:
        await asyncio.to_thread(self._writer.abort)


class TieredStore:
    """The edge's object store. Keys: `primary` is `RequestKey.key` (the URI as bytes),
    the secondary key is `entry.secondary_key`."""

    def __init__(
        self,
        memory: MemoryTier,
        disk: DiskTier,
        small_object_bytes: int = DEFAULT_SMALL_OBJECT_BYTES,
    ) -> None:
        self.memory = memory
        self.disk = disk
        memory.on_evict = disk.reclaim
        self.small_object_bytes = small_object_bytes
        self.misses = 0
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        root: Path,
        *,
        memory_bytes: int,
        disk_bytes: int,
        small_object_bytes: int = DEFAULT_SMALL_OBJECT_BYTES,
    ) -> TieredStore:
        """A store over the disk tier at `root`, rebuilding its index (in a thread)."""
        disk = await asyncio.to_thread(DiskTier, root, disk_bytes)
        return cls(MemoryTier(memory_bytes), disk, small_object_bytes)

    # -- lookups -------------------------------------------------------------------

    def variants(self, primary: bytes) -> list[CachedResponse]:
        """Every stored variant of `primary`, for `select_variant`. No I/O: both tiers keep
        their metadata in memory."""
        entries = [decode_entry(meta) for meta in self.memory.variants(primary)]
        seen = {entry.secondary_key for entry in entries}
        for meta in self.disk.variants(primary):
            # a variant in memory is on disk too (written through): decode it only once
            if secondary_of(meta) not in seen:
                entries.append(decode_entry(meta))
        if not entries:
            self.misses += 1
        return entries

    async def body(self, primary: bytes, secondary: bytes) -> bytes | memoryview | DiskBody | None:
        """The body of one variant: a view of it in memory, or an open `DiskBody` (close it)
        from disk; None if it is gone (evicted or purged since `variants`)."""
        body = self.memory.read_body(primary, secondary)
        if body is not None:
            return body
        found = await asyncio.to_thread(self.disk.open_body, primary, secondary)
        if found is None or found.length > self.small_object_bytes:
            return found
        with found:
            data = await asyncio.to_thread(found.read_all)
        await self._promote(primary, secondary, data)
        return data

    async def _promote(self, primary: bytes, secondary: bytes, body: bytes) -> None:
        async with self._lock:
            meta = self.disk.meta_of(primary, secondary)
            if meta is None:  # purged while we read it
                return
            try:
                self.memory.put(primary, secondary, meta, body)
            except ObjectTooLarge:
                return
            self.disk.lend(primary, secondary, meta)

    # -- storing -------------------------------------------------------------------

    async def put(self, primary: bytes, entry: CachedResponse, body: bytes) -> None:
        """Store a complete response: in memory and on disk if small, on disk if large."""
        meta = encode_entry(entry)
        secondary = entry.secondary_key
        writer: DiskWriter | None = None
        try:
            writer = await asyncio.to_thread(self.disk.begin, primary, secondary)
            await asyncio.to_thread(writer.write, body)
        except (OSError, ObjectTooLarge):
            logger.warning("cannot write %r to the disk tier", primary, exc_info=True)
            if writer is not None:
                await asyncio.to_thread(writer.abort)
            writer = None
        async with self._lock:
            small = len(body) <= self.small_object_bytes
            if small:
                try:
                    self.memory.put(primary, secondary, meta, body)
                except ObjectTooLarge:
                    small = False
            if not small:
                self.memory.remove_variant(primary, secondary)
            if writer is not None:
                try:
                    await asyncio.to_thread(partial(writer.commit, meta, lent=small))
                    return
                except OSError:
                    logger.warning("cannot write %r to the disk tier", primary, exc_info=True)
            try:  # the disk's older copy, if any, no longer matches what memory holds
                await asyncio.to_thread(self.disk.remove_variant, primary, secondary)
            except OSError:
                logger.warning("cannot drop %r from the disk tier", primary, exc_info=True)

    async def begin(self, primary: bytes, secondary: bytes) -> BodyWriter:
        """A writer that streams a (large) body to disk; `commit(entry)` publishes it."""
        return BodyWriter(self, await asyncio.to_thread(self.disk.begin, primary, secondary))

    async def replace(self, primary: bytes, entry: CachedResponse) -> bool:
        """New metadata for a stored variant (freshened by a 304, or invalidated), keeping
        its body; False if it is no longer stored."""
        meta = encode_entry(entry)
        secondary = entry.secondary_key
        async with self._lock:
            in_memory = self.memory.set_meta(primary, secondary, meta)
            on_disk = await asyncio.to_thread(self.disk.set_meta, primary, secondary, meta)
        return in_memory or on_disk

    # -- purging -------------------------------------------------------------------

    async def purge(self, primary: bytes, *, soft: bool = False) -> int:
        """Purge every variant of one URI; soft marks them stale (kept for stale-if-error)
        instead of dropping them. How many variants were affected."""
        async with self._lock:
            return await self._purge_keys([primary], soft)

    async def purge_prefix(self, prefix: bytes, *, soft: bool = False) -> int:
        """Purge every URI that starts with `prefix`; a prefix that starts with `/` is a
        path prefix, matched on every host (the same object reached by several names)."""
        if prefix.startswith(b"/"):
            return await self._purge_matching(
                lambda primary, meta: _path_of(primary).startswith(prefix), soft
            )
        return await self._purge_matching(lambda primary, meta: primary.startswith(prefix), soft)

    async def purge_surrogate_key(self, key: bytes, *, soft: bool = False) -> int:
        """Purge every object tagged `key` by Surrogate-Key or Cache-Tag."""

        def tagged(primary: bytes, meta: bytes) -> bool:
            try:
                return key in surrogate_keys(headers_of(meta))
            except CorruptMetadata:
                return False

        return await self._purge_matching(tagged, soft)

    async def _purge_matching(self, matches: Callable[[bytes, bytes], bool], soft: bool) -> int:
        async with self._lock:
            primaries = set(self.memory.primary_keys())
            primaries.update(await asyncio.to_thread(lambda: list(self.disk.primary_keys())))
            chosen = [
                primary
                for primary in primaries
                if any(
                    matches(primary, meta)
                    for meta in self.memory.variants(primary, touch=False)
                    + self.disk.variants(primary, touch=False)
                )
            ]
            return await self._purge_keys(chosen, soft)

    async def _purge_keys(self, primaries: Iterable[bytes], soft: bool) -> int:
        affected = 0
        for primary in primaries:
            if not soft:
                in_memory = self.memory.remove(primary)
                on_disk = await asyncio.to_thread(self.disk.remove, primary)
                affected += max(in_memory, on_disk)
                continue
            metas = {secondary_of(m): m for m in self.disk.variants(primary, touch=False)}
            metas.update({secondary_of(m): m for m in self.memory.variants(primary, touch=False)})
            for secondary, meta in metas.items():
                stale = encode_entry(decode_entry(meta).invalidate())
                self.memory.set_meta(primary, secondary, stale)
                await asyncio.to_thread(self.disk.set_meta, primary, secondary, stale)
                affected += 1
        return affected

    # -- visibility ----------------------------------------------------------------

    def stats(self) -> StorageStats:
        """Hits, misses, evictions, stored bytes and objects per tier. A request that finds
        no variant in either tier counts in `misses`; a body served counts a hit in the tier
        that served it (and a memory miss first, if that was the disk)."""
        return StorageStats(
            memory=TierCounters(**_fields(self.memory.counters)),
            disk=TierCounters(**_fields(self.disk.counters)),
            misses=self.misses,
        )


def _fields(counters: TierCounters) -> dict[str, int]:
    return {
        "hits": counters.hits,
        "misses": counters.misses,
        "evictions": counters.evictions,
        "stored_bytes": counters.stored_bytes,
        "objects": counters.objects,
    }


def _path_of(primary: bytes) -> bytes:
    """The path-and-query of a primary key `scheme://authority/path?query` (a key that
    is not an absolute URI is all path)."""
    _, separator, rest = primary.partition(b"://")
    if not separator:
        return primary
    slash = rest.find(b"/")
    return rest[slash:] if slash >= 0 else b"/"
