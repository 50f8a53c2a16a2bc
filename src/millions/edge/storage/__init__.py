"""The edge's object storage: a memory tier over a disk tier.

- `base`    the `StorageTier` protocol both tiers implement, `TierCounters`
- `codec`   a `CachedResponse` as one compact blob (what both tiers store)
- `memory`  small objects in an arena of segments, bounded in bytes, approximately LRU;
            bodies are handed out as memoryviews (zero copy)
- `disk`    files bounded in bytes, kept across restarts, streamed in and sent zero-copy
- `tiered`  `TieredStore`: placement, promotion, purges (exact, prefix, surrogate key;
            hard or soft) and counters, with async methods for the server

Usage from the server:

    store = await TieredStore.open(path, memory_bytes=..., disk_bytes=...)
    entry = select_variant(store.variants(rkey.key), request_headers)
    body = await store.body(rkey.key, entry.secondary_key)   # memoryview | DiskBody | None
    if isinstance(body, DiskBody):                           # sent with os.sendfile,
        exchange.respond_file(status, fields, body.file.fileno(), body.offset,
                              body.length, lambda sent: body.close())   # then closed
    await store.put(rkey.key, entry, body_bytes)              # small, complete bodies
    writer = await store.begin(rkey.key, entry.secondary_key)       # large, streamed bodies
    await writer.write(chunk); ...; await writer.commit(entry)   # or await writer.abort()
"""

from millions.edge.storage.base import ObjectTooLarge, StorageTier, TierCounters
from millions.edge.storage.codec import CorruptMetadata, decode_entry, encode_entry
from millions.edge.storage.disk import DiskBody, DiskTier, DiskWriter
from millions.edge.storage.memory import MemoryTier
from millions.edge.storage.tiered import (
    DEFAULT_SMALL_OBJECT_BYTES,
    BodyWriter,
    StorageStats,
    TieredStore,
)

__all__ = [
    "DEFAULT_SMALL_OBJECT_BYTES",
    "BodyWriter",
    "CorruptMetadata",
    "DiskBody",
    "DiskTier",
    "DiskWriter",
    "MemoryTier",
    "ObjectTooLarge",
    "StorageStats",
    "StorageTier",
    "TierCounters",
    "TieredStore",
    "decode_entry",
    "encode_entry",
]
