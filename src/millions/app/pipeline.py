"""The photo pipeline: an upload is answered at once, the variants are made by a worker.

After a photo is stored, the web server publishes `photo.process` with the photo id
(idempotency key: the photo id) to the queue named by `MILLIONS_QUEUE_URL`, which
`millions web` exports. Workers run `tasks` (`millions worker --tasks
millions.app.pipeline:tasks`); they find the app's data through `MILLIONS_DATA_DIR`, as
the web servers do (the supervisor sets it for both).

Without `MILLIONS_QUEUE_URL` (the app on its own, or in tests) there is no queue to
publish to, so the web server processes the photo inline before answering; it does the
same when publishing fails, so a photo never waits for a job that was never queued.

Idempotent: a job whose photo is already processed (or deleted) does nothing; variant
files are written atomically and only when missing; the processed flag is set after
every file is in place. A redelivery or a second concurrent run therefore rewrites
nothing it does not need to and never fails for having run before.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

from millions.app.photo_files import PhotoFiles
from millions.app.settings import SettingsError, current_settings
from millions.app.state import AppState
from millions.app.store import AppStore, Photo, SqliteAppStore
from millions.app.variants import VARIANTS, render_variants
from millions.queue import MessageQueue, QueueConfig, QueueError, open_queue
from millions.queue.base import Delivery
from millions.queue.urls import QueueURLError, parse_queue_url
from millions.workers.registry import PermanentFailure, TaskRegistry

PHOTO_QUEUE = "photo.process"
QUEUE_URL_ENV = "MILLIONS_QUEUE_URL"

log = logging.getLogger("millions.app")

tasks = TaskRegistry()


def queue_from_env(env: Mapping[str, str] | None = None) -> MessageQueue | None:
    """The queue named by MILLIONS_QUEUE_URL, or None (process inline) when unset."""
    url = (os.environ if env is None else env).get(QUEUE_URL_ENV, "").strip()
    if not url:
        return None
    try:
        parse_queue_url(url)
    except QueueURLError as exc:
        raise SettingsError(f"{QUEUE_URL_ENV}: {exc}") from None
    return open_queue(QueueConfig(url=url))


async def submit_photo(state: AppState, photo: Photo) -> Photo:
    """Queue the photo's processing, or do it now when there is no working queue; the
    photo as it stands afterwards."""
    if state.queue is not None:
        try:
            await state.queue.publish(
                PHOTO_QUEUE, {"photo_id": photo.id}, idempotency_key=str(photo.id)
            )
            return photo
        except QueueError as exc:
            log.warning(
                "queue unavailable; processing the photo inline",
                extra={"photo_id": photo.id, "error": str(exc)},
            )
    if await process_photo(state.store, state.files, photo.id):
        return dataclasses.replace(photo, processed=True)
    return photo


async def process_photo(store: AppStore, files: PhotoFiles, photo_id: int) -> bool:
    """Make the photo's variants and mark it processed; whether this call marked it."""
    photo = await store.photo(photo_id)
    if photo is None or photo.processed:
        return False
    await asyncio.to_thread(write_variants, files, photo)
    return await store.mark_processed(photo.id)


def write_variants(files: PhotoFiles, photo: Photo) -> None:
    """Render and store the variants that are not on disk yet (blocking)."""
    missing = [
        name
        for name in VARIANTS
        if not files.variant_path(photo.sha256, photo.content_type, name).exists()
    ]
    if not missing:
        return
    original = files.path(photo.sha256, photo.content_type).read_bytes()
    for name, data in render_variants(original, photo.content_type).items():
        if name in missing:
            files.write_variant(photo.sha256, photo.content_type, name, data)


def photo_id_of(payload: Any) -> int:
    """The photo id of a job; a malformed job can never succeed, so it fails permanently."""
    photo_id = payload.get("photo_id") if isinstance(payload, dict) else None
    if not isinstance(photo_id, int) or isinstance(photo_id, bool) or photo_id < 1:
        raise PermanentFailure(f"expected {{'photo_id': <positive int>}}, got {payload!r}")
    return photo_id


@tasks.task(PHOTO_QUEUE)
async def process_photo_job(delivery: Delivery) -> None:
    """The worker's handler: the store is opened per job (the image work dominates)."""
    photo_id = photo_id_of(delivery.payload)
    settings = current_settings()
    store = await SqliteAppStore.open(settings.database_path)
    try:
        marked = await process_photo(store, PhotoFiles(settings.photos_dir), photo_id)
    finally:
        await store.close()
    log.info(
        "photo processed" if marked else "photo needed no processing",
        extra={"photo_id": photo_id, "attempt": delivery.attempt},
    )
