"""The JSON API (the load generator drives these exact routes).

Every unsafe request passes the same-origin check of `csrf.cross_origin_reason`; bodies
are JSON (signup, login) or multipart (photo upload), read with a byte limit.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from millions.app import accounts, csrf, social
from millions.app.bodies import BadBody, BodyTooLarge, json_object
from millions.app.media import PhotoRemovalError, photo_json, remove_photo
from millions.app.state import AppState, app_state, current_user, session_of
from millions.app.store import User
from millions.app.uploads import UploadError, receive_upload
from millions.app.validation import parse_id

JSON_BODY_LIMIT = 16 * 1024
PHOTO_LIST_LIMIT = 100
FEED_LIST_LIMIT = 200

Endpoint = Callable[[Request], Awaitable[Response]]


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def same_origin(endpoint: Endpoint) -> Endpoint:
    """Refuse unsafe requests that a browser labels as coming from another site."""

    @wraps(endpoint)
    async def checked(request: Request) -> Response:
        reason = csrf.cross_origin_reason(request.method, request.headers)
        if reason is not None:
            return error(403, reason)
        return await endpoint(request)

    return checked


async def _credentials(request: Request) -> tuple[str, str]:
    try:
        document = await json_object(request, JSON_BODY_LIMIT)
    except BodyTooLarge as exc:
        raise accounts.AccountError(413, str(exc)) from None
    except BadBody as exc:
        raise accounts.AccountError(exc.status, str(exc)) from None
    return accounts.credentials(document.get("username"), document.get("password"))


async def _account_action(
    request: Request, act: Callable[[AppState, str, str], Awaitable[User]], status_code: int
) -> Response:
    """Sign-up and log-in: validate the JSON credentials, act, start the session."""
    try:
        username, password = await _credentials(request)
        user = await act(app_state(request), username, password)
    except accounts.AccountError as exc:
        return error(exc.status, exc.message)
    accounts.start_session(session_of(request), user)
    return JSONResponse({"id": user.id, "username": user.username}, status_code=status_code)


@same_origin
async def signup(request: Request) -> Response:
    return await _account_action(request, accounts.sign_up, 201)


@same_origin
async def login(request: Request) -> Response:
    return await _account_action(request, accounts.log_in, 200)


@same_origin
async def logout(request: Request) -> Response:
    accounts.end_session(session_of(request))
    return Response(status_code=204)


async def me(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return error(401, "not logged in")
    return JSONResponse({"id": user.id, "username": user.username})


async def list_photos(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return error(401, "not logged in")
    photos = await app_state(request).store.photos_of(user.id, PHOTO_LIST_LIMIT)
    return JSONResponse({"photos": [photo_json(photo) for photo in photos]})


@same_origin
async def upload_photo(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return error(401, "not logged in")
    try:
        photo = await receive_upload(request, app_state(request), user)
    except UploadError as exc:
        return error(exc.status, exc.message)
    return JSONResponse(photo_json(photo), status_code=201)


async def get_photo(request: Request) -> Response:
    photo_id = parse_id(request.path_params["photo_id"])
    photo = None if photo_id is None else await app_state(request).store.photo(photo_id)
    if photo is None:
        return error(404, "no such photo")
    return JSONResponse(photo_json(photo))


@same_origin
async def delete_photo(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return error(401, "not logged in")
    try:
        await remove_photo(app_state(request), user, parse_id(request.path_params["photo_id"]))
    except PhotoRemovalError as exc:
        return error(exc.status, exc.message)
    return Response(status_code=204)


async def user_profile(request: Request) -> Response:
    state = app_state(request)
    try:
        found = await social.profile(
            state, await current_user(request), request.path_params["username"]
        )
    except social.SocialError as exc:
        return error(exc.status, exc.message)
    return JSONResponse(
        {
            "id": found.user.id,
            "username": found.user.username,
            "followers": found.followers,
            "followed_by_you": found.followed_by_viewer,
            "photos": [photo_json(photo) for photo in found.photos],
        }
    )


@same_origin
async def follow(request: Request) -> Response:
    """POST follows (201 when new, 200 when it existed), DELETE unfollows (204)."""
    user = await current_user(request)
    if user is None:
        return error(401, "not logged in")
    username = request.path_params["username"]
    try:
        if request.method == "DELETE":
            await social.unfollow(app_state(request), user, username)
            return Response(status_code=204)
        created = await social.follow(app_state(request), user, username)
    except social.SocialError as exc:
        return error(exc.status, exc.message)
    return JSONResponse({"following": username}, status_code=201 if created else 200)


async def feed(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return error(401, "not logged in")
    raw = request.query_params.get("limit", str(social.FEED_LIMIT))
    valid = raw.isascii() and raw.isdigit() and len(raw) <= 4
    if not valid or not 1 <= int(raw) <= FEED_LIST_LIMIT:
        return error(400, f"limit must be a whole number from 1 to {FEED_LIST_LIMIT}")
    entries = await social.feed(app_state(request), user, int(raw))
    return JSONResponse({"photos": [social.feed_entry_json(entry) for entry in entries]})


routes = [
    Route("/api/signup", signup, methods=["POST"]),
    Route("/api/login", login, methods=["POST"]),
    Route("/api/logout", logout, methods=["POST"]),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/photos", list_photos, methods=["GET"]),
    Route("/api/photos", upload_photo, methods=["POST"]),
    Route("/api/photos/{photo_id}", get_photo, methods=["GET"]),
    Route("/api/photos/{photo_id}", delete_photo, methods=["DELETE"]),
    Route("/api/users/{username}", user_profile, methods=["GET"]),
    Route("/api/users/{username}/follow", follow, methods=["POST", "DELETE"]),
    Route("/api/feed", feed, methods=["GET"]),
]
