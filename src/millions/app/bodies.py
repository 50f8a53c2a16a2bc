"""Request bodies read with a byte limit, so no client can make a server buffer gigabytes.

A declared Content-Length over the limit is refused before a byte is read; a body
without one (chunked) or lying about it is counted as it streams and refused as soon as
it passes the limit. Starlette's own parsers read through the wrapped `receive`, so the
limit holds for JSON, url-encoded and multipart bodies alike.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive


class BodyTooLarge(Exception):
    """The request body is, or says it is, longer than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body larger than {limit} bytes")
        self.limit = limit


class BadBody(Exception):
    """The body is not what the endpoint accepts: 415 for the wrong media type, else 400."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def declared_length(request: Request) -> int | None:
    """The Content-Length header as a number, None when absent or malformed."""
    raw = request.headers.get("content-length")
    if raw is None or not raw.strip().isdigit():
        return None
    return int(raw)


def limited(request: Request, limit: int) -> Request:
    """A view of `request` whose body raises BodyTooLarge past `limit` bytes."""
    length = declared_length(request)
    if length is not None and length > limit:
        raise BodyTooLarge(limit)
    return Request(request.scope, _counting_receive(request.receive, limit))


def _counting_receive(receive: Receive, limit: int) -> Receive:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return counted


def media_type(request: Request) -> str:
    """The request's media type, lowercased, without parameters."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; BadBody or BodyTooLarge otherwise."""
    if media_type(request) != "application/json":
        raise BadBody(415, "send the body as application/json")
    body = await limited(request, limit).body()
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadBody(400, "the body is not valid JSON") from None
    if not isinstance(document, dict):
        raise BadBody(400, "the body must be a JSON object")
    return document
