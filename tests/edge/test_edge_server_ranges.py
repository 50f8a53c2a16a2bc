"""Range requests answered from cached objects (RFC 9110 §14): 206, multipart, 416."""

from __future__ import annotations

import pytest
from edge_server_support import Route, edge_and_origin, run

pytestmark = pytest.mark.timeout(30)

BODY = bytes(range(256)) * 4  # 1024 bytes
HEADERS = [("Cache-Control", "max-age=60"), ("ETag", '"r"'), ("Content-Type", "image/png")]


def test_single_range_from_the_cache() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/img"] = Route(BODY, HEADERS)
            first = await client.get("/img", headers={"Range": "bytes=10-19"})
            assert first.status_code == 206
            assert first.content == BODY[10:20]
            assert first.headers["content-range"] == "bytes 10-19/1024"
            assert first.headers["x-cache"] == "MISS"
            suffix = await client.get("/img", headers={"Range": "bytes=-4"})
            assert (suffix.status_code, suffix.content) == (206, BODY[-4:])
            assert suffix.headers["x-cache"] == "HIT"
            assert "Range" not in origin.seen[0].headers
            assert origin.count("/img") == 1

    run(scenario())


def test_several_ranges_make_a_multipart_body() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/img"] = Route(BODY, HEADERS)
            await client.get("/img")
            response = await client.get("/img", headers={"Range": "bytes=0-1, 500-502"})
            assert response.status_code == 206
            content_type = response.headers["content-type"]
            assert content_type.startswith("multipart/byteranges; boundary=")
            boundary = content_type.split("boundary=")[1].encode()
            parts = response.content.split(b"--" + boundary)
            assert parts[-1] == b"--\r\n"
            bodies = [part.split(b"\r\n\r\n", 1) for part in parts[1:-1]]
            assert [head.count(b"image/png") for head, _ in bodies] == [1, 1]
            assert b"content-range: bytes 0-1/1024" in bodies[0][0]
            assert bodies[0][1] == BODY[0:2] + b"\r\n"
            assert bodies[1][1] == BODY[500:503] + b"\r\n"
            assert int(response.headers["content-length"]) == len(response.content)

    run(scenario())


def test_unsatisfiable_range_is_416_and_stale_if_range_is_200() -> None:
    async def scenario() -> None:
        async with edge_and_origin() as (_, origin, client):
            origin.routes["/img"] = Route(BODY, HEADERS)
            await client.get("/img")
            beyond = await client.get("/img", headers={"Range": "bytes=5000-"})
            assert beyond.status_code == 416
            assert beyond.headers["content-range"] == "bytes */1024"
            changed = await client.get("/img", headers={"Range": "bytes=0-1", "If-Range": '"x"'})
            assert (changed.status_code, changed.content) == (200, BODY)
            same = await client.get("/img", headers={"Range": "bytes=0-1", "If-Range": '"r"'})
            assert (same.status_code, same.content) == (206, BODY[:2])

    run(scenario())
