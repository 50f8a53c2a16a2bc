"""Error responses without tracebacks: JSON under /api/, an HTML page everywhere else."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from millions.app.rendering import renderer_of

log = logging.getLogger("millions.app")
API_PREFIX = "/api/"


def is_api(request: Request) -> bool:
    return request.url.path.startswith(API_PREFIX)


def error_response(
    request: Request, status: int, message: str, headers: dict[str, str] | None = None
) -> Response:
    if is_api(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return renderer_of(request).page(
        request, "error.html", {"status": status, "message": message}, status, headers
    )


def not_found(request: Request) -> Response:
    return error_response(request, 404, "not found")


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's HTTPException (404, 405, 400 from its parsers) in the app's format."""
    assert isinstance(exc, HTTPException)
    messages = {404: "not found", 405: "method not allowed"}
    message = messages.get(exc.status_code) or str(exc.detail)
    return error_response(request, exc.status_code, message, dict(exc.headers or {}))


async def server_error(request: Request, exc: Exception) -> Response:
    """Any unhandled exception: logged here with its traceback, a plain 500 to the client.

    This runs outside the app's middleware stack, so it sets the server's headers itself.
    """
    log.error(
        "unhandled error", exc_info=exc, extra={"path": request.url.path, "method": request.method}
    )
    headers = {"x-served-by": renderer_of(request).component, "cache-control": "no-store"}
    if is_api(request):
        return JSONResponse({"error": "internal server error"}, status_code=500, headers=headers)
    return renderer_of(request).page(
        request,
        "error.html",
        {"status": 500, "message": "something went wrong on our side"},
        500,
        headers,
    )
