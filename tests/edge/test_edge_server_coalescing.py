"""Request coalescing: concurrent misses for one key make one origin request."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from edge_server_support import Route, edge_and_origin, run, wait_for

pytestmark = pytest.mark.timeout(60)


def test_hundred_concurrent_misses_make_one_origin_request() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/big"] = Route(b"z" * 50_000, [("Cache-Control", "max-age=60")])
            origin.gate = asyncio.Event()
            limits = httpx.Limits(max_connections=100)
            async with httpx.AsyncClient(base_url=client.base_url, limits=limits) as many:
                requests = [asyncio.create_task(many.get("/big")) for _ in range(100)]
                await wait_for(lambda: edge.stats.coalesced_waiters == 99, timeout_s=20)
                origin.gate.set()
                responses = await asyncio.gather(*requests)
            assert origin.count("/big") == 1
            assert edge.stats.origin_fetches == 1
            assert all(r.status_code == 200 and r.content == b"z" * 50_000 for r in responses)
            assert {r.headers["x-cache"] for r in responses} == {"MISS"}

    run(scenario(), timeout_s=50)


def test_waiters_get_the_origin_error() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/gone"] = Route(drop=True)
            origin.gate = asyncio.Event()
            requests = [asyncio.create_task(client.get("/gone")) for _ in range(10)]
            await wait_for(lambda: edge.stats.coalesced_waiters == 9)
            origin.gate.set()
            responses = await asyncio.gather(*requests)
            assert [r.status_code for r in responses] == [502] * 10
            assert edge.stats.origin_fetches == 1
            # one fetch: the origin client retries a reset idempotent request once
            # (RFC 9112 §9.3.1), so the origin sees two attempts, not ten or twenty
            assert origin.count("/gone") == 2

    run(scenario())


def test_unstorable_response_is_not_shared_with_waiters() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            origin.routes["/mine"] = Route(b"private", [("Cache-Control", "private")])
            origin.gate = asyncio.Event()
            requests = [asyncio.create_task(client.get("/mine")) for _ in range(3)]
            await wait_for(lambda: edge.stats.coalesced_waiters == 2)
            origin.gate.set()
            responses = await asyncio.gather(*requests)
            assert {r.headers["x-cache"] for r in responses} == {"PASS"}
            assert origin.count("/mine") == 3

    run(scenario())
