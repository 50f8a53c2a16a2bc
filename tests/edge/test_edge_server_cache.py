"""The edge server against a real origin: misses, hits, HEAD, validation, invalidation,
Vary, eviction and refused cache keys."""

from __future__ import annotations

import asyncio

import pytest
from edge_server_support import EDGE_HOST, Route, edge_and_origin, run

pytestmark = pytest.mark.timeout(30)

CACHEABLE = [("Cache-Control", "max-age=60"), ("ETag", '"v1"'), ("Content-Type", "text/plain")]


def test_miss_then_hit_counts_one_origin_request() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/a"] = Route(b"asset-a", CACHEABLE)
            first = await client.get("/a")
            second = await client.get("/a")
            assert (first.status_code, first.content) == (200, b"asset-a")
            assert first.headers["x-cache"] == "MISS"
            assert second.headers["x-cache"] == "HIT"
            assert second.content == b"asset-a"
            assert second.headers["etag"] == '"v1"'
            assert int(second.headers["age"]) >= 0
            assert "1.1 edge-test" in second.headers["via"]
            assert origin.count("/a") == 1
            assert edge.stats.responses[b"HIT"] == 1

    run(scenario())


def test_not_storable_is_passed_every_time() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/private"] = Route(b"mine", [("Cache-Control", "private, max-age=60")])
            for _ in range(2):
                response = await client.get("/private")
                assert response.headers["x-cache"] == "PASS"
                assert response.content == b"mine"
            assert origin.count("/private") == 2

    run(scenario())


def test_head_is_answered_from_the_cached_get() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/h"] = Route(b"0123456789", CACHEABLE)
            miss = await client.head("/h")
            assert miss.headers["x-cache"] == "MISS"
            assert miss.headers["content-length"] == "10"
            assert miss.content == b""
            assert [seen.method for seen in origin.seen] == ["GET"]
            hit = await client.get("/h")
            assert (hit.headers["x-cache"], hit.content) == ("HIT", b"0123456789")
            assert origin.count("/h") == 1

    run(scenario())


def test_client_conditional_is_answered_by_the_edge() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/c"] = Route(b"body", CACHEABLE)
            await client.get("/c")
            not_modified = await client.get("/c", headers={"If-None-Match": '"v1"'})
            assert not_modified.status_code == 304
            assert not_modified.headers["etag"] == '"v1"'
            assert not_modified.headers["x-cache"] == "HIT"
            changed = await client.get("/c", headers={"If-None-Match": '"v0"'})
            assert (changed.status_code, changed.content) == (200, b"body")
            assert origin.count("/c") == 1

    run(scenario())


def test_stale_entry_is_revalidated_with_a_conditional_request() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/r"] = Route(b"same", [("Cache-Control", "max-age=0"), ("ETag", '"r1"')])
            assert (await client.get("/r")).headers["x-cache"] == "MISS"
            again = await client.get("/r")
            assert again.headers["x-cache"] == "REVALIDATED"
            assert again.content == b"same"
            assert origin.seen[-1].headers["If-None-Match"] == '"r1"'
            assert origin.count("/r") == 2

    run(scenario())


def test_changed_resource_replaces_the_stale_entry() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/r"] = Route(b"old", [("Cache-Control", "max-age=0"), ("ETag", '"1"')])
            await client.get("/r")
            origin.routes["/r"] = Route(b"new", [("Cache-Control", "max-age=60"), ("ETag", '"2"')])
            changed = await client.get("/r")
            assert (changed.headers["x-cache"], changed.content) == ("MISS", b"new")
            hit = await client.get("/r")
            assert (hit.headers["x-cache"], hit.content) == ("HIT", b"new")

    run(scenario())


def test_unsafe_method_invalidates_target_and_location() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/item"] = Route(b"item", CACHEABLE)
            origin.routes["/list"] = Route(b"list", CACHEABLE)
            await client.get("/item")
            await client.get("/list")
            origin.routes["/item"] = Route(b"", [*CACHEABLE, ("Location", "/list")], status=200)
            posted = await client.post("/item", content=b"x=1")
            assert posted.status_code == 200
            assert posted.headers["x-cache"] == "PASS"
            assert edge.stats.invalidations == 2
            origin.routes["/item"] = Route(b"item", CACHEABLE)
            item = await client.get("/item")
            listing = await client.get("/list")
            assert item.headers["x-cache"] == "REVALIDATED"
            assert listing.headers["x-cache"] == "REVALIDATED"
            assert origin.count("/item") == 3
            assert origin.count("/list") == 2

    run(scenario())


def test_unkeyed_override_fields_never_reach_the_origin() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/p"] = Route(b"p", CACHEABLE)
            await client.get("/p", headers={"X-Forwarded-Host": "evil.example", "X-Test": "1"})
            await client.post("/p", headers={"X-HTTP-Method-Override": "DELETE"})
            get, post = origin.seen
            assert "X-Forwarded-Host" not in get.headers
            assert get.headers["X-Test"] == "1"
            assert "X-HTTP-Method-Override" not in post.headers

    run(scenario())


def test_vary_keeps_one_variant_per_request_value() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            vary = [("Cache-Control", "max-age=60"), ("Vary", "Accept-Language")]
            origin.routes["/v"] = Route(b"english", vary)
            en = await client.get("/v", headers={"Accept-Language": "en"})
            origin.routes["/v"] = Route(b"deutsch", vary)
            de = await client.get("/v", headers={"Accept-Language": "de"})
            en_hit = await client.get("/v", headers={"Accept-Language": "en"})
            de_hit = await client.get("/v", headers={"Accept-Language": "de"})
            assert (en.content, de.content) == (b"english", b"deutsch")
            assert (en_hit.headers["x-cache"], en_hit.content) == ("HIT", b"english")
            assert (de_hit.headers["x-cache"], de_hit.content) == ("HIT", b"deutsch")
            assert origin.count("/v") == 2

    run(scenario())


def test_byte_budget_evicts_least_recently_used() -> None:
    async def scenario() -> None:
        budget = 12_000  # two 5000-byte objects with their metadata fit, three do not
        async with edge_and_origin(budget, disk_bytes=budget) as (edge, origin, client):
            for path in ("/1", "/2", "/3"):
                origin.routes[path] = Route(b"x" * 5000, [("Cache-Control", "max-age=60")])
            await client.get("/1")
            await client.get("/2")
            assert (await client.get("/1")).headers["x-cache"] == "HIT"  # /2 is now oldest
            await client.get("/3")
            storage = edge.store.stats()
            assert storage.memory.stored_bytes <= budget
            assert storage.disk.stored_bytes <= budget
            assert (storage.memory.evictions, storage.disk.evictions) == (1, 1)
            assert (await client.get("/1")).headers["x-cache"] == "HIT"
            assert (await client.get("/2")).headers["x-cache"] == "MISS"

    run(scenario())


def test_authorization_is_not_shared_unless_public() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/me"] = Route(b"me", [("Cache-Control", "max-age=60")])
            auth = {"Authorization": "Bearer t"}
            assert (await client.get("/me", headers=auth)).headers["x-cache"] == "PASS"
            assert (await client.get("/me")).headers["x-cache"] == "MISS"

    run(scenario())


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(EDGE_HOST, port)
    writer.write(request)
    await writer.drain()
    data = await reader.read(65536)
    writer.close()
    return data


def test_request_that_cannot_be_keyed_safely_gets_400() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, _):
            userinfo = await _raw(edge.port, b"GET /x HTTP/1.1\r\nHost: me@good.example\r\n\r\n")
            assert userinfo.startswith(b"HTTP/1.1 400")
            bad_escape = await _raw(edge.port, b"GET /x%zz HTTP/1.1\r\nHost: good.example\r\n\r\n")
            assert bad_escape.startswith(b"HTTP/1.1 400")
            assert origin.seen == []

    run(scenario())


def test_only_if_cached_miss_is_504_without_asking_the_origin() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/o"] = Route(b"o", CACHEABLE)
            answer = await client.get("/o", headers={"Cache-Control": "only-if-cached"})
            assert answer.status_code == 504
            assert origin.seen == []

    run(scenario())


def test_cdn_cache_control_takes_precedence_at_the_edge() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            headers = [("Cache-Control", "no-store"), ("CDN-Cache-Control", "max-age=60")]
            origin.routes["/t"] = Route(b"t", headers)
            await client.get("/t")
            hit = await client.get("/t")
            assert hit.headers["x-cache"] == "HIT"
            assert hit.headers["cache-control"] == "no-store"  # still reaches the browser
            assert origin.count("/t") == 1

    run(scenario())
