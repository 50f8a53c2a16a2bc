"""GET /static/{name}: the app's static files, by hashed or plain name (see `rendering`)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse, Response

from millions.app.errors import not_found
from millions.app.rendering import MEDIA_TYPES, renderer_of


async def static_asset(request: Request) -> Response:
    """GET /static/{name}: a hashed name is immutable for a year; a plain one for an hour."""
    found = renderer_of(request).assets.resolve(request.path_params["name"])
    if found is None:
        return not_found(request)
    path, cache_control = found
    return FileResponse(
        path,
        headers={"cache-control": cache_control},
        media_type=MEDIA_TYPES.get(path.suffix),
    )
