"""The edge on its tiered store: objects survive a restart on the same cache directory,
large bodies go through the disk tier, and the temporary cache directory is removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from edge_server_support import Route, run
from edge_server_support import edge_and_origin as edge_and_origin_on

from millions.edge.main import EdgeCollector
from millions.edge.storage import DEFAULT_SMALL_OBJECT_BYTES

pytestmark = pytest.mark.timeout(30)


def edge_and_origin(**options: Any) -> Any:
    """The shared harness on this module's own loopback addresses."""
    return edge_and_origin_on(edge_host="127.0.91.1", origin_host="127.0.91.2", **options)


CACHEABLE = [("Cache-Control", "max-age=600"), ("Content-Type", "text/plain")]
#: The cache key includes the Host; the restarted edge listens on another port.
HOST = {"Host": "cdn.example"}
LARGE = bytes(range(256)) * (DEFAULT_SMALL_OBJECT_BYTES // 256 * 3 + 7)  # ~3 small sizes


def test_objects_are_hits_after_a_restart_on_the_same_cache_dir(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with edge_and_origin(cache_dir=tmp_path) as (_, origin, client):
            origin.routes["/small"] = Route(b"small-body", CACHEABLE)
            origin.routes["/large"] = Route(LARGE, CACHEABLE)
            assert (await client.get("/small", headers=HOST)).headers["x-cache"] == "MISS"
            assert (await client.get("/large", headers=HOST)).headers["x-cache"] == "MISS"
        async with edge_and_origin(cache_dir=tmp_path) as (edge, origin, client):
            origin.routes["/small"] = Route(b"changed", CACHEABLE)
            origin.routes["/large"] = Route(b"changed", CACHEABLE)
            small = await client.get("/small", headers=HOST)
            large = await client.get("/large", headers=HOST)
            assert (small.headers["x-cache"], small.content) == ("HIT", b"small-body")
            assert (large.headers["x-cache"], large.content) == ("HIT", LARGE)
            assert origin.seen == []
            storage = edge.store.stats()
            assert storage.disk.hits == 2
            # the small one was promoted back to memory: the next hit comes from there
            assert (await client.get("/small", headers=HOST)).content == b"small-body"
            assert edge.store.stats().memory.hits == 1

    run(scenario())


def test_large_body_is_kept_on_disk_only_and_served_whole() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/big"] = Route(LARGE, CACHEABLE)
            miss = await client.get("/big")
            hit = await client.get("/big", headers={"Range": "bytes=100-199"})
            assert (miss.headers["x-cache"], miss.content) == ("MISS", LARGE)
            assert (hit.status_code, hit.headers["x-cache"]) == (206, "HIT")
            assert hit.content == LARGE[100:200]
            storage = edge.store.stats()
            assert (storage.memory.objects, storage.disk.objects) == (0, 1)
            assert storage.disk.stored_bytes > len(LARGE)
            assert origin.count("/big") == 1

    run(scenario())


def test_storage_metrics_per_tier() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/m"] = Route(b"metric-body", CACHEABLE)
            await client.get("/m")
            await client.get("/m")
            metrics = {
                (sample.name, sample.labels.get("tier")): sample.value
                for family in EdgeCollector(edge).collect()
                for sample in family.samples
            }
            assert metrics[("millions_edge_storage_hits_total", "memory")] == 1
            assert metrics[("millions_edge_storage_hits_total", "disk")] == 0
            assert metrics[("millions_edge_stored_objects", "memory")] == 1
            assert metrics[("millions_edge_stored_objects", "disk")] == 1
            assert metrics[("millions_edge_stored_bytes", "disk")] > len(b"metric-body")
            assert ("millions_edge_evictions_total", "disk") in metrics
            assert metrics[("millions_edge_storage_misses_total", None)] >= 1

    run(scenario())


def test_temporary_cache_dir_is_removed_when_the_edge_stops() -> None:
    async def scenario() -> Path:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/t"] = Route(b"temp", CACHEABLE)
            await client.get("/t")
            assert edge._temp_dir is not None
            directory = Path(edge._temp_dir.name)
            assert edge.store.stats().disk.objects == 1
        return directory

    assert not run(scenario()).exists()
