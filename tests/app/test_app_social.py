"""Profiles, follows and the feed, through the JSON API and the pages (no queue: the
feed fan-out runs before the upload is answered)."""

from __future__ import annotations

import re

import httpx
import pytest
from app_harness import PASSWORD, image_bytes, sign_up, upload

pytestmark = pytest.mark.timeout(60)

TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


async def log_in(client: httpx.AsyncClient, username: str) -> None:
    await client.post("/api/logout")
    response = await client.post("/api/login", json={"username": username, "password": PASSWORD})
    assert response.status_code == 200, response.text


async def test_following_fills_the_feed_and_unfollowing_empties_it(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "star")
    first = (await upload(client, image_bytes("PNG"), title="before")).json()
    await client.post("/api/logout")
    await sign_up(client, "fan")

    assert (await client.get("/api/feed")).json() == {"photos": []}
    followed = await client.post("/api/users/star/follow")
    assert followed.status_code == 201 and followed.json() == {"following": "star"}
    assert (await client.post("/api/users/star/follow")).status_code == 200  # again
    feed = (await client.get("/api/feed")).json()["photos"]
    assert [(p["id"], p["owner"], p["owner_url"]) for p in feed] == [
        (first["id"], "star", "/u/star")
    ]

    await log_in(client, "star")
    second = (await upload(client, image_bytes("WEBP"), title="after")).json()
    profile = (await client.get("/api/users/star")).json()
    assert profile["followers"] == 1 and profile["followed_by_you"] is False
    assert [p["id"] for p in profile["photos"]] == [second["id"], first["id"]]
    own_feed = (await client.get("/api/feed")).json()["photos"]
    assert [p["id"] for p in own_feed] == [second["id"], first["id"]]  # own photos too

    await log_in(client, "fan")
    assert (await client.get("/api/users/star")).json()["followed_by_you"] is True
    feed = (await client.get("/api/feed?limit=1")).json()["photos"]
    assert [p["title"] for p in feed] == ["after"]

    await log_in(client, "star")
    assert (await client.delete(f"/api/photos/{second['id']}")).status_code == 204
    await log_in(client, "fan")
    assert [p["id"] for p in (await client.get("/api/feed")).json()["photos"]] == [first["id"]]

    assert (await client.delete("/api/users/star/follow")).status_code == 204
    assert (await client.get("/api/feed")).json() == {"photos": []}
    assert (await client.get("/api/users/star")).json()["followers"] == 0


async def test_social_requests_that_cannot_proceed_get_clear_errors(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/api/feed")).status_code == 401
    assert (await client.post("/api/users/someone/follow")).status_code == 401
    assert (await client.get("/api/users/nobody_here")).status_code == 404
    assert (await client.get("/api/users/Not%20A%20Name")).status_code == 404
    await sign_up(client, "solo")
    myself = await client.post("/api/users/solo/follow")
    assert myself.status_code == 400 and myself.json() == {"error": "you cannot follow yourself"}
    missing = await client.post("/api/users/nobody_here/follow")
    assert missing.status_code == 404 and missing.json() == {"error": "no such user"}
    for limit in ("0", "201", "-1", "x", "9" * 5000):
        bad = await client.get(f"/api/feed?limit={limit}")
        assert bad.status_code == 400, limit
        assert "limit" in bad.json()["error"]
    cross_site = await client.post(
        "/api/users/solo/follow", headers={"sec-fetch-site": "cross-site"}
    )
    assert cross_site.status_code == 403


async def test_profile_and_feed_pages_follow_with_csrf_protected_forms(
    client: httpx.AsyncClient,
) -> None:
    await sign_up(client, "painter")
    await upload(client, image_bytes("PNG"), title="sunset")
    await client.post("/api/logout")
    anonymous = await client.get("/u/painter")
    assert anonymous.status_code == 200 and "Log in</a> to follow @painter" in anonymous.text
    assert (await client.get("/u/nobody_here")).status_code == 404
    assert (await client.get("/feed")).headers["location"] == "/login"

    await sign_up(client, "viewer")
    profile = await client.get("/u/painter")
    assert "sunset" in profile.text and 'action="/u/painter/follow"' in profile.text
    match = TOKEN.search(profile.text)
    assert match is not None
    forged = await client.post("/u/painter/follow", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert (await client.get("/api/users/painter")).json()["followers"] == 0
    done = await client.post("/u/painter/follow", data={"csrf_token": match.group(1)})
    assert done.status_code == 303 and done.headers["location"] == "/u/painter"
    assert 'action="/u/painter/unfollow"' in (await client.get("/u/painter")).text

    feed = await client.get("/feed")
    assert feed.status_code == 200
    assert "sunset" in feed.text and 'href="/u/painter"' in feed.text

    undone = await client.post("/u/painter/unfollow", data={"csrf_token": match.group(1)})
    assert undone.status_code == 303
    assert "Nothing here yet" in (await client.get("/feed")).text
