"""The read cache contract (in-process LRU and Redis), and read-your-writes through routers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio
from shard_support import ShardEnv, require_service, shard_env

from millions.shards.cache.base import ReadCache
from millions.shards.cache.memory import MemoryReadCache
from millions.shards.cache.redis import RedisReadCache
from millions.shards.config import CacheConfig
from services import REDIS_URL

pytestmark = pytest.mark.timeout(30)

Opener = Callable[[float], ReadCache]


async def delete_prefix(prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture(params=["memory", "redis"])
async def open_cache(request: pytest.FixtureRequest) -> AsyncIterator[Opener]:
    opened: list[ReadCache] = []
    prefix = f"millions-test:{uuid.uuid4().hex}:"
    if request.param == "redis":
        require_service("redis")

    def opener(ttl_s: float) -> ReadCache:
        cache: ReadCache
        if request.param == "memory":
            cache = MemoryReadCache(ttl_s=ttl_s, max_entries=100)
        else:
            cache = RedisReadCache(REDIS_URL, ttl_s=ttl_s, prefix=prefix)
        opened.append(cache)
        return cache

    try:
        yield opener
    finally:
        for cache in opened:
            await cache.close()
        if request.param == "redis":
            await delete_prefix(prefix)


async def test_a_miss_then_a_fill_then_a_hit(open_cache: Opener) -> None:
    cache = open_cache(30)
    miss = await cache.get("user:1", "q1")
    assert miss.value is None
    await cache.fill("user:1", "q1", b"rows", miss.token)
    assert (await cache.get("user:1", "q1")).value == b"rows"
    assert (await cache.get("user:1", "q2")).value is None
    assert (await cache.get("user:2", "q1")).value is None


async def test_invalidation_drops_every_entry_of_its_tag_only(open_cache: Opener) -> None:
    cache = open_cache(30)
    for tag, query in (("a", "q1"), ("a", "q2"), ("b", "q1")):
        await cache.fill(tag, query, f"{tag}{query}".encode(), (await cache.get(tag, query)).token)
    await cache.invalidate("a")
    assert (await cache.get("a", "q1")).value is None
    assert (await cache.get("a", "q2")).value is None
    assert (await cache.get("b", "q1")).value == b"bq1"


async def test_a_fill_racing_a_write_cannot_bring_back_the_old_value(open_cache: Opener) -> None:
    cache = open_cache(30)
    slow_reader = await cache.get("a", "q")  # a read starts and misses
    await cache.invalidate("a")  # a write commits and invalidates
    await cache.fill("a", "q", b"old", slow_reader.token)  # the slow read fills late
    assert (await cache.get("a", "q")).value is None
    fresh = await cache.get("a", "q")
    await cache.fill("a", "q", b"new", fresh.token)
    assert (await cache.get("a", "q")).value == b"new"


async def test_entries_expire_after_the_ttl(open_cache: Opener) -> None:
    cache = open_cache(0.2)
    await cache.fill("a", "q", b"v", (await cache.get("a", "q")).token)
    assert (await cache.get("a", "q")).value == b"v"
    deadline = time.monotonic() + 5
    while (await cache.get("a", "q")).value is not None:
        assert time.monotonic() < deadline, "entry outlived its TTL"
        await asyncio.sleep(0.05)


async def test_the_memory_cache_is_bounded_and_evicts_least_recently_used() -> None:
    cache = MemoryReadCache(ttl_s=30, max_entries=3)
    for i in range(3):
        await cache.fill(f"t{i}", "q", b"v", (await cache.get(f"t{i}", "q")).token)
    await cache.get("t0", "q")  # t0 is now the most recently used
    await cache.fill("t3", "q", b"v", (await cache.get("t3", "q")).token)
    assert len(cache) == 3
    assert (await cache.get("t1", "q")).value is None
    assert (await cache.get("t0", "q")).value == b"v"


async def test_the_memory_cache_forgets_invalidations_but_never_accepts_a_stale_fill() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    cache = MemoryReadCache(ttl_s=30, max_entries=2, fill_window_s=10, clock=clock)
    old = await cache.get("a", "q")
    await cache.invalidate("a")
    for i in range(5):  # pushes the record for "a" out (at most max_entries are kept)
        await cache.invalidate(f"other{i}")
    await cache.fill("a", "q", b"old", old.token)
    assert (await cache.get("a", "q")).value is None
    clock.now += 11
    recent = await cache.get("b", "q")
    await cache.fill("b", "q", b"v", recent.token)
    assert (await cache.get("b", "q")).value == b"v"


@pytest.fixture
async def redis_env(tmp_path: Path) -> AsyncIterator[ShardEnv]:
    require_service("redis")
    prefix = f"millions-test:{uuid.uuid4().hex}:"
    cache = CacheConfig(engine="redis", url=REDIS_URL, ttl_s=30, prefix=prefix)
    try:
        async with shard_env("sqlite", tmp_path, cache=cache) as env:
            yield env
    finally:
        await delete_prefix(prefix)


async def test_with_redis_a_write_through_one_router_is_read_through_another(
    redis_env: ShardEnv,
) -> None:
    await redis_env.cluster().migrate()
    reader, writer = await redis_env.router(), await redis_env.router()
    await writer.insert("users", {"id": 1, "username": "ann"})
    assert (await reader.get("users", {"id": 1}, cached=True))["bio"] is None
    for value in ("a", "b", "c"):
        await writer.update("users", {"id": 1}, {"bio": value})
        assert (await reader.get("users", {"id": 1}, cached=True))["bio"] == value
