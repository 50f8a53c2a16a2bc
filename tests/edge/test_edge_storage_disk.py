"""The disk tier: restarts, streaming, corrupt files, byte budget, zero-copy reads."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest
from edge_support import stored

from millions.edge.storage import DiskBody, DiskTier, ObjectTooLarge
from millions.edge.storage.codec import decode_entry, encode_entry
from millions.edge.storage.disk import BODY_OFFSET, object_name

pytestmark = pytest.mark.timeout(30)

ENTRY = stored([(b"cache-control", b"max-age=60"), (b"content-type", b"text/plain")])
META = encode_entry(ENTRY)


def object_path(root: Path, primary: bytes, secondary: bytes = b"") -> Path:
    name = object_name(primary, secondary)
    return root / "objects" / name[:2] / name


def object_files(root: Path) -> list[Path]:
    return sorted(path for path in (root / "objects").glob("*/*"))


def test_objects_survive_a_reopen(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    tier.put(b"/a", b"", META, b"alpha")
    tier.put(b"/b", b"", META, b"beta")
    reopened = DiskTier(tmp_path, max_bytes=10**6)
    assert reopened.read_body(b"/a", b"") == b"alpha"
    assert reopened.read_body(b"/b", b"") == b"beta"
    assert [decode_entry(meta) for meta in reopened.variants(b"/a")] == [ENTRY]
    assert reopened.counters.stored_bytes == tier.counters.stored_bytes
    assert reopened.counters.stored_bytes == sum(p.stat().st_size for p in object_files(tmp_path))


def test_body_is_read_back_as_file_offset_and_length(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    tier.put(b"/a", b"", META, b"0123456789")
    body = tier.open_body(b"/a", b"")
    assert isinstance(body, DiskBody)
    with body:
        assert body.offset == BODY_OFFSET and body.length == 10
        assert os.pread(body.file.fileno(), body.length, body.offset) == b"0123456789"
    assert body.file.closed


def test_open_body_keeps_reading_the_old_object_after_a_purge(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    tier.put(b"/a", b"", META, b"old body")
    body = tier.open_body(b"/a", b"")
    assert body is not None
    assert tier.remove(b"/a") == 1
    with body:
        assert body.read_all() == b"old body"
    assert tier.open_body(b"/a", b"") is None
    assert object_files(tmp_path) == []


def test_streaming_20_mb_holds_one_chunk_at_a_time(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=100 * 2**20)
    chunk = os.urandom(64 * 1024)
    tracemalloc.start()
    try:
        writer = tier.begin(b"/video", b"")
        for _ in range(320):  # 20 MiB
            writer.write(chunk)
        writer.commit(META)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * 2**20
    body = tier.open_body(b"/video", b"")
    assert body is not None
    with body:
        assert body.length == 320 * len(chunk)
        assert os.pread(body.file.fileno(), len(chunk), body.offset + 100 * len(chunk)) == chunk


def test_abort_and_exceptions_leave_no_files(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    writer = tier.begin(b"/a", b"")
    writer.write(b"partial")
    writer.abort()
    with pytest.raises(RuntimeError), tier.begin(b"/b", b"") as failing:
        failing.write(b"partial")
        raise RuntimeError("origin went away")
    assert list((tmp_path / "tmp").iterdir()) == []
    assert object_files(tmp_path) == []
    assert tier.variants(b"/a") == [] and tier.variants(b"/b") == []


def test_a_body_larger_than_the_tier_is_refused_while_streaming(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10_000)
    writer = tier.begin(b"/big", b"")
    writer.write(b"x" * 5000)
    with pytest.raises(ObjectTooLarge):
        writer.write(b"x" * 5000)
    assert list((tmp_path / "tmp").iterdir()) == []


def test_commit_refuses_metadata_for_another_variant(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    writer = tier.begin(b"/a", b"other-secondary")
    writer.write(b"x")
    with pytest.raises(ValueError, match="secondary"):
        writer.commit(META)
    assert object_files(tmp_path) == []


def test_corrupt_and_truncated_files_are_dropped_on_open(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    keys = (b"/good", b"/truncated", b"/badcrc", b"/badmagic", b"/renamed")
    for key in keys:
        tier.put(key, b"", META, b"body of " + key)
    paths = {key: object_path(tmp_path, key) for key in keys}
    paths[b"/truncated"].write_bytes(paths[b"/truncated"].read_bytes()[:-3])
    damaged = bytearray(paths[b"/badcrc"].read_bytes())
    damaged[-1] ^= 0xFF
    paths[b"/badcrc"].write_bytes(bytes(damaged))
    paths[b"/badmagic"].write_bytes(b"XXXXXXXX" + paths[b"/badmagic"].read_bytes()[8:])
    paths[b"/renamed"].rename(paths[b"/renamed"].with_name("0" * 32))
    (tmp_path / "objects" / "zz").mkdir()
    (tmp_path / "objects" / "zz" / "empty").write_bytes(b"")
    (tmp_path / "tmp" / "leftover").write_bytes(b"half a write")

    reopened = DiskTier(tmp_path, max_bytes=10**6)
    assert list(reopened.primary_keys()) == [b"/good"]
    assert reopened.read_body(b"/good", b"") == b"body of /good"
    assert object_files(tmp_path) == [paths[b"/good"]]
    assert list((tmp_path / "tmp").iterdir()) == []


def test_byte_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    body = b"x" * 1000
    tier = DiskTier(tmp_path, max_bytes=10**6)
    tier.put(b"/a", b"", META, body)
    one = tier.counters.stored_bytes
    tier = DiskTier(tmp_path / "budget", max_bytes=3 * one)
    for key in (b"/a", b"/b", b"/c"):
        tier.put(key, b"", META, body)
    assert tier.read_body(b"/a", b"") == body
    tier.put(b"/d", b"", META, body)
    assert sorted(tier.primary_keys()) == [b"/a", b"/c", b"/d"]
    assert tier.counters.evictions == 1
    assert tier.counters.stored_bytes == 3 * one
    assert len(object_files(tmp_path / "budget")) == 3


def test_reopen_with_a_smaller_budget_evicts_oldest_first(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    for age, key in enumerate((b"/new", b"/mid", b"/old")):
        tier.put(key, b"", META, b"x" * 1000)
        mtime = 1_000_000 - age
        os.utime(object_path(tmp_path, key), (mtime, mtime))
    one = tier.counters.stored_bytes // 3
    smaller = DiskTier(tmp_path, max_bytes=2 * one)
    assert sorted(smaller.primary_keys()) == [b"/mid", b"/new"]
    assert smaller.counters.evictions == 1
    assert len(object_files(tmp_path)) == 2


def test_set_meta_rewrites_metadata_and_survives_a_reopen(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    tier.put(b"/a", b"", META, b"body")
    stale = encode_entry(ENTRY.invalidate())
    assert tier.set_meta(b"/a", b"", stale)
    assert not tier.set_meta(b"/missing", b"", stale)
    reopened = DiskTier(tmp_path, max_bytes=10**6)
    assert [decode_entry(m).invalidated for m in reopened.variants(b"/a")] == [True]
    assert reopened.read_body(b"/a", b"") == b"body"
    assert reopened.counters.stored_bytes == tier.counters.stored_bytes


def test_variants_of_one_uri_are_separate_files(tmp_path: Path) -> None:
    gzip = stored(
        [(b"cache-control", b"max-age=60"), (b"vary", b"accept-encoding")],
        request_headers=[(b"accept-encoding", b"gzip")],
    )
    plain = stored([(b"cache-control", b"max-age=60"), (b"vary", b"accept-encoding")])
    tier = DiskTier(tmp_path, max_bytes=10**6)
    tier.put(b"/a", gzip.secondary_key, encode_entry(gzip), b"zipped")
    tier.put(b"/a", plain.secondary_key, encode_entry(plain), b"plain")
    assert len(object_files(tmp_path)) == 2
    assert tier.read_body(b"/a", gzip.secondary_key) == b"zipped"
    assert tier.remove_variant(b"/a", gzip.secondary_key)
    assert [decode_entry(m) for m in tier.variants(b"/a")] == [plain]
    assert tier.remove(b"/a") == 1
    assert object_files(tmp_path) == []


def test_abort_after_commit_keeps_the_object(tmp_path: Path) -> None:
    tier = DiskTier(tmp_path, max_bytes=10**6)
    with pytest.raises(RuntimeError), tier.begin(b"/a", b"") as writer:
        writer.write(b"body")
        writer.commit(META)
        raise RuntimeError("the client went away after the commit")
    writer.abort()
    assert tier.read_body(b"/a", b"") == b"body"
    with pytest.raises(ValueError, match="already"):
        writer.write(b"more")


def test_a_large_tier_evicts_oldest_first_in_batches_within_its_budget(tmp_path: Path) -> None:
    """From 64 MiB a tier evicts a little more than it must per walk of its index; it still
    never exceeds the budget and still drops the least recently used first."""
    body = b"x" * (1 << 20)
    tier = DiskTier(tmp_path, max_bytes=64 << 20)
    for index in range(70):
        tier.put(b"/%d" % index, b"", META, body)
        if index == 10:
            tier.variants(b"/0")  # used: outlives /1../10
        assert tier.counters.stored_bytes <= tier.max_bytes
    kept = set(tier.primary_keys())
    assert b"/0" in kept and b"/1" not in kept and b"/69" in kept
    assert tier.counters.evictions == 70 - len(kept)
    assert tier.counters.stored_bytes == sum(
        path.stat().st_size for path in (tmp_path / "objects").glob("*/*")
    )
