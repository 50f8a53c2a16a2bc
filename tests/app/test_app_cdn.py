"""The reference app and the CDN: hashed immutable assets, surrogate-keyed photos, links
through the region's edge with origin fallback, and purges when a photo is deleted.

A fake edge (aiohttp on 127.0.76.x) answers the health probe and records purges.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from app_harness import image_bytes, serve, sign_up, upload
from starlette.types import ASGIApp

from millions.app.pipeline import CDN_PURGE_QUEUE, QUEUE_URL_ENV, tasks
from millions.app.rendering import HASHED_CACHE_CONTROL, StaticAssets
from millions.edge.links import (
    CDN_HEALTH_URL_ENV,
    CDN_PURGE_URLS_ENV,
    CDN_URL_ENV,
    CdnLinks,
    EdgeHealthView,
)
from millions.queue import QueueConfig, open_queue
from millions.workers.registry import PermanentFailure

pytestmark = pytest.mark.timeout(30)

STYLESHEET = re.compile(r'href="([^"]*/static/style\.([0-9a-f]{10})\.css)"')
SCRIPT = re.compile(r'src="([^"]*/static/app\.[0-9a-f]{10}\.js)"')
EDGE_HOST = "127.0.76.1"
DOWN_EDGE_PURGE = "http://127.0.76.9:9/purge"  # nothing listens there
TOKEN = "edge-admin-token-for-tests"


@dataclass
class FakeEdge:
    """An edge's ops listener: /healthz (switchable) and POST /purge (recorded)."""

    healthy: bool = True
    purge_status: int = 200
    purges: list[tuple[str, dict[str, object]]] = field(default_factory=list)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://{EDGE_HOST}:{self.port}"

    async def healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, status=200 if self.healthy else 503)

    async def purge(self, request: web.Request) -> web.Response:
        if self.purge_status != 200:
            return web.json_response({"error": "busy"}, status=self.purge_status)
        self.purges.append((request.headers.get("Authorization", ""), await request.json()))
        return web.json_response({"purged": 1})


@pytest.fixture
async def fake_edge() -> AsyncIterator[FakeEdge]:
    edge = FakeEdge()
    app = web.Application()
    app.router.add_get("/healthz", edge.healthz)
    app.router.add_post("/purge", edge.purge)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, EDGE_HOST, 0)
    await site.start()
    edge.port = runner.addresses[0][1]
    yield edge
    await runner.cleanup()


@pytest.fixture
def cdn_env(fake_edge: FakeEdge, monkeypatch: pytest.MonkeyPatch) -> FakeEdge:
    """What `millions web --dc DC` exports for an app in a DC with an edge."""
    monkeypatch.setenv(CDN_URL_ENV, fake_edge.base)
    monkeypatch.setenv(CDN_HEALTH_URL_ENV, f"{fake_edge.base}/healthz")
    monkeypatch.setenv(CDN_PURGE_URLS_ENV, f"{fake_edge.base}/purge,{DOWN_EDGE_PURGE}")
    monkeypatch.setenv("MILLIONS_ADMIN_TOKEN", TOKEN)
    return fake_edge


async def linked_stylesheet(client: httpx.AsyncClient) -> str:
    match = STYLESHEET.search((await client.get("/")).text)
    assert match is not None
    return match.group(1)


async def eventually_linked(client: httpx.AsyncClient, prefix: str) -> str:
    """Poll the home page until it links the stylesheet under `prefix` (probes run each 1 s)."""
    for _ in range(60):
        link = await linked_stylesheet(client)
        if link.startswith(prefix):
            return link
        await asyncio.sleep(0.1)
    raise AssertionError(f"the page never linked assets under {prefix}")


async def test_static_assets_have_hashed_immutable_names(client: httpx.AsyncClient) -> None:
    home = (await client.get("/")).text
    css = STYLESHEET.search(home)
    js = SCRIPT.search(home)
    assert css is not None and js is not None
    assert css.group(1).startswith("/static/")  # no edge configured: origin links
    hashed = await client.get(css.group(1))
    assert hashed.status_code == 200
    assert hashed.headers["content-type"].startswith("text/css")
    assert hashed.headers["cache-control"] == HASHED_CACHE_CONTROL
    script = await client.get(js.group(1))
    assert script.status_code == 200 and "upload-form" in script.text
    plain = await client.get("/static/style.css")
    assert plain.status_code == 200 and plain.headers["cache-control"] == "public, max-age=3600"
    assert plain.content == hashed.content
    for missing in ("/static/nothing.css", "/static/style.0000000000.css", "/static/..%2fapi.py"):
        response = await client.get(missing)
        assert response.status_code == 404
        assert response.headers["cache-control"] == "no-store"


def test_hashed_names_follow_the_content(tmp_path: Path) -> None:
    (tmp_path / "site.css").write_text("body { color: red }")
    before = StaticAssets(tmp_path)
    old = before.path_of("site.css")
    (tmp_path / "site.css").write_text("body { color: blue }")
    after = StaticAssets(tmp_path)
    new = after.path_of("site.css")
    assert old != new and re.fullmatch(r"/static/site\.[0-9a-f]{10}\.css", new)
    assert after.resolve(new.removeprefix("/static/")) == (
        tmp_path / "site.css",
        HASHED_CACHE_CONTROL,
    )
    assert after.resolve(old.removeprefix("/static/")) is None
    assert after.path_of("unknown.js") == "/static/unknown.js"


async def test_photo_images_carry_surrogate_keys(client: httpx.AsyncClient) -> None:
    user = await sign_up(client, "sky")
    photo = (await upload(client, image_bytes("PNG"))).json()
    image = await client.get(photo["url"])
    assert image.status_code == 200
    assert image.headers["surrogate-key"].split() == [f"photo-{photo['id']}", f"user-{user['id']}"]
    assert image.headers["cache-control"].startswith("public")


async def test_only_the_owner_deletes_a_photo(make_app: Callable[..., ASGIApp]) -> None:
    async with serve([make_app()]) as owner, serve([make_app()]) as other:
        await sign_up(owner, "owner")
        photo = (await upload(owner, image_bytes("PNG"))).json()
        target = f"/api/photos/{photo['id']}"
        anonymous = await other.delete(target)
        assert anonymous.status_code == 401
        await sign_up(other, "intruder")
        refused = await other.delete(target)
        assert refused.status_code == 403
        assert (await owner.get(photo["url"])).status_code == 200
        assert (await owner.delete(target)).status_code == 204
        assert (await owner.get(photo["url"])).status_code == 404
        assert (await owner.get(target)).status_code == 404
        assert (await owner.delete(target)).status_code == 404
        assert (await owner.delete("/api/photos/not-a-number")).status_code == 404
        cross_site = await owner.delete(target, headers={"sec-fetch-site": "cross-site"})
        assert cross_site.status_code == 403


async def test_the_delete_form_needs_the_csrf_token(client: httpx.AsyncClient) -> None:
    await sign_up(client, "formuser")
    photo = (await upload(client, image_bytes("PNG"))).json()
    page = (await client.get(photo["page_url"])).text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None and f'action="/p/{photo["id"]}/delete"' in page
    forged = await client.post(f"/p/{photo['id']}/delete", data={"csrf_token": "forged"})
    assert forged.status_code == 403
    assert (await client.get(photo["url"])).status_code == 200
    done = await client.post(f"/p/{photo['id']}/delete", data={"csrf_token": token.group(1)})
    assert done.status_code == 303 and done.headers["location"] == "/"
    assert (await client.get(photo["page_url"])).status_code == 404


async def test_pages_link_through_a_healthy_edge_and_fall_back_to_origin(
    cdn_env: FakeEdge, make_app: Callable[..., ASGIApp]
) -> None:
    async with serve([make_app()]) as client:
        link = await eventually_linked(client, cdn_env.base + "/static/")
        await sign_up(client, "linker")
        photo = (await upload(client, image_bytes("PNG"))).json()
        page = (await client.get(photo["page_url"])).text
        assert f'src="{cdn_env.base}/photos/{photo["id"]}/image"' in page
        cdn_env.healthy = False
        origin_link = await eventually_linked(client, "/static/")
        assert origin_link == link.removeprefix(cdn_env.base)
        page = (await client.get(photo["page_url"])).text
        assert f'src="/photos/{photo["id"]}/image"' in page


async def test_deleting_a_photo_purges_it_on_every_edge_by_key(
    cdn_env: FakeEdge, make_app: Callable[..., ASGIApp]
) -> None:
    async with serve([make_app()]) as client:
        await sign_up(client, "purger")
        photo = (await upload(client, image_bytes("PNG"))).json()
        # one of the two edges is unreachable: the delete still succeeds
        assert (await client.delete(f"/api/photos/{photo['id']}")).status_code == 204
    assert cdn_env.purges == [(f"Bearer {TOKEN}", {"key": f"photo-{photo['id']}"})]


async def test_a_purge_that_failed_is_retried_by_a_worker_until_the_edge_takes_it(
    cdn_env: FakeEdge,
    make_app: Callable[..., ASGIApp],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Edge down at delete time: a `cdn.purge` job per failed edge; the worker's retries
    fail while it is down (backoff, then the DLQ) and purge once it is back."""
    url = f"sqlite://{tmp_path / 'queue.sqlite3'}"
    monkeypatch.setenv(QUEUE_URL_ENV, url)
    queue = open_queue(QueueConfig(url=url))
    try:
        cdn_env.purge_status = 503
        async with serve([make_app()]) as client:
            await sign_up(client, "retrier")
            photo = (await upload(client, image_bytes("PNG"))).json()
            assert (await client.delete(f"/api/photos/{photo['id']}")).status_code == 204
        key = f"photo-{photo['id']}"
        jobs = await queue.receive(CDN_PURGE_QUEUE, max_messages=5, wait_s=2)
        assert sorted(job.payload["edge"] for job in jobs) == sorted(
            [f"{cdn_env.base}/purge", DOWN_EDGE_PURGE]
        )
        assert {job.payload["key"] for job in jobs} == {key}
        busy_edge = next(job for job in jobs if job.payload["edge"] == f"{cdn_env.base}/purge")
        with pytest.raises(RuntimeError, match="HTTP 503"):
            await tasks.get(CDN_PURGE_QUEUE)(busy_edge)
        cdn_env.purge_status = 200
        await tasks.get(CDN_PURGE_QUEUE)(busy_edge)
        assert cdn_env.purges == [(f"Bearer {TOKEN}", {"key": key})]
        forged = {"edge": "http://127.0.0.1:1/steal-the-token", "key": key}
        await queue.publish(CDN_PURGE_QUEUE, forged)
        (bad,) = await queue.receive(CDN_PURGE_QUEUE, wait_s=2)
        with pytest.raises(PermanentFailure):  # only configured edges get the token
            await tasks.get(CDN_PURGE_QUEUE)(bad)
    finally:
        await queue.close()


async def test_cdn_links_without_an_edge_are_origin_paths() -> None:
    links = CdnLinks.from_env({})
    await links.start()
    try:
        assert links.url("/static/a.css") == "/static/a.css"
        assert await links.purge_keys(["photo-1"]) == []
    finally:
        await links.close()
    fixed = CdnLinks("http://cdn.example/")  # no health URL: trusted as up
    assert fixed.url("/p.png") == "http://cdn.example/p.png"


def test_edge_health_view_falls_at_once_and_rises_after_two_passes() -> None:
    view = EdgeHealthView(rise=2)
    assert not view.up
    assert view.observe(True) is False and not view.up
    assert view.observe(True) is True and view.up
    assert view.observe(True) is False and view.up
    assert view.observe(False) is True and not view.up
    assert view.observe(True) is False and not view.up  # one pass is not enough
    assert view.observe(False) is False
    assert view.observe(True) is False and view.observe(True) is True and view.up
