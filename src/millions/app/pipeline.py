"""The photo pipeline: an upload is answered at once, the variants are made by a worker.

After a photo is stored, the web server publishes `photo.process` with the photo id
(idempotency key: the photo id) and `feed.fanout` (see `millions.app.feed`) to the queue
named by `MILLIONS_QUEUE_URL`, which `millions web` exports. Workers run `tasks`
(`millions worker --tasks millions.app.pipeline:tasks`); they find the photo files
through `MILLIONS_DATA_DIR` and the shards through `MILLIONS_SHARDS_CONFIG`, as the web
servers do.

Without `MILLIONS_QUEUE_URL` (the app on its own, or in tests) there is no queue to
publish to, so the web server does the work inline before answering; it does the same
when publishing fails, so nothing waits for a job that was never queued.

A photo is stored before its jobs are published; a web server killed in between leaves a
photo whose row says it was never queued, and the sweep (`requeue_forever`, run by every
web server with a queue) publishes its jobs later.

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
import random
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeGuard

import aiohttp

from millions.app.feed import FEED_QUEUE, FanOutAction, fan_out
from millions.app.photo_files import PhotoFiles
from millions.app.settings import SettingsError, current_settings
from millions.app.state import AppState
from millions.app.store import AppStore, Photo, ShardedAppStore
from millions.app.variants import VARIANTS, render_variants
from millions.edge.links import CdnLinks, PurgeOutcome, send_purge
from millions.queue import MessageQueue, QueueConfig, QueueError, open_queue
from millions.queue.base import Delivery
from millions.queue.urls import QueueURLError, parse_queue_url
from millions.shards import ShardError
from millions.workers.registry import PermanentFailure, TaskRegistry

PHOTO_QUEUE = "photo.process"
CDN_PURGE_QUEUE = "cdn.purge"
STRANDED_AFTER_S = 30.0  # far longer than storing a photo and publishing its jobs takes
SWEEP_INTERVAL_S = 15.0
SWEEP_BATCH = 100
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


async def queue_or_run(
    state: AppState,
    queue: str,
    payload: dict[str, Any],
    idempotency_key: str,
    run_now: Callable[[], Awaitable[object]],
) -> bool:
    """Publish a job, or run its work now when there is no working queue (a job is never
    left unqueued); whether the job was queued."""
    if state.queue is not None:
        try:
            await state.queue.publish(queue, payload, idempotency_key=idempotency_key)
            return True
        except QueueError as exc:
            log.warning(
                "queue unavailable; doing the work inline",
                extra={"queue": queue, "key": idempotency_key, "error": str(exc)},
            )
    await run_now()
    return False


async def submit_photo(state: AppState, photo: Photo) -> Photo:
    """Queue the photo's processing and its feed fan-out (or do them now); the photo as it
    stands afterwards."""
    await submit_fan_out(state, "add", photo)
    marked = False

    async def process_now() -> None:
        nonlocal marked
        marked = await process_photo(state.store, state.files, photo.id)

    await queue_or_run(state, PHOTO_QUEUE, {"photo_id": photo.id}, str(photo.id), process_now)
    await state.store.mark_queued(photo)
    return dataclasses.replace(photo, processed=True) if marked else photo


async def requeue_stranded(state: AppState, older_than_s: float = STRANDED_AFTER_S) -> int:
    """Publish the jobs of photos stored over `older_than_s` ago whose publishing never
    happened (their web server died in between); how many photos were requeued.

    Every web server sweeps, so two may requeue the same photo: both jobs are idempotent.
    A queue that fails leaves the photos for the next sweep."""
    if state.queue is None:
        return 0
    stranded = await state.store.stranded_photos(time.time() - older_than_s, SWEEP_BATCH)
    for photo in stranded:
        fan_out_job = {"action": "add", "photo_id": photo.id, "owner_id": photo.owner_id}
        await state.queue.publish(FEED_QUEUE, fan_out_job, idempotency_key=f"add-{photo.id}")
        await state.queue.publish(
            PHOTO_QUEUE, {"photo_id": photo.id}, idempotency_key=str(photo.id)
        )
        await state.store.mark_queued(photo)
        log.warning("requeued a stranded photo", extra={"photo_id": photo.id})
    return len(stranded)


async def requeue_forever(state: AppState, interval_s: float = SWEEP_INTERVAL_S) -> None:
    """`requeue_stranded` every `interval_s` (with jitter, so web servers spread out)."""
    while True:
        await asyncio.sleep(interval_s * random.uniform(0.5, 1.5))
        try:
            await requeue_stranded(state)
        except (QueueError, ShardError) as exc:
            log.warning("sweep for stranded photos failed", extra={"error": str(exc)})


async def submit_fan_out(state: AppState, action: FanOutAction, photo: Photo) -> None:
    """Queue (or run) adding the photo to, or removing it from, its followers' feeds."""
    payload = {"action": action, "photo_id": photo.id, "owner_id": photo.owner_id}
    await queue_or_run(
        state,
        FEED_QUEUE,
        payload,
        f"{action}-{photo.id}",
        lambda: fan_out(state.store, action, photo.id, photo.owner_id),
    )


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
    if not _is_id(photo_id):
        raise PermanentFailure(f"expected {{'photo_id': <positive int>}}, got {payload!r}")
    return photo_id


@tasks.task(PHOTO_QUEUE)
async def process_photo_job(delivery: Delivery) -> None:
    """The worker's photo handler."""
    photo_id = photo_id_of(delivery.payload)
    store = await worker_store()
    marked = await process_photo(store, PhotoFiles(current_settings().photos_dir), photo_id)
    log.info(
        "photo processed" if marked else "photo needed no processing",
        extra={"photo_id": photo_id, "attempt": delivery.attempt},
    )


async def retry_failed_purges(state: AppState, outcomes: list[PurgeOutcome], key: str) -> int:
    """Queue a `cdn.purge` job for each edge that could not be purged now (it was down or
    failed), so the stale object goes once the edge is back; how many were queued.
    Without a queue the failures stay logged only."""
    if state.queue is None:
        return 0
    failed = [outcome.edge for outcome in outcomes if not outcome.ok]
    for edge in failed:
        await state.queue.publish(
            CDN_PURGE_QUEUE, {"edge": edge, "key": key}, idempotency_key=f"purge {key} {edge}"
        )
    return len(failed)


@tasks.task(CDN_PURGE_QUEUE)
async def purge_job(delivery: Delivery) -> None:
    """The worker's purge retry: one surrogate key on one edge; a failure is retried with
    backoff, then dead-lettered (`millions queue dlq list cdn.purge`)."""
    payload = delivery.payload
    edge = payload.get("edge") if isinstance(payload, dict) else None
    key = payload.get("key") if isinstance(payload, dict) else None
    links = CdnLinks.from_env()
    if edge not in links.purge_urls or not isinstance(key, str) or not key:
        raise PermanentFailure(
            f"expected {{'edge': one of {list(links.purge_urls)}, 'key': <key>}}, got {payload!r}"
        )
    async with aiohttp.ClientSession() as http:
        outcome = await send_purge(http, edge, links.admin_token, {"key": key})
    if not outcome.ok:
        raise RuntimeError(f"purge of {key} on {edge} failed again: {outcome.error}")
    log.info("purge retried", extra={"edge": edge, "key": key, "attempt": delivery.attempt})


@tasks.task(FEED_QUEUE)
async def fan_out_job(delivery: Delivery) -> None:
    """The worker's feed fan-out handler."""
    action, photo_id, owner_id = fan_out_of(delivery.payload)
    written = await fan_out(await worker_store(), action, photo_id, owner_id)
    log.info(
        "feeds updated",
        extra={"action": action, "photo_id": photo_id, "feeds": written},
    )


def fan_out_of(payload: Any) -> tuple[FanOutAction, int, int]:
    """(action, photo id, owner id) of a fan-out job; a malformed one fails permanently."""
    if isinstance(payload, dict):
        action, photo_id, owner_id = (payload.get(k) for k in ("action", "photo_id", "owner_id"))
        if action in ("add", "remove") and _is_id(photo_id) and _is_id(owner_id):
            return action, photo_id, owner_id
    raise PermanentFailure(
        "expected {'action': 'add'|'remove', 'photo_id': <id>, 'owner_id': <id>}, "
        f"got {payload!r}"
    )


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


_worker_stores: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, asyncio.Task[ShardedAppStore]
] = weakref.WeakKeyDictionary()


async def worker_store() -> ShardedAppStore:
    """The worker process's store, opened by its first job and kept for the life of the
    event loop (opening one migrates and reads the shard map; jobs are many). A failed
    open is retried by the next job."""
    loop = asyncio.get_running_loop()
    opening = _worker_stores.get(loop)
    if opening is None:
        settings = current_settings()
        opening = loop.create_task(
            ShardedAppStore.open(settings.shards, settings.data_dir, settings.shard_dcs)
        )
        _worker_stores[loop] = opening
    try:
        return await asyncio.shield(opening)
    except Exception:
        if _worker_stores.get(loop) is opening:
            del _worker_stores[loop]
        raise
