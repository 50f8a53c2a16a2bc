"""The memory tier: a byte-bounded arena of segments with approximate LRU, variant
bookkeeping, zero-copy views, and memory cost."""

from __future__ import annotations

import gc
import os
import tracemalloc

import pytest
from edge_support import stored
from hypothesis import given
from hypothesis import strategies as st

from millions.edge.storage import CorruptMetadata, MemoryTier, ObjectTooLarge
from millions.edge.storage.codec import decode_entry, encode_entry, headers_of, secondary_of
from millions.edge.storage.memory import charged_size, segment_of

pytestmark = pytest.mark.timeout(30)

META = encode_entry(stored([(b"cache-control", b"max-age=60"), (b"content-type", b"image/png")]))


def variant(accept: bytes) -> tuple[bytes, bytes]:
    """(secondary key, metadata) of one Vary: accept variant."""
    meta = encode_entry(
        stored(
            [(b"cache-control", b"max-age=60"), (b"vary", b"accept")],
            request_headers=[(b"accept", accept)],
        )
    )
    return secondary_of(meta), meta


def test_codec_round_trips_every_stored_field() -> None:
    entry = stored(
        [(b"cache-control", b"max-age=60"), (b"vary", b"accept-encoding"), (b"etag", b'"x"')],
        request_headers=[(b"accept-encoding", b"gzip")],
    ).invalidate()
    meta = encode_entry(entry)
    assert decode_entry(meta) == entry
    assert secondary_of(meta) == entry.secondary_key != b""
    assert headers_of(meta) == entry.headers


def test_codec_stores_common_names_as_codes_and_others_literally() -> None:
    common = stored([(b"cache-control", b"max-age=60"), (b"content-type", b"text/plain")])
    rare = stored([(b"cache-control", b"max-age=60"), (b"x-rare-field", b"text/plain")])
    long_value = stored([(b"cache-control", b"max-age=60"), (b"link", b"<x>" * 30_000)])
    for entry in (common, rare, long_value):
        assert decode_entry(encode_entry(entry)) == entry
    # a known name costs 3 bytes before its value, a literal one 7 plus the name
    assert len(encode_entry(rare)) - len(encode_entry(common)) == 4 + len(b"x-rare-field")


def test_codec_stores_generated_dates_as_seconds_and_others_as_sent() -> None:
    fixdate = b"Tue, 14 Nov 2023 22:13:20 GMT"
    as_sent = [
        b"Tue, 14 Nov 2023 22:13:20 gmt",  # not how senders generate it: kept as sent
        b"Tuesday, 14-Nov-23 22:13:20 GMT",
        b"Wed, 14 Nov 2023 22:13:20 GMT",  # the wrong weekday does not round-trip
        b"not a date",
    ]
    dated = stored([(b"cache-control", b"max-age=60"), (b"last-modified", fixdate)])
    assert decode_entry(encode_entry(dated)) == dated
    for value in as_sent:
        entry = stored([(b"cache-control", b"max-age=60"), (b"last-modified", value)])
        assert decode_entry(encode_entry(entry)) == entry
        assert len(encode_entry(entry)) == len(encode_entry(dated)) - 5 + 3 + len(value)


def test_codec_refuses_an_unknown_name_code() -> None:
    meta = encode_entry(stored([(b"cache-control", b"max-age=60")]))
    blob = bytearray(meta)
    first_header = meta.index(b"max-age=60") - 3  # its code, then its value's length
    assert blob[first_header] != 0
    for bad_code in (250, 0x80, 0x7F):
        blob[first_header] = bad_code
        with pytest.raises(CorruptMetadata):
            decode_entry(bytes(blob))


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


def test_many_objects_stay_within_the_budget_and_the_oldest_go_first() -> None:
    """Segments of many records: eviction drops whole old segments, never the recent ones,
    and what is charged never exceeds the budget."""
    body = b"b" * 500
    tier = MemoryTier(max_bytes=200_000)
    for i in range(2000):
        tier.put(b"/%d" % i, b"", META, body)
        assert tier.counters.stored_bytes <= tier.max_bytes
    kept = sorted(int(key[1:]) for key in tier.primary_keys())
    assert kept == list(range(2000 - len(kept), 2000))  # a suffix: FIFO without hits
    assert 0.8 * tier.max_bytes < tier.counters.stored_bytes
    assert tier.counters.objects == len(kept) == 2000 - tier.counters.evictions
    assert all(tier.variants(b"/%d" % i, touch=False) == [META] for i in kept)
    assert tier.read_body(b"/1999", b"") == body


def test_hot_objects_survive_a_scan_of_cold_ones() -> None:
    """Approximate LRU: objects hit while they age are copied to the head and outlive a
    stream of objects that are stored once and never read."""
    body = b"h" * 500
    tier = MemoryTier(max_bytes=100_000)
    hot = [b"/hot/%d" % i for i in range(10)]
    for key in hot:
        tier.put(key, b"", META, body)
    for i in range(5000):
        tier.put(b"/cold/%d" % i, b"", META, body)
        if i % 20 == 0:
            for key in hot:
                assert tier.read_body(key, b"") == body
    assert all(key in set(tier.primary_keys()) for key in hot)
    assert tier.counters.stored_bytes <= tier.max_bytes
    assert tier.counters.evictions > 4000


def test_variants_of_one_uri_are_kept_apart() -> None:
    (gzip, gzip_meta), (br, br_meta) = variant(b"gzip"), variant(b"br")
    tier = MemoryTier(max_bytes=10**6)
    tier.put(b"/a", gzip, gzip_meta, b"1" * 100)
    tier.put(b"/a", br, br_meta, b"2" * 50)
    tier.put(b"/a", gzip, gzip_meta, b"3" * 10)  # replaces the first
    assert tier.counters.objects == 2
    assert sorted(tier.variants(b"/a")) == sorted([gzip_meta, br_meta])
    assert tier.read_body(b"/a", gzip) == b"3" * 10
    assert tier.read_body(b"/a", b"identity") is None
    assert tier.counters.hits == 1 and tier.counters.misses == 1
    assert tier.only_variant(b"/a") is None  # not a fast-path object
    assert tier.remove_variant(b"/a", br)
    assert tier.variants(b"/a") == [gzip_meta]
    assert tier.remove(b"/a") == 1
    assert tier.counters.objects == 0 and tier.variants(b"/a") == []


def test_replaced_and_removed_records_stay_charged_until_their_segment_goes() -> None:
    """The budget counts what is held: a replaced or purged record's bytes are held (and
    charged) until eviction drops its segment."""
    tier = MemoryTier(max_bytes=10**6)
    tier.put(b"/a", b"", META, b"1" * 100)
    tier.put(b"/a", b"", META, b"3" * 10)
    assert tier.counters.objects == 1
    charged = charged_size(b"/a", META, b"1" * 100) + charged_size(b"/a", META, b"3" * 10)
    assert tier.counters.stored_bytes == charged
    assert tier.remove(b"/a") == 1
    assert tier.counters.objects == 0 and tier.counters.stored_bytes == charged
    assert tier.remove(b"/a") == 0 and not tier.remove_variant(b"/a", b"")


def test_a_metadata_blob_for_another_secondary_key_is_refused() -> None:
    gzip, gzip_meta = variant(b"gzip")
    tier = MemoryTier(max_bytes=10**6)
    with pytest.raises(ValueError):
        tier.put(b"/a", b"", gzip_meta, b"body")
    tier.put(b"/a", gzip, gzip_meta, b"body")
    assert tier.counters.objects == 1


def test_set_meta_marks_stale_and_ends_fast_hits() -> None:
    tier = MemoryTier(max_bytes=10**6)
    tier.put(b"/a", b"", META, b"body")
    found = tier.only_variant(b"/a")
    assert found is not None and found[1] == b"body"
    assert tier.hit_if_current(b"/a", found[0])
    stale = encode_entry(decode_entry(META).invalidate())
    assert tier.set_meta(b"/a", b"", stale)
    assert tier.variants(b"/a") == [stale]
    assert tier.read_body(b"/a", b"") == b"body"
    assert not tier.hit_if_current(b"/a", found[0])  # the handle no longer matches
    assert tier.counters.stored_bytes == charged_size(b"/a", META, b"body") + charged_size(
        b"/a", stale, b"body"
    )
    assert not tier.set_meta(b"/missing", b"", stale)


def test_fast_hit_handles_end_with_replacement_purge_and_eviction() -> None:
    body = b"x" * 100
    tier = MemoryTier(max_bytes=2 * charged_size(b"/a", META, body))
    dropped: list[int] = []
    tier.on_segment_dropped = dropped.append
    tier.put(b"/a", b"", META, body)
    found = tier.only_variant(b"/a")
    assert found is not None and tier.hit_if_current(b"/a", found[0])
    tier.put(b"/a", b"", META, body)  # replaced by an equal object: a new record
    assert not tier.hit_if_current(b"/a", found[0])
    found = tier.only_variant(b"/a")
    assert found is not None
    tier.put(b"/b", b"", META, body)
    tier.put(b"/c", b"", META, body)  # evicts /a
    assert not tier.hit_if_current(b"/a", found[0])
    assert segment_of(found[0]) in dropped  # so a holder of its view can let it go
    found = tier.only_variant(b"/c")
    assert found is not None and tier.remove(b"/c") == 1
    assert not tier.hit_if_current(b"/c", found[0])


def test_read_body_checks_the_secondary_key_on_the_fast_path() -> None:
    (gzip, gzip_meta), (br, _) = variant(b"gzip"), variant(b"br")
    tier = MemoryTier(max_bytes=10**6)
    tier.put(b"/v", gzip, gzip_meta, b"zipped")
    tier.put(b"/p", b"", META, b"plain")
    assert tier.read_body(b"/v", gzip) == b"zipped"
    assert tier.read_body(b"/v", br) is None and tier.read_body(b"/v", b"") is None
    assert tier.read_body(b"/p", b"") == b"plain" and tier.read_body(b"/p", gzip) is None
    assert (tier.counters.hits, tier.counters.misses) == (2, 3)


def test_a_view_stays_valid_after_its_segment_is_evicted() -> None:
    """A body handed out is a view into a segment; evicting the segment unindexes it but
    never reuses its memory while the view lives."""
    first = os.urandom(1000)
    tier = MemoryTier(max_bytes=3 * charged_size(b"/0", META, first))
    tier.put(b"/0", b"", META, first)
    view = tier.read_body(b"/0", b"")
    assert isinstance(view, memoryview)
    for i in range(1, 50):
        tier.put(b"/%d" % i, b"", META, os.urandom(1000))
    gc.collect()
    assert tier.read_body(b"/0", b"") is None and tier.counters.evictions >= 47
    assert bytes(view) == first


def test_eviction_hands_the_metadata_to_the_hook() -> None:
    body = b"x" * 100
    evicted: list[tuple[bytes, bytes]] = []
    tier = MemoryTier(
        max_bytes=2 * charged_size(b"/a", META, body),
        on_evict=lambda primary, meta: evicted.append((primary, meta)),
    )
    for key in (b"/a", b"/b", b"/c"):
        tier.put(key, b"", META, body)
    assert evicted == [(b"/a", META)]
    tier.remove(b"/b")  # an explicit removal is not an eviction
    assert evicted == [(b"/a", META)]


def test_an_object_larger_than_the_tier_is_refused() -> None:
    tier = MemoryTier(max_bytes=1000)
    with pytest.raises(ObjectTooLarge):
        tier.put(b"/big", b"", META, b"x" * 1000)
    assert tier.counters.objects == 0


def test_memory_cost_of_20000_objects_of_1_kib() -> None:
    """Memory held by the tier (Python objects plus the arena's bytes), against what it
    accounts and against the payload (body + metadata + key bytes): within 1.15x."""
    count = 20_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tier = MemoryTier(max_bytes=10**9)
        for i in range(count):
            key = b"http://static.example/img/%06d.png" % i
            tier.put(key, b"", META, os.urandom(1024))
        held = tracemalloc.get_traced_memory()[0] - before + tier.arena_bytes
    finally:
        tracemalloc.stop()
    payload = sum(
        len(key) + len(meta) + 1024 for key in tier.primary_keys() for meta in tier.variants(key)
    )
    accounted = tier.counters.stored_bytes
    print(f"held={held} accounted={accounted} payload={payload}")
    print(f"held/accounted={held / accounted:.3f} held/payload={held / payload:.3f}")
    assert held <= 1.15 * payload
    assert held <= accounted  # the byte budget really bounds memory


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
    (one_key, one_meta), (two_key, two_meta), (three_key, three_meta) = (
        variant(b"1"),
        variant(b"2"),
        variant(b"3"),
    )
    tier = MemoryTier(max_bytes=2 * charged_size(b"/a", one_meta, body))
    tier.put(b"/a", one_key, one_meta, body)
    tier.put(b"/a", two_key, two_meta, body)
    tier.put(b"/a", three_key, three_meta, body)
    assert tier.read_body(b"/a", one_key) is None
    assert tier.read_body(b"/a", three_key) == body and tier.read_body(b"/a", two_key) == body
    assert tier.counters.evictions == 1 and tier.counters.objects == 2


def test_metadata_growing_past_the_budget_evicts_the_object() -> None:
    tier = MemoryTier(max_bytes=charged_size(b"/a", META, b"x"))
    tier.put(b"/a", b"", META, b"x")
    assert tier.set_meta(b"/a", b"", META + b"longer")
    assert list(tier.primary_keys()) == []
    assert tier.counters.objects == 0 and tier.counters.evictions == 1
    assert tier.counters.stored_bytes <= tier.max_bytes
