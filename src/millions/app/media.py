"""Serving photo bytes: immutable by id, so caches (the CDN edge, browsers) may keep them.

Each image is tagged with surrogate keys (`photo-<id>`, `user-<owner id>`), so deleting a
photo purges it from every edge by key, whatever URL or Host it was cached under.

The pipeline's variants (`/photos/<id>/thumb|crop|sharpen|blur`) are served the same way
once the photo is processed, and are 404 (not cached: `no-store`) until then.

The ETag is the content hash (with the variant name for a variant), so every web server
computes the same one for a photo and a revalidation answered by any server matches.
Conditional requests follow RFC 9110 section 13: If-None-Match wins over If-Modified-Since.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from millions.app.errors import not_found
from millions.app.pipeline import retry_failed_purges, submit_fan_out
from millions.app.state import AppState, app_state
from millions.app.store import Photo, User
from millions.app.urls import image_url, page_url, variant_url
from millions.app.validation import parse_id
from millions.app.variants import VARIANTS

IMAGE_CACHE_CONTROL = "public, max-age=86400"
log = logging.getLogger("millions.app")


def photo_json(photo: Photo) -> dict[str, object]:
    """The JSON API's description of a photo."""
    return {
        "id": photo.id,
        "title": photo.title,
        "owner": photo.owner_username,
        "content_type": photo.content_type,
        "width": photo.width,
        "height": photo.height,
        "bytes": photo.size_bytes,
        "created_at": photo.created_at,
        "url": image_url(photo.id),
        "page_url": page_url(photo.id),
        "processed": photo.processed,
        "variants": variant_urls(photo),
    }


def variant_urls(photo: Photo) -> dict[str, str]:
    """Each variant's URL once the photo is processed; empty before."""
    if not photo.processed:
        return {}
    return {name: variant_url(photo.id, name) for name in VARIANTS}


def surrogate_key(photo_id: int) -> str:
    return f"photo-{photo_id}"


def etag_of(photo: Photo) -> str:
    return f'"{photo.sha256}"'


def http_date(timestamp: float) -> str:
    return formatdate(timestamp, usegmt=True)


def is_not_modified(request_headers: Mapping[str, str], etag: str, last_modified: float) -> bool:
    """Whether a GET with these headers may be answered 304 for this representation."""
    if_none_match = request_headers.get("if-none-match")
    if if_none_match is not None:
        wanted = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in wanted or etag.removeprefix("W/") in wanted
    if_modified_since = request_headers.get("if-modified-since")
    if if_modified_since is None:
        return False
    try:
        since = parsedate_to_datetime(if_modified_since).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(last_modified) <= since


class PhotoRemovalError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def remove_photo(state: AppState, user: User, photo_id: int | None) -> None:
    """Delete a photo of `user`, take it out of the feeds and purge it from every CDN
    edge; PhotoRemovalError when there is no such photo (404) or it is someone else's
    (403)."""
    photo = None if photo_id is None else await state.store.photo(photo_id)
    if photo is None:
        raise PhotoRemovalError(404, "no such photo")
    if photo.owner_id != user.id:
        raise PhotoRemovalError(403, "only its owner can delete a photo")
    if not await state.store.delete_photo(photo.id, user.id):
        raise PhotoRemovalError(404, "no such photo")
    await submit_fan_out(state, "remove", photo)
    key = surrogate_key(photo.id)
    await retry_failed_purges(state, await state.cdn.purge_keys([key]), key)
    log.info("photo deleted", extra={"photo_id": photo.id, "owner_id": user.id})


async def photo_image(request: Request) -> Response:
    """GET /photos/{photo_id}/image."""
    photo_id = parse_id(request.path_params["photo_id"])
    photo = None if photo_id is None else await app_state(request).store.photo(photo_id)
    if photo is None:
        return not_found(request)
    path = app_state(request).files.path(photo.sha256, photo.content_type)
    return await serve_photo_file(request, photo, path, etag_of(photo))


async def photo_variant(request: Request) -> Response:
    """GET /photos/{photo_id}/{variant}: a pipeline variant, 404 until it is made."""
    variant = request.path_params["variant"]
    photo_id = parse_id(request.path_params["photo_id"])
    if variant not in VARIANTS or photo_id is None:
        return not_found(request)
    photo = await app_state(request).store.photo(photo_id)
    if photo is None or not photo.processed:
        return not_found(request)
    path = app_state(request).files.variant_path(photo.sha256, photo.content_type, variant)
    return await serve_photo_file(request, photo, path, f'"{photo.sha256}-{variant}"')


async def serve_photo_file(request: Request, photo: Photo, path: Path, etag: str) -> Response:
    """The file at `path` with the photo's caching headers, or 304 / 404."""
    headers = {
        "etag": etag,
        "last-modified": http_date(photo.created_at),
        "cache-control": IMAGE_CACHE_CONTROL,
        "surrogate-key": f"{surrogate_key(photo.id)} user-{photo.owner_id}",
    }
    if is_not_modified(request.headers, headers["etag"], photo.created_at):
        return Response(status_code=304, headers=headers)
    try:
        stat_result = await asyncio.to_thread(os.stat, path)
    except FileNotFoundError:
        log.error("photo file missing", extra={"photo_id": photo.id, "path": str(path)})
        return not_found(request)
    return FileResponse(
        path, headers=headers, media_type=photo.content_type, stat_result=stat_result
    )
