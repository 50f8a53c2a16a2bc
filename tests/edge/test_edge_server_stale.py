"""stale-if-error and stale-while-revalidate (RFC 5861) with a real origin, killed or not.

The origin's Age header makes a response stale on arrival, so no test waits for time to
pass.
"""

from __future__ import annotations

import pytest
from edge_server_support import Route, edge_and_origin, run, wait_for

pytestmark = pytest.mark.timeout(30)


def test_stale_if_error_serves_the_stored_response_when_the_origin_is_dead() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            headers = [("Cache-Control", "max-age=10, stale-if-error=600"), ("Age", "20")]
            origin.routes["/s"] = Route(b"kept", headers)
            assert (await client.get("/s")).headers["x-cache"] == "MISS"
            await origin.stop()
            stale = await client.get("/s")
            assert (stale.status_code, stale.content) == (200, b"kept")
            assert stale.headers["x-cache"] == "STALE"
            assert int(stale.headers["age"]) >= 20

    run(scenario())


def test_stale_if_error_covers_origin_5xx() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            headers = [("Cache-Control", "max-age=10, stale-if-error=600"), ("Age", "20")]
            origin.routes["/s"] = Route(b"kept", headers)
            await client.get("/s")
            origin.routes["/s"] = Route(b"broken", status=503)
            stale = await client.get("/s")
            assert (stale.headers["x-cache"], stale.content) == ("STALE", b"kept")

    run(scenario())


def test_without_stale_if_error_a_dead_origin_gives_504() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            headers = [("Cache-Control", "max-age=10"), ("Age", "20")]
            origin.routes["/s"] = Route(b"old", headers)
            await client.get("/s")
            await origin.stop()
            assert (await client.get("/s")).status_code == 504
            assert (await client.get("/never-seen")).status_code == 502

    run(scenario())


def test_stale_while_revalidate_answers_stale_and_refreshes_in_background() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (edge, origin, client):
            stale_headers = [
                ("Cache-Control", "max-age=10, stale-while-revalidate=600"),
                ("ETag", '"w1"'),
                ("Age", "20"),
            ]
            origin.routes["/w"] = Route(b"v1", stale_headers)
            await client.get("/w")
            origin.routes["/w"] = Route(b"v1", [("Cache-Control", "max-age=60"), ("ETag", '"w1"')])
            stale = await client.get("/w")
            assert (stale.headers["x-cache"], stale.content) == ("STALE", b"v1")
            await wait_for(lambda: origin.count("/w") == 2)
            assert origin.seen[-1].headers["If-None-Match"] == '"w1"'
            handler = edge.handler
            assert handler is not None
            await wait_for(lambda: not handler.tasks)
            fresh = await client.get("/w")
            assert fresh.headers["x-cache"] == "HIT"
            assert origin.count("/w") == 2

    run(scenario())
