"""The memory tier: exact byte-bounded LRU, variant bookkeeping, and memory cost."""

from __future__ import annotations

import os
import tracemalloc

import pytest
from edge_support import stored
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.storage import CorruptMetadata, MemoryTier, ObjectTooLarge
from millions.edge.storage.codec import decode_entry, encode_entry, headers_of, secondary_of
from millions.edge.storage.memory import charged_size

pytestmark = pytest.mark.timeout(30)

META = encode_entry(stored([(b"cache-control", b"max-age=60"), (b"content-type", b"image/png")]))


def test_codec_round_trips_every_stored_field() -> None:
    entry = stored(
        [(b"cache-control", b"max-age=60"), (b"vary", b"accept-encoding"), (b"etag", b'"x"')],
        request_headers=[(b"accept-encoding", b"gzip")],
    ).invalidate()
    meta = encode_entry(entry)
    assert decode_entry(meta) == entry
    assert secondary_of(meta) == entry.secondary_key != b""
    assert headers_of(meta) == entry.headers


@given(st.binary(max_size=200))
def test_codec_refuses_garbage_with_a_clear_error(blob: bytes) -> None:
    try:
        decode_entry.__wrapped__(blob)
    except CorruptMetadata:
        pass


def test_codec_refuses_truncated_metadata() -> None:
    with pytest.raises(CorruptMetadata):
        decode_entry(META[:-1])
    with pytest.raises(CorruptMetadata):
        decode_entry(META + b"x")


def test_lru_evicts_least_recently_used_under_an_exact_byte_budget() -> None:
    body = b"x" * 1000
    one = charged_size(b"/a", META, body)
    tier = MemoryTier(max_bytes=3 * one)
    for key in (b"/a", b"/b", b"/c"):
        tier.put(key, b"", META, body)
    assert tier.counters.stored_bytes == 3 * one
    assert tier.counters.evictions == 0
    assert tier.read_body(b"/a", b"") == body  # /a is now the most recent
    tier.put(b"/d", b"", META, body)
    assert sorted(tier.primary_keys()) == [b"/a", b"/c", b"/d"]
    assert tier.counters.evictions == 1
    assert tier.counters.stored_bytes == 3 * one
    assert tier.counters.objects == 3


def test_one_byte_over_the_budget_evicts() -> None:
    body = b"x" * 1000
    one = charged_size(b"/a", META, body)
    tier = MemoryTier(max_bytes=2 * one)
    tier.put(b"/a", b"", META, body)
    tier.put(b"/b", b"", META, body + b"y")
    assert list(tier.primary_keys()) == [b"/b"]
    assert tier.counters.stored_bytes == one + 1


def test_replacing_a_variant_keeps_accounting_exact() -> None:
    tier = MemoryTier(max_bytes=10**6)
    tier.put(b"/a", b"gzip", META, b"1" * 100)
    tier.put(b"/a", b"br", META, b"2" * 50)
    tier.put(b"/a", b"gzip", META, b"3" * 10)
    assert tier.counters.objects == 2
    assert tier.counters.stored_bytes == charged_size(b"/a", META, b"2" * 50) + charged_size(
        b"/a", META, b"3" * 10
    )
    assert tier.read_body(b"/a", b"gzip") == b"3" * 10
    assert tier.read_body(b"/a", b"identity") is None
    assert tier.counters.hits == 1 and tier.counters.misses == 1
    assert tier.remove_variant(b"/a", b"br")
    assert tier.remove(b"/a") == 1
    assert tier.counters.stored_bytes == 0 and tier.counters.objects == 0


def test_set_meta_changes_metadata_and_accounting() -> None:
    tier = MemoryTier(max_bytes=10**6)
    tier.put(b"/a", b"", META, b"body")
    stale = encode_entry(decode_entry(META).invalidate())
    assert tier.set_meta(b"/a", b"", stale)
    assert tier.variants(b"/a") == [stale]
    assert tier.counters.stored_bytes == charged_size(b"/a", stale, b"body")
    assert not tier.set_meta(b"/missing", b"", stale)


def test_an_object_larger_than_the_tier_is_refused() -> None:
    tier = MemoryTier(max_bytes=1000)
    with pytest.raises(ObjectTooLarge):
        tier.put(b"/big", b"", META, b"x" * 1000)
    assert tier.counters.objects == 0


def test_memory_cost_of_20000_objects_of_1_kib() -> None:
    """Python memory held by the tier and its objects, against what it accounts and against
    the payload (body + metadata + key bytes): both within 1.5x."""
    count = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tier = MemoryTier(max_bytes=10**9)
        for i in range(count):
            key = b"http://static.example/img/%06d.png" % i
            tier.put(key, b"", bytes(bytearray(META)), os.urandom(1024))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    payload = sum(
        len(key) + len(meta) + 1024 for key in tier.primary_keys() for meta in tier.variants(key)
    )
    accounted = tier.counters.stored_bytes
    print(f"held={held} accounted={accounted} payload={payload}")
    print(f"held/accounted={held / accounted:.3f} held/payload={held / payload:.3f}")
    assert held <= 1.5 * accounted
    assert held <= 1.5 * payload
    assert accounted >= 0.9 * held  # the byte budget really bounds memory


def test_a_peek_does_not_change_recency() -> None:
    body = b"x" * 100
    one = charged_size(b"/a", META, body)
    tier = MemoryTier(max_bytes=2 * one)
    tier.put(b"/a", b"", META, body)
    tier.put(b"/b", b"", META, body)
    assert tier.variants(b"/a", touch=False) == [META]
    tier.put(b"/c", b"", META, body)
    assert sorted(tier.primary_keys()) == [b"/b", b"/c"]


def test_eviction_within_one_uri_drops_its_oldest_variant() -> None:
    body = b"x" * 100
    one = charged_size(b"/a", META, body)
    tier = MemoryTier(max_bytes=2 * one)
    tier.put(b"/a", b"1", META, body)
    tier.put(b"/a", b"2", META, body)
    tier.put(b"/a", b"3", META, body)
    assert tier.read_body(b"/a", b"1") is None
    assert tier.read_body(b"/a", b"3") == body and tier.read_body(b"/a", b"2") == body
    assert tier.counters.evictions == 1 and tier.counters.objects == 2


def test_metadata_growing_past_the_budget_evicts_the_object() -> None:
    tier = MemoryTier(max_bytes=charged_size(b"/a", META, b"x"))
    tier.put(b"/a", b"", META, b"x")
    assert tier.set_meta(b"/a", b"", META + b"longer")
    assert list(tier.primary_keys()) == []
    assert tier.counters.stored_bytes == 0 and tier.counters.evictions == 1
