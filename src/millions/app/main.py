"""The photo-sharing reference app: `create_app()` builds it, `millions.app:app` is one.

Run by `millions web` (uvicorn, wrapped in the shared-session middleware) on several
stateless web servers that share one data directory; queue workers running
`millions.app.pipeline:tasks` make each photo's thumbnail and variants.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from millions.app import api, pages
from millions.app.assets import static_asset
from millions.app.errors import http_error, server_error
from millions.app.freshness import ReadYourWritesMiddleware
from millions.app.headers import ServerHeadersMiddleware
from millions.app.media import photo_image, photo_variant
from millions.app.passwords import Passwords
from millions.app.photo_files import PhotoFiles
from millions.app.pipeline import queue_from_env, requeue_forever
from millions.app.rendering import Renderer
from millions.app.settings import AppSettings, current_settings
from millions.app.state import STATE_KEY, AppState
from millions.app.store import ShardedAppStore
from millions.edge.links import CdnLinks

log = logging.getLogger("millions.app")


async def cancelled(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def create_app(
    data_dir: Path | None = None,
    max_upload_bytes: int | None = None,
    *,
    password_hasher: PasswordHasher | None = None,
) -> Starlette:
    """The app; None arguments come from MILLIONS_DATA_DIR / MILLIONS_MAX_UPLOAD_BYTES.

    `password_hasher` exists for tests, which use argon2's cheapest profile to stay fast.
    """
    settings = current_settings(data_dir, max_upload_bytes)
    hasher = password_hasher or PasswordHasher()

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[Mapping[str, Any]]:
        async with open_resources(settings, hasher) as state:
            yield {STATE_KEY: state}

    app = Starlette(
        routes=[
            *pages.routes,
            *api.routes,
            Route("/photos/{photo_id}/image", photo_image, methods=["GET"]),
            Route("/photos/{photo_id}/{variant}", photo_variant, methods=["GET"]),
            Route("/static/{name}", static_asset, methods=["GET", "HEAD"]),
        ],
        middleware=[
            Middleware(ServerHeadersMiddleware, component=settings.component),
            Middleware(ReadYourWritesMiddleware, ttl_s=settings.shards.cache.ttl_s),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.renderer = Renderer(settings.component)
    app.state.settings = settings
    return app


@asynccontextmanager
async def open_resources(settings: AppSettings, hasher: PasswordHasher) -> AsyncIterator[AppState]:
    """The sharded store, the photo folder, the hashing threads, the CDN links and the
    pipeline's queue (None without MILLIONS_QUEUE_URL) of one web server process."""
    settings.photos_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as resources:
        queue = queue_from_env()
        if queue is not None:
            resources.push_async_callback(queue.close)
        store = await ShardedAppStore.open(settings.shards, settings.data_dir, settings.shard_dcs)
        resources.push_async_callback(store.close)
        passwords = Passwords(hasher)
        resources.callback(passwords.close)
        cdn = CdnLinks.from_env()
        await cdn.start()
        resources.push_async_callback(cdn.close)
        state = AppState(
            settings=settings,
            store=store,
            files=PhotoFiles(settings.photos_dir),
            passwords=passwords,
            cdn=cdn,
            queue=queue,
        )
        if queue is not None:
            sweeper = asyncio.create_task(requeue_forever(state))
            resources.push_async_callback(cancelled, sweeper)
        log.info(
            "app ready",
            extra={
                "data_dir": str(settings.data_dir),
                "shards": f"{settings.shards.engine}, {len(settings.shards.shards)} configured",
                "cdn": cdn.base_url,
                "background_work": "queued" if queue is not None else "inline",
            },
        )
        yield state
