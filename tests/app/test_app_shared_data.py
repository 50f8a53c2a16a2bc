"""Two app instances over one data dir, as two web servers behind a load balancer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from app_harness import PASSWORD, image_bytes, serve, sign_up, upload
from starlette.types import ASGIApp

pytestmark = pytest.mark.timeout(30)


async def test_servers_share_users_photos_and_sessions(
    make_app: Callable[..., ASGIApp], tmp_path: Path
) -> None:
    servers = [make_app("web-us-east-1"), make_app("web-us-east-2")]
    async with serve(servers) as client:  # requests alternate between the two
        created = await sign_up(client, "alice")  # on server 1
        me = await client.get("/api/me")  # on server 2, same session
        assert me.headers["x-served-by"] == "web-us-east-2"
        assert me.json() == created
        photo = await upload(client, image_bytes("PNG", (12, 34)), title="shared")  # server 1
        assert photo.headers["x-served-by"] == "web-us-east-1"
        photo_id = photo.json()["id"]
        listed = await client.get("/api/photos")  # server 2
        assert listed.headers["x-served-by"] == "web-us-east-2"
        assert [p["id"] for p in listed.json()["photos"]] == [photo_id]
        served_by = set()
        for _ in range(2):
            image = await client.get(f"/photos/{photo_id}/image")
            assert image.status_code == 200
            assert image.content == image_bytes("PNG", (12, 34))
            served_by.add(image.headers["x-served-by"])
        assert served_by == {"web-us-east-1", "web-us-east-2"}
        logged_out = await client.post("/api/logout")  # server 1
        assert logged_out.status_code == 204
        login = await client.post("/api/login", json={"username": "alice", "password": PASSWORD})
        assert login.status_code == 200  # server 2 knows the user server 1 created
    assert sorted(p.name for p in (tmp_path / "data" / "shards").glob("*.sqlite3")) == [
        "metadata.sqlite3",
        "s1.sqlite3",
        "s2.sqlite3",
    ]
    stored = sorted(path.name.split(".", 1)[1] for path in (tmp_path / "data").rglob("*.png"))
    assert stored == ["blur.png", "crop.png", "png", "sharpen.png", "thumb.png"]  # + variants


async def test_concurrent_signups_on_two_servers_all_land_once(
    make_app: Callable[..., ASGIApp],
) -> None:
    servers = [make_app("web-a"), make_app("web-b")]
    async with serve(servers) as client:
        names = [f"user_{i}" for i in range(12)]
        attempts = [
            client.post("/api/signup", json={"username": name, "password": PASSWORD})
            for name in names * 2  # each name twice: once per server
        ]
        responses = await asyncio.gather(*attempts)
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201] * len(names) + [409] * len(names)
        ids = {response.json()["id"] for response in responses if response.status_code == 201}
        assert len(ids) == len(names)
