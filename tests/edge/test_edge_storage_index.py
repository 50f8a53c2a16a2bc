"""The disk tier's compact index: what it costs per object, and that deriving paths and sizes
from the keys and the files (instead of keeping them) stays exact."""

from __future__ import annotations

import gc
import os
import tracemalloc
from pathlib import Path

import pytest
from edge_support import stored

from millions.edge.storage import DiskTier, TieredStore, disk
from millions.edge.storage.codec import encode_entry, secondary_of
from millions.edge.storage.disk import object_name

pytestmark = pytest.mark.timeout(60)

META = encode_entry(stored([(b"cache-control", b"max-age=60"), (b"content-type", b"text/plain")]))


def variant_meta(accept: bytes, *extra: tuple[bytes, bytes]) -> bytes:
    return encode_entry(
        stored(
            [(b"cache-control", b"max-age=60"), (b"vary", b"accept"), *extra],
            request_headers=[(b"accept", accept)],
        )
    )


def file_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in (root / "objects").glob("*/*"))


def test_the_index_costs_about_one_dict_slot_per_object(tmp_path: Path) -> None:
    """Keys and metadata blobs are the caller's objects (the memory tier holds the same
    ones), so what the index adds per object is its ordered-dict slot, where a path, a
    record, a tuple key and a per-URI set used to cost about 850 bytes of RSS."""
    count = 5000
    keys = [b"http://static.example/img/%06d.png" % i for i in range(count)]
    metas = [bytes(bytearray(META)) for _ in range(count)]
    tier = DiskTier(tmp_path, max_bytes=10**9)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for key, meta in zip(keys, metas, strict=True):
            tier.put(key, b"", meta, b"x" * 1024)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    # only what the tier's own code allocated (other tests' threads may allocate meanwhile)
    tier_code = [tracemalloc.Filter(True, disk.__file__)]
    growth = after.filter_traces(tier_code).compare_to(before.filter_traces(tier_code), "filename")
    per_object = sum(stat.size_diff for stat in growth) / count
    print(f"disk index: {per_object:.0f} bytes per object")
    assert per_object < 200
    indexed = zip(keys, metas, strict=True)
    assert all(tier.variants(key, touch=False)[0] is meta for key, meta in indexed)


async def test_a_small_object_s_metadata_is_held_once(tmp_path: Path) -> None:
    """While memory holds a variant, the disk index keeps a placeholder, not a second copy
    of the blob; memory hands the blob back when it evicts the variant."""
    entry = stored([(b"cache-control", b"max-age=60")])
    meta = encode_entry(entry)
    # room for one of the two objects: storing /b evicts /a, reading /a back evicts /b
    store = await TieredStore.open(tmp_path, memory_bytes=700, disk_bytes=10**7)
    await store.put(b"/a", entry, b"a" * 300)
    assert store.memory.variants(b"/a") == [meta]
    assert store.disk.variants(b"/a") == [] and store.disk.meta_of(b"/a", b"") is None
    assert store.disk.counters.objects == 1
    assert store.variants(b"/a") == [entry]
    await store.put(b"/b", entry, b"b" * 300)
    assert store.memory.variants(b"/a") == [] and store.memory.counters.evictions == 1
    assert store.disk.variants(b"/a") == [meta] and store.disk.variants(b"/b") == []
    assert store.variants(b"/a") == [entry]
    assert await store.body(b"/a", b"") == b"a" * 300  # promoted: lent again
    assert store.disk.variants(b"/a") == [] and store.memory.variants(b"/a") == [meta]
    assert store.disk.variants(b"/b") == [meta] and store.variants(b"/b") == [entry]


def test_sizes_derived_from_files_stay_exact_through_every_change(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    gzip, plain, brotli = variant_meta(b"gzip"), variant_meta(b"*/*"), variant_meta(b"br")
    tier.put(b"/v", secondary_of(gzip), gzip, b"z" * 300)
    tier.put(b"/v", secondary_of(plain), plain, b"p" * 500)
    tier.put(b"/v", secondary_of(brotli), brotli, b"b" * 100)
    tier.put(b"/v", secondary_of(plain), plain, b"P" * 50)  # replaced: the old file's bytes go
    assert tier.counters.objects == 3
    assert tier.counters.stored_bytes == file_bytes(tmp_path)
    longer = variant_meta(b"gzip", (b"etag", b'"a-longer-validator"'))
    assert secondary_of(longer) == secondary_of(gzip) and len(longer) > len(gzip)
    assert tier.set_meta(b"/v", secondary_of(gzip), longer)
    assert tier.counters.stored_bytes == file_bytes(tmp_path)
    assert tier.set_meta(b"/v", secondary_of(gzip), gzip)
    assert tier.counters.stored_bytes == file_bytes(tmp_path)
    assert tier.read_body(b"/v", secondary_of(plain)) == b"P" * 50
    assert tier.read_body(b"/v", secondary_of(gzip)) == b"z" * 300
    assert tier.remove_variant(b"/v", secondary_of(gzip))
    assert tier.counters.stored_bytes == file_bytes(tmp_path)
    assert sorted(tier.variants(b"/v")) == sorted([plain, brotli])
    assert tier.remove(b"/v") == 2
    assert (tier.counters.objects, tier.counters.stored_bytes) == (0, 0)
    assert file_bytes(tmp_path) == 0


def test_eviction_takes_the_oldest_variant_of_the_least_recent_uri_first(tmp_path: Path) -> None:
    probe = DiskTier(tmp_path / "probe", max_bytes=10**6)
    gzip, plain = variant_meta(b"gzip"), variant_meta(b"*/*")
    probe.put(b"/a", secondary_of(gzip), gzip, b"x" * 1000)
    one = probe.counters.stored_bytes
    tier = DiskTier(tmp_path / "tier", max_bytes=3 * one + 10)
    tier.put(b"/a", secondary_of(gzip), gzip, b"x" * 1000)
    tier.put(b"/a", secondary_of(plain), plain, b"x" * 1000)
    tier.put(b"/b", secondary_of(gzip), gzip, b"x" * 1000)
    tier.put(b"/c", secondary_of(gzip), gzip, b"x" * 1000)  # /a is the least recent URI
    assert tier.variants(b"/a", touch=False) == [plain]
    assert tier.read_body(b"/a", b"") is None
    assert tier.counters.evictions == 1
    tier.variants(b"/a")  # /a becomes the most recent: /b goes next
    tier.put(b"/d", secondary_of(gzip), gzip, b"x" * 1000)
    assert sorted(tier.primary_keys()) == [b"/a", b"/c", b"/d"]
    assert tier.counters.stored_bytes == file_bytes(tmp_path / "tier") <= tier.max_bytes


def test_a_file_deleted_behind_the_tier_is_dropped_when_opened(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    tier.put(b"/a", b"", META, b"alpha")
    tier.put(b"/b", b"", META, b"beta")
    name = object_name(b"/a", b"")
    os.unlink(tmp_path / "objects" / name[:2] / name)
    assert tier.open_body(b"/a", b"") is None
    assert tier.variants(b"/a") == []
    assert tier.counters.objects == 1 and tier.counters.misses == 1
    assert tier.read_body(b"/b", b"") == b"beta"
    reopened = DiskTier(tmp_path, max_bytes=10**6)
    assert reopened.counters.stored_bytes == file_bytes(tmp_path)
