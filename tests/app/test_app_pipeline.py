"""The photo pipeline: an upload publishes `photo.process`, the worker's handler makes the
variants once, the app serves them; without a queue the app processes inline."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from app_harness import PASSWORD, image_bytes, serve, sign_up, upload
from PIL import Image
from starlette.types import ASGIApp

from millions.app.feed import FEED_QUEUE
from millions.app.images import inspect_image
from millions.app.photo_files import PhotoFiles
from millions.app.pipeline import (
    PHOTO_QUEUE,
    QUEUE_URL_ENV,
    process_photo,
    queue_from_env,
    tasks,
)
from millions.app.settings import SettingsError
from millions.app.store import NewPhoto, ShardedAppStore
from millions.app.variants import VARIANTS, render_variants
from millions.queue import MessageQueue, QueueConfig, QueueError, open_queue
from millions.queue.base import Delivery
from millions.shards import ShardsConfig
from millions.workers.registry import PermanentFailure


@pytest.fixture
async def queue(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MessageQueue]:
    """The queue the app publishes to (MILLIONS_QUEUE_URL), as a worker sees it."""
    url = f"sqlite://{tmp_path / 'queue.sqlite3'}"
    monkeypatch.setenv(QUEUE_URL_ENV, url)
    monkeypatch.setenv("MILLIONS_DATA_DIR", str(tmp_path / "data"))  # for the handler
    consumer = open_queue(QueueConfig(url=url))
    yield consumer
    await consumer.close()


@pytest.fixture
async def queued_client(
    queue: MessageQueue, make_app: Callable[..., ASGIApp]
) -> AsyncIterator[httpx.AsyncClient]:
    async with serve([make_app()]) as http:
        yield http


async def take_job(queue: MessageQueue) -> Delivery:
    (delivery,) = await queue.receive(PHOTO_QUEUE, wait_s=5)
    return delivery


async def run_job(queue: MessageQueue, delivery: Delivery) -> None:
    """What a worker does: run the handler, then acknowledge."""
    await tasks.get(PHOTO_QUEUE)(delivery)
    assert await queue.ack(delivery)


def variant_files(tmp_path: Path) -> dict[str, float]:
    return {
        path.name: path.stat().st_mtime_ns
        for path in (tmp_path / "data" / "photos").rglob("*")
        if path.is_file() and path.name.count(".") == 2
    }


async def test_upload_publishes_a_job_the_handler_makes_variants_the_app_serves_them(
    queued_client: httpx.AsyncClient, queue: MessageQueue, tmp_path: Path
) -> None:
    client = queued_client
    await sign_up(client, "ansel")
    response = await upload(client, image_bytes("JPEG", (600, 300)), title="dunes")
    assert response.status_code == 201
    photo = response.json()
    assert photo["processed"] is False and photo["variants"] == {}
    page = await client.get(photo["page_url"])
    assert "processing…" in page.text and f"/photos/{photo['id']}/thumb" not in page.text
    before = await client.get(f"/photos/{photo['id']}/thumb")
    assert before.status_code == 404 and before.headers["cache-control"] == "no-store"

    delivery = await take_job(queue)
    assert delivery.payload == {"photo_id": photo["id"]}
    assert delivery.idempotency_key == str(photo["id"])
    await run_job(queue, delivery)

    done = (await client.get(f"/api/photos/{photo['id']}")).json()
    assert done["processed"] is True
    assert done["variants"] == {name: f"/photos/{photo['id']}/{name}" for name in VARIANTS}
    sizes = {}
    for name, url in done["variants"].items():
        served = await client.get(url)
        assert served.status_code == 200, name
        assert served.headers["content-type"] == "image/jpeg"
        assert served.headers["cache-control"] == "public, max-age=86400"
        assert served.headers["surrogate-key"].split()[0] == f"photo-{photo['id']}"
        assert served.headers["etag"].endswith(f'-{name}"')
        sizes[name] = Image.open(io.BytesIO(served.content)).size
        revalidated = await client.get(url, headers={"if-none-match": served.headers["etag"]})
        assert revalidated.status_code == 304
    assert sizes == {
        "thumb": (256, 128),
        "crop": (300, 300),
        "sharpen": (600, 300),
        "blur": (600, 300),
    }
    page = await client.get(photo["page_url"])
    assert "processing…" not in page.text
    assert all(f"/photos/{photo['id']}/{name}" in page.text for name in VARIANTS)


async def test_a_redelivered_job_changes_nothing_and_does_not_fail(
    queued_client: httpx.AsyncClient,
    queue: MessageQueue,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await sign_up(queued_client, "redo")
    photo = (await upload(queued_client, image_bytes("PNG", (40, 30)))).json()
    delivery = await take_job(queue)
    await run_job(queue, delivery)
    written = variant_files(tmp_path)
    assert sorted(name.split(".")[1] for name in written) == sorted(VARIANTS)

    with caplog.at_level(logging.INFO, logger="millions.app"):
        await tasks.get(PHOTO_QUEUE)(delivery)  # the same delivery again: at least once
    assert "photo needed no processing" in caplog.text
    assert variant_files(tmp_path) == written
    listed = (await queued_client.get("/api/photos")).json()["photos"]
    assert [p["id"] for p in listed] == [photo["id"]]


async def test_variants_already_on_disk_are_not_rendered_again(tmp_path: Path) -> None:
    """A worker that died after writing the files but before marking the photo."""
    store = await ShardedAppStore.open(ShardsConfig(directory=str(tmp_path / "shards")), tmp_path)
    files = PhotoFiles(tmp_path / "photos")
    try:
        user = await store.create_user("crashy", "hash")
        data = image_bytes("WEBP", (50, 70))
        info = inspect_image(data, 10_000)
        files.write(info.sha256, info.content_type, data)
        for name, rendered in render_variants(data, info.content_type).items():
            files.write_variant(info.sha256, info.content_type, name, rendered)
        photo = await store.add_photo(
            NewPhoto(user.id, user.username, "", info.content_type, 50, 70, len(data), info.sha256)
        )
        files.path(info.sha256, info.content_type).unlink()  # rendering would now fail
        assert await process_photo(store, files, photo.id) is True
        assert await process_photo(store, files, photo.id) is False
        reread = await store.photo(photo.id)
        assert reread is not None and reread.processed
        assert await process_photo(store, files, photo.id + 1) is False  # no such photo
    finally:
        await store.close()


async def test_variants_are_404_until_processed_and_for_unknown_names(
    queued_client: httpx.AsyncClient,
) -> None:
    await sign_up(queued_client, "early")
    photo = (await upload(queued_client, image_bytes("PNG"))).json()
    for path in (
        f"/photos/{photo['id']}/crop",
        f"/photos/{photo['id']}/sepia",
        "/photos/999/blur",
        "/photos/abc/thumb",
    ):
        response = await queued_client.get(path)
        assert response.status_code == 404, path
        assert response.headers["cache-control"] == "no-store"
    assert (await queued_client.get(f"/photos/{photo['id']}/image")).status_code == 200


async def test_without_a_queue_the_upload_is_processed_inline(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(QUEUE_URL_ENV, raising=False)
    await sign_up(client, "solo")
    response = await upload(client, image_bytes("PNG", (300, 500), mode="RGBA"))
    photo = response.json()
    assert photo["processed"] is True and set(photo["variants"]) == set(VARIANTS)
    thumb = await client.get(photo["variants"]["thumb"])
    assert thumb.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.size == (154, 256) and image.mode == "RGBA"


async def test_a_queue_that_fails_falls_back_to_inline_processing(
    queue: MessageQueue, make_app: Callable[..., ASGIApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> str:
        raise QueueError("broker unreachable")

    monkeypatch.setattr("millions.queue.sqlite.SqliteQueue.publish", broken)
    async with serve([make_app()]) as client:
        await sign_up(client, "fallback")
        photo = (await upload(client, image_bytes("JPEG"))).json()
    assert photo["processed"] is True


async def test_malformed_jobs_fail_permanently(queue: MessageQueue) -> None:
    for payload in ({}, {"photo_id": "1"}, {"photo_id": True}, {"photo_id": 0}, [1]):
        await queue.publish(PHOTO_QUEUE, payload)
        delivery = await take_job(queue)
        with pytest.raises(PermanentFailure):
            await tasks.get(PHOTO_QUEUE)(delivery)
        await queue.ack(delivery)


async def test_feed_fan_out_is_a_queued_job_the_worker_runs(
    queued_client: httpx.AsyncClient, queue: MessageQueue
) -> None:
    """Upload and delete publish `feed.fanout`; until a worker runs it the follower's
    feed does not change, after it does; a redelivered job changes nothing."""
    client = queued_client
    maker = await sign_up(client, "maker")
    await client.post("/api/logout")
    await sign_up(client, "watcher")
    assert (await client.post("/api/users/maker/follow")).status_code == 201
    await client.post("/api/logout")
    login = {"username": "maker", "password": PASSWORD}
    assert (await client.post("/api/login", json=login)).status_code == 200
    photo = (await upload(client, image_bytes("PNG"))).json()

    (job,) = await queue.receive(FEED_QUEUE, wait_s=5)
    assert job.payload == {"action": "add", "photo_id": photo["id"], "owner_id": maker["id"]}
    assert job.idempotency_key == f"add-{photo['id']}"
    assert (await client.get("/api/feed")).json() == {"photos": []}  # not fanned out yet
    await tasks.get(FEED_QUEUE)(job)
    await tasks.get(FEED_QUEUE)(job)  # at least once: a redelivery is harmless
    assert await queue.ack(job)
    assert [p["id"] for p in (await client.get("/api/feed")).json()["photos"]] == [photo["id"]]

    assert (await client.delete(f"/api/photos/{photo['id']}")).status_code == 204
    (removal,) = await queue.receive(FEED_QUEUE, wait_s=5)
    assert removal.payload["action"] == "remove"
    await tasks.get(FEED_QUEUE)(removal)
    assert await queue.ack(removal)
    assert (await client.get("/api/feed")).json() == {"photos": []}


async def test_malformed_fan_out_jobs_fail_permanently(queue: MessageQueue) -> None:
    for payload in (
        {},
        {"action": "add", "photo_id": 1},
        {"action": "shout", "photo_id": 1, "owner_id": 1},
        {"action": "add", "photo_id": True, "owner_id": 1},
        {"action": "remove", "photo_id": 1, "owner_id": 0},
        "add",
    ):
        await queue.publish(FEED_QUEUE, payload)
        (delivery,) = await queue.receive(FEED_QUEUE, wait_s=5)
        with pytest.raises(PermanentFailure):
            await tasks.get(FEED_QUEUE)(delivery)
        await queue.ack(delivery)


def test_a_bad_queue_url_is_a_settings_error() -> None:
    assert queue_from_env({}) is None
    with pytest.raises(SettingsError, match=QUEUE_URL_ENV):
        queue_from_env({QUEUE_URL_ENV: "ftp://nowhere"})


def test_render_variants_handles_palette_and_transparent_images() -> None:
    for fmt, mode in (("PNG", "P"), ("PNG", "LA"), ("WEBP", "RGBA"), ("JPEG", "L")):
        source = io.BytesIO()
        Image.new(mode, (900, 1200)).save(source, fmt)
        content_type = {"PNG": "image/png", "WEBP": "image/webp", "JPEG": "image/jpeg"}[fmt]
        rendered = render_variants(source.getvalue(), content_type)
        sizes = {name: Image.open(io.BytesIO(data)).size for name, data in rendered.items()}
        assert sizes == {
            "thumb": (192, 256),
            "crop": (900, 900),
            "sharpen": (768, 1024),
            "blur": (768, 1024),
        }, (fmt, mode)


async def test_a_photo_whose_jobs_were_never_published_is_requeued_by_the_sweep(
    queue: MessageQueue, make_app: Callable[..., ASGIApp], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The web server dies between storing the photo and publishing its jobs (simulated:
    publishing raises); the sweep finds the row, publishes both jobs once, and the photo
    gets processed and fanned out."""
    from app_harness import BASE_URL, RoundRobinTransport, lifespan, with_state

    from millions.app.feed import FEED_QUEUE
    from millions.app.pipeline import requeue_stranded
    from millions.app.state import STATE_KEY

    async def killed(*_args: object) -> None:
        raise RuntimeError("the web server died here")

    app = make_app()
    async with lifespan(app) as lifespan_state:
        state = lifespan_state[STATE_KEY]
        transport = RoundRobinTransport([with_state(app, lifespan_state)], False)
        async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
            await sign_up(client, "unlucky")
            lucky = (await upload(client, image_bytes("JPEG"))).json()  # published normally
            await run_job(queue, await take_job(queue))
            (lucky_fan_out,) = await queue.receive(FEED_QUEUE, wait_s=5)
            await tasks.get(FEED_QUEUE)(lucky_fan_out)
            assert await queue.ack(lucky_fan_out)
            with monkeypatch.context() as patch:
                patch.setattr("millions.app.uploads.submit_photo", killed)
                failed = await upload(client, image_bytes("PNG"))
            assert failed.status_code == 500
            stranded, _ = (await client.get("/api/photos")).json()["photos"]
            assert stranded["processed"] is False and stranded["id"] != lucky["id"]
            assert await queue.receive(PHOTO_QUEUE, wait_s=0.2) == []

            assert await requeue_stranded(state, older_than_s=60) == 0  # too recent to judge
            assert await requeue_stranded(state, older_than_s=0) == 1  # not the lucky one
            assert await requeue_stranded(state, older_than_s=0) == 0  # now marked queued
            (fan_out,) = await queue.receive(FEED_QUEUE, wait_s=5)
            assert fan_out.payload["photo_id"] == stranded["id"]
            await tasks.get(FEED_QUEUE)(fan_out)
            assert await queue.ack(fan_out)
            await run_job(queue, await take_job(queue))
            done = (await client.get(f"/api/photos/{stranded['id']}")).json()
            assert done["processed"] is True
            feed = (await client.get("/api/feed")).json()["photos"]
            assert [p["id"] for p in feed] == [stranded["id"], lucky["id"]]
