"""Receiving a photo upload: bounded body, decoded validation, file, database row, then
the processing job (see `pipeline`).

Shared by `POST /api/photos` and the HTML `POST /upload` form. The body may exceed the
photo limit only by a small allowance for the multipart framing and text fields.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request

from millions.app.bodies import BodyTooLarge, limited, media_type
from millions.app.images import ImageRejected, inspect_image
from millions.app.pipeline import submit_photo
from millions.app.state import AppState
from millions.app.store import NewPhoto, Photo, User
from millions.app.validation import clean_title

PHOTO_FIELD = "photo"
TITLE_FIELD = "title"
# Part headers, the boundary lines, a title and a CSRF token fit easily in this.
MULTIPART_ALLOWANCE = 16 * 1024
MAX_TEXT_FIELD_BYTES = 4 * 1024


class UploadError(Exception):
    """The upload is refused; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(limit: int) -> UploadError:
    return UploadError(413, f"the photo is larger than the {limit:,}-byte limit")


async def receive_upload(
    request: Request,
    state: AppState,
    owner: User,
    form_is_trusted: Callable[[FormData], bool] | None = None,
) -> Photo:
    """Store the uploaded photo for `owner` or raise UploadError.

    `form_is_trusted` lets the HTML form check its CSRF token once the body is parsed.
    """
    limit = state.settings.max_upload_bytes
    if media_type(request) != "multipart/form-data":
        raise UploadError(415, "send the photo as multipart/form-data")
    try:
        form = await limited(request, limit + MULTIPART_ALLOWANCE).form(
            max_files=1, max_fields=8, max_part_size=MAX_TEXT_FIELD_BYTES
        )
    except BodyTooLarge:
        raise too_large(limit) from None
    except HTTPException as exc:
        raise UploadError(400, f"malformed multipart body: {exc.detail}") from None
    try:
        if form_is_trusted is not None and not form_is_trusted(form):
            raise UploadError(403, "the form expired; reload the page and try again")
        upload = form.get(PHOTO_FIELD)
        if not isinstance(upload, UploadFile):
            raise UploadError(400, f"attach the image as a file field named {PHOTO_FIELD!r}")
        if upload.size is not None and upload.size > limit:
            raise too_large(limit)
        data = await upload.read()
        if len(data) > limit:
            raise too_large(limit)
        title_field = form.get(TITLE_FIELD)
        title = clean_title(title_field) if isinstance(title_field, str) else ""
    finally:
        await form.close()
    try:
        info = await asyncio.to_thread(inspect_image, data, state.settings.max_image_pixels)
    except ImageRejected as exc:
        raise UploadError(exc.status, exc.message) from None
    await asyncio.to_thread(state.files.write, info.sha256, info.content_type, data)
    photo = await state.store.add_photo(
        NewPhoto(
            owner_id=owner.id,
            owner_username=owner.username,
            title=title,
            content_type=info.content_type,
            width=info.width,
            height=info.height,
            size_bytes=info.size_bytes,
            sha256=info.sha256,
        )
    )
    return await submit_photo(state, photo)
