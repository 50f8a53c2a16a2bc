"""The fast path for repeated plain GETs of fresh hits: same answers as the full path, and
never used once the stored object changed, went stale, or the request asks for more.

Edge on 127.0.104.1, origin on 127.0.104.2.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from edge_server_support import Origin, Route, edge_and_origin, run

from millions.edge.server import EdgeServer

pytestmark = pytest.mark.timeout(30)

CACHEABLE = [("Cache-Control", "max-age=60"), ("ETag", '"v1"'), ("Content-Type", "text/plain")]


@asynccontextmanager
async def edge_pair() -> AsyncIterator[tuple[EdgeServer, Origin, httpx.AsyncClient]]:
    async with edge_and_origin(edge_host="127.0.104.1", origin_host="127.0.104.2") as pair:
        yield pair


def fast_hits(edge: EdgeServer) -> int:
    return len(edge.handler._fast_hits)


def test_repeated_hits_answer_like_the_full_path() -> None:
    async def scenario() -> None:
        async with edge_pair() as (edge, origin, client):
            origin.routes["/a"] = Route(b"asset-a", CACHEABLE)
            assert (await client.get("/a")).headers["x-cache"] == "MISS"
            full = await client.get("/a")  # the full path answers and remembers it
            assert fast_hits(edge) == 1
            fast = await client.get("/a")
            assert (fast.status_code, fast.content) == (200, b"asset-a")
            strip = {"age", "date"}
            assert {k: v for k, v in fast.headers.items() if k not in strip} == {
                k: v for k, v in full.headers.items() if k not in strip
            }
            assert fast.headers["x-cache"] == "HIT" and int(fast.headers["age"]) >= 0
            assert edge.stats.responses[b"HIT"] == 2
            assert edge.store.stats().memory.hits >= 2
            assert origin.count("/a") == 1

    run(scenario())


def test_purges_and_new_responses_end_the_fast_path() -> None:
    async def scenario() -> None:
        async with edge_pair() as (edge, origin, client):
            origin.routes["/p"] = Route(b"one", CACHEABLE)
            for _ in range(3):
                await client.get("/p")
            key = next(iter(edge.handler._fast_hits.values())).primary
            await edge.store.purge(key, soft=True)  # stale now: must be revalidated
            origin.routes["/p"] = Route(b"two", [("Cache-Control", "max-age=60")])
            after_soft = await client.get("/p")
            assert after_soft.headers["x-cache"] != "HIT" and after_soft.content == b"two"
            assert (await client.get("/p")).content == b"two"
            await edge.store.purge(key)  # hard
            origin.routes["/p"] = Route(b"three", [("Cache-Control", "max-age=60")])
            after_hard = await client.get("/p")
            assert (after_hard.headers["x-cache"], after_hard.content) == ("MISS", b"three")

    run(scenario())


def test_conditional_range_and_credentialed_requests_take_the_full_path() -> None:
    async def scenario() -> None:
        async with edge_pair() as (_, origin, client):
            origin.routes["/c"] = Route(b"0123456789", CACHEABLE)
            for _ in range(3):
                await client.get("/c")
            not_modified = await client.get("/c", headers={"If-None-Match": '"v1"'})
            assert not_modified.status_code == 304
            partial = await client.get("/c", headers={"Range": "bytes=2-4"})
            assert (partial.status_code, partial.content) == (206, b"234")
            no_cache = await client.get("/c", headers={"Cache-Control": "no-cache"})
            assert no_cache.headers["x-cache"] != "HIT"  # revalidated with the origin
            assert origin.count("/c") == 2

    run(scenario())


def test_vary_responses_never_use_the_fast_path() -> None:
    async def scenario() -> None:
        async with edge_pair() as (edge, origin, client):
            origin.routes["/v"] = Route(b"plain", [*CACHEABLE, ("Vary", "Accept-Language")])
            for _ in range(3):
                response = await client.get("/v")
                assert response.content == b"plain"
            assert fast_hits(edge) == 0

    run(scenario())


def test_an_expired_object_leaves_the_fast_path() -> None:
    async def scenario() -> None:
        async with edge_pair() as (edge, origin, client):
            origin.routes["/e"] = Route(b"short", [("Cache-Control", "max-age=1")])
            await client.get("/e")
            await client.get("/e")
            assert fast_hits(edge) == 1
            deadline = asyncio.get_running_loop().time() + 5
            while (await client.get("/e")).headers["x-cache"] == "HIT":
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
            assert origin.count("/e") == 2  # refetched once the second went by
            assert fast_hits(edge) <= 1

    run(scenario())


def test_an_evicted_object_s_fast_hit_is_forgotten_with_its_segment() -> None:
    """A fast hit keeps a view of its body in the memory tier's arena; when eviction drops
    that segment the fast hit goes too, so the view cannot hold memory past the budget."""

    async def scenario() -> None:
        async with edge_and_origin(20_000, edge_host="127.0.104.1", origin_host="127.0.104.2") as (
            edge,
            origin,
            client,
        ):
            origin.routes["/hot"] = Route(b"h" * 1000, CACHEABLE)
            await client.get("/hot")
            await client.get("/hot")
            assert fast_hits(edge) == 1
            for index in range(40):  # about twice the budget of other objects, never re-read
                origin.routes[f"/cold/{index}"] = Route(b"c" * 1000, CACHEABLE)
                await client.get(f"/cold/{index}")
            assert edge.store.stats().memory.evictions > 0
            assert fast_hits(edge) == 0
            again = await client.get("/hot")
            assert (again.status_code, again.content) == (200, b"h" * 1000)

    run(scenario())
