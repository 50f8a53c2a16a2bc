"""The tiered store: placement, promotion, purges, zero-copy hits, concurrency."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from edge_support import stored

from millions.edge.entry import CachedResponse
from millions.edge.headers import Header
from millions.edge.storage import DiskBody, TieredStore

pytestmark = pytest.mark.timeout(30)

SMALL = 1024


def entry(*extra: Header, request_headers: Sequence[Header] = ()) -> CachedResponse:
    return stored([(b"cache-control", b"max-age=60"), *extra], request_headers=request_headers)


async def open_store(root: Path, memory_bytes: int = 10**6) -> TieredStore:
    return await TieredStore.open(
        root, memory_bytes=memory_bytes, disk_bytes=10**8, small_object_bytes=SMALL
    )


async def test_small_objects_live_in_memory_and_on_disk(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.put(b"/s", entry(), b"small")
    assert store.memory.variants(b"/s") and store.disk.counters.objects == 1
    assert store.disk.variants(b"/s") == []  # the disk index lends memory the metadata
    assert store.variants(b"/s") == [entry()]
    assert await store.body(b"/s", b"") == b"small"
    stats = store.stats()
    assert stats.memory.hits == 1 and stats.disk.hits == 0
    assert stats.memory.objects == 1 and stats.disk.objects == 1
    assert stats.memory.stored_bytes > 5 and stats.disk.stored_bytes > 5


async def test_large_objects_live_on_disk_only_and_leave_by_sendfile(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    payload = os.urandom(SMALL * 10)
    await store.put(b"/l", entry(), payload)
    assert store.memory.variants(b"/l") == []
    body = await store.body(b"/l", b"")
    assert isinstance(body, DiskBody)

    received = asyncio.get_running_loop().create_future()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.set_result(await reader.readexactly(len(payload)))
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        with body:
            sent = await asyncio.get_running_loop().sendfile(
                writer.transport, body.file, body.offset, body.length
            )
        assert sent == len(payload)
        assert await asyncio.wait_for(received, 5) == payload
        writer.close()
        await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()


async def test_streamed_body_is_committed_with_its_entry(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    writer = await store.begin(b"/stream", b"")
    for _ in range(8):
        await writer.write(b"c" * 4096)
    await writer.commit(entry())
    body = await store.body(b"/stream", b"")
    assert isinstance(body, DiskBody)
    with body:
        assert body.read_all() == b"c" * 4096 * 8
    aborted = await store.begin(b"/gone", b"")
    await aborted.write(b"partial")
    await aborted.abort()
    assert store.variants(b"/gone") == []


async def test_disk_hit_after_restart_is_promoted_to_memory(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.put(b"/s", entry(), b"small")
    restarted = await open_store(tmp_path)
    assert restarted.memory.variants(b"/s") == []
    assert restarted.variants(b"/s") == [entry()]
    assert await restarted.body(b"/s", b"") == b"small"
    assert await restarted.body(b"/s", b"") == b"small"
    stats = restarted.stats()
    assert stats.disk.hits == 1
    assert stats.memory.misses == 1 and stats.memory.hits == 1
    assert restarted.memory.variants(b"/s")


async def test_memory_eviction_falls_back_to_disk(tmp_path: Path) -> None:
    store = await open_store(tmp_path, memory_bytes=1500)
    await store.put(b"/a", entry(), b"a" * 700)
    await store.put(b"/b", entry(), b"b" * 700)
    assert store.stats().memory.evictions == 1
    assert store.memory.variants(b"/a") == []
    assert await store.body(b"/a", b"") == b"a" * 700
    assert store.stats().disk.hits == 1


async def test_variants_combine_both_tiers(tmp_path: Path) -> None:
    vary = (b"vary", b"accept-encoding")
    gzip = entry(vary, request_headers=[(b"accept-encoding", b"gzip")])
    plain = entry(vary)
    store = await open_store(tmp_path)
    await store.put(b"/v", gzip, b"zipped")
    await store.put(b"/v", plain, b"p" * (SMALL + 1))
    assert {e.secondary_key for e in store.variants(b"/v")} == {
        gzip.secondary_key,
        plain.secondary_key,
    }
    assert store.variants(b"/nothing") == []
    assert store.stats().misses == 1


async def test_hard_purge_by_exact_key(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.put(b"/a", entry(), b"a")
    await store.put(b"/a/b", entry(), b"b" * (SMALL + 1))
    assert await store.purge(b"/a") == 1
    assert store.variants(b"/a") == []
    assert await store.body(b"/a", b"") is None
    assert len(store.variants(b"/a/b")) == 1
    restarted = await open_store(tmp_path)
    assert restarted.variants(b"/a") == []


async def test_soft_purge_marks_stale_and_keeps_the_body(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.put(b"/s", entry(), b"small")
    await store.put(b"/l", entry(), b"l" * (SMALL + 1))
    assert await store.purge_prefix(b"/", soft=True) == 2
    assert [e.invalidated for e in store.variants(b"/s")] == [True]
    assert [e.invalidated for e in store.variants(b"/l")] == [True]
    assert await store.body(b"/s", b"") == b"small"
    restarted = await open_store(tmp_path)
    assert [e.invalidated for e in restarted.variants(b"/s")] == [True]


async def test_prefix_purge(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    for uri in (b"http://a.test/img/1", b"http://a.test/img/2", b"http://a.test/css/x"):
        await store.put(uri, entry(), uri)
    await store.put(b"http://a.test/img/big", entry(), b"x" * (SMALL + 1))
    assert await store.purge_prefix(b"http://a.test/img/") == 3
    assert store.variants(b"http://a.test/img/1") == []
    assert store.variants(b"http://a.test/img/big") == []
    assert len(store.variants(b"http://a.test/css/x")) == 1
    assert store.stats().disk.objects == 1 and store.stats().memory.objects == 1


async def test_a_path_prefix_purges_that_path_on_every_host(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    for uri in (b"http://a.test/img/1", b"http://b.test:8080/img/2", b"http://a.test/css/img"):
        await store.put(uri, entry(), uri)
    assert await store.purge_prefix(b"/img/") == 2
    assert store.variants(b"http://a.test/img/1") == []
    assert store.variants(b"http://b.test:8080/img/2") == []
    assert len(store.variants(b"http://a.test/css/img")) == 1


async def test_surrogate_key_purge_hard_and_soft(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.put(b"/p1", entry((b"surrogate-key", b"photo-1 user-7")), b"1")
    await store.put(b"/p2", entry((b"cache-tag", b"photo-2,user-7")), b"2" * (SMALL + 1))
    await store.put(b"/other", entry((b"surrogate-key", b"photo-3")), b"3")
    assert await store.purge_surrogate_key(b"user-7", soft=True) == 2
    assert [e.invalidated for e in store.variants(b"/p1")] == [True]
    assert [e.invalidated for e in store.variants(b"/p2")] == [True]
    assert [e.invalidated for e in store.variants(b"/other")] == [False]
    assert await store.purge_surrogate_key(b"photo-2") == 1
    assert store.variants(b"/p2") == []
    assert await store.purge_surrogate_key(b"no-such-key") == 0
    assert len(store.variants(b"/p1")) == 1


async def test_replace_updates_metadata_in_both_tiers(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.put(b"/s", entry(), b"small")
    fresher = stored([(b"cache-control", b"max-age=600")])
    assert await store.replace(b"/s", fresher)
    assert store.variants(b"/s") == [fresher]
    assert (await open_store(tmp_path)).variants(b"/s") == [fresher]
    assert not await store.replace(b"/missing", fresher)


async def test_concurrent_tasks_leave_tiers_consistent(tmp_path: Path) -> None:
    store = await open_store(tmp_path, memory_bytes=20_000)
    keys = [b"/k%d" % i for i in range(12)]
    rng = random.Random(7)

    async def worker(seed: int) -> None:
        for step in range(25):
            key = rng.choice(keys)
            action = (seed + step) % 5
            if action == 0:
                await store.purge(key, soft=step % 2 == 0)
            elif action == 1:
                await store.purge_prefix(b"/k1")
            else:
                size = rng.choice((100, 900, SMALL + 100))
                await store.put(key, entry(), key * (size // len(key)))
            found = await store.body(key, b"")
            data: bytes | None
            if isinstance(found, DiskBody):
                with found:
                    data = found.read_all()
            else:
                data = found
            assert data is None or data == key * (len(data) // len(key))

    await asyncio.gather(*(worker(seed) for seed in range(20)))

    files = list((tmp_path / "objects").glob("*/*"))
    assert store.disk.counters.objects == len(files)
    assert store.disk.counters.stored_bytes == sum(f.stat().st_size for f in files)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert store.memory.counters.stored_bytes <= store.memory.max_bytes
    for key in store.memory.primary_keys():
        in_memory = store.memory.read_body(key, b"")
        on_disk = store.disk.read_body(key, b"")
        assert on_disk is None or on_disk == in_memory
    restarted = await open_store(tmp_path)
    assert restarted.disk.counters.stored_bytes == store.disk.counters.stored_bytes


async def test_a_purge_during_a_disk_read_is_not_undone_by_promotion(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.put(b"/s", entry(), b"small")
    store.memory.remove(b"/s")
    open_body = store.disk.open_body

    def open_then_purged(primary: bytes, secondary: bytes) -> DiskBody | None:
        found = open_body(primary, secondary)
        store.disk.remove(primary)  # a purge that lands while the body is being read
        return found

    store.disk.open_body = open_then_purged  # type: ignore[method-assign]
    assert await store.body(b"/s", b"") == b"small"
    assert store.memory.variants(b"/s") == []
    assert store.variants(b"/s") == []


async def test_a_failed_disk_write_drops_the_older_disk_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory lends the disk index its metadata and hands it back on eviction; a new
    version that reached memory but not the disk must not leave the old file behind, or the
    new metadata would come back for the old body."""
    store = await open_store(tmp_path)
    await store.put(b"/s", entry(), b"old body")

    def broken_begin(primary: bytes, secondary: bytes) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(store.disk, "begin", broken_begin)
    new = entry((b"etag", b'"v2"'))
    await store.put(b"/s", new, b"new body")
    assert store.variants(b"/s") == [new]
    assert await store.body(b"/s", b"") == b"new body"
    assert store.disk.counters.objects == 0 and store.disk.variants(b"/s") == []
    store.memory.remove(b"/s")
    assert store.variants(b"/s") == []
