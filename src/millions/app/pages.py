"""The HTML site: home, signup, login, logout, upload, photo, profile and feed pages.

Forms follow POST-redirect-GET (303 on success); a failed form is shown again with a
message and a status that says what went wrong. Every form carries the session's CSRF
token, checked before anything changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from millions.app import accounts, csrf, social
from millions.app.bodies import BodyTooLarge, limited
from millions.app.errors import error_response, not_found
from millions.app.media import PhotoRemovalError, remove_photo
from millions.app.rendering import renderer_of
from millions.app.state import AppState, app_state, current_user, session_of
from millions.app.store import User
from millions.app.uploads import UploadError, receive_upload
from millions.app.urls import page_url, profile_url
from millions.app.validation import PASSWORD_MAX, PASSWORD_MIN, USERNAME_MAX, USERNAME_MIN, parse_id

FORM_BODY_LIMIT = 16 * 1024
HOME_PHOTO_LIMIT = 60
FOLLOWING_SHOWN = 50
EXPIRED_FORM = "the form expired; reload the page and try again"


class FormRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


async def read_form(request: Request) -> FormData:
    """A small url-encoded form whose CSRF token matches the session's."""
    try:
        form = await limited(request, FORM_BODY_LIMIT).form(max_files=0, max_fields=16)
    except BodyTooLarge as exc:
        raise FormRejected(413, str(exc)) from None
    except HTTPException as exc:
        raise FormRejected(400, f"malformed form: {exc.detail}") from None
    if not csrf.token_matches(session_of(request), form.get(csrf.FORM_FIELD)):
        raise FormRejected(403, EXPIRED_FORM)
    return form


def page(
    request: Request,
    name: str,
    user: User | None,
    context: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    return renderer_of(request).page(request, name, {"user": user, **(context or {})}, status)


def account_form(
    request: Request, name: str, username: str = "", error: str | None = None, status: int = 200
) -> Response:
    rules = {
        "username_min": USERNAME_MIN,
        "username_max": USERNAME_MAX,
        "password_min": PASSWORD_MIN,
        "password_max": PASSWORD_MAX,
    }
    context = {"username": username, "error": error, **rules}
    return page(request, name, None, context, status)


async def home(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return page(request, "home.html", None)
    photos = await app_state(request).store.photos_of(user.id, HOME_PHOTO_LIMIT)
    return page(request, "home.html", user, {"photos": photos, **upload_context(request)})


async def signup_form(request: Request) -> Response:
    if await current_user(request) is not None:
        return see_other("/")
    return account_form(request, "signup.html")


async def _account_submit(
    request: Request,
    template: str,
    act: Callable[[AppState, str, str], Awaitable[User]],
    rule_status: int,
) -> Response:
    """Sign-up and log-in forms: validate, act, start the session, redirect home.

    `rule_status` is the status a broken username/password rule (422 in the API) gets.
    """
    username = ""
    try:
        form = await read_form(request)
        raw_username = form.get("username")
        username = raw_username if isinstance(raw_username, str) else ""
        name, password = accounts.credentials(raw_username, form.get("password"))
        user = await act(app_state(request), name, password)
    except (FormRejected, accounts.AccountError) as exc:
        status = rule_status if exc.status == 422 else exc.status
        return account_form(request, template, username, exc.message, status)
    accounts.start_session(session_of(request), user)
    return see_other("/")


async def signup_submit(request: Request) -> Response:
    return await _account_submit(request, "signup.html", accounts.sign_up, 400)


async def login_form(request: Request) -> Response:
    if await current_user(request) is not None:
        return see_other("/")
    return account_form(request, "login.html")


async def login_submit(request: Request) -> Response:
    return await _account_submit(request, "login.html", accounts.log_in, 422)


async def logout_submit(request: Request) -> Response:
    try:
        await read_form(request)
    except FormRejected as exc:
        return error_response(request, exc.status, exc.message)
    accounts.end_session(session_of(request))
    return see_other("/")


def upload_context(request: Request) -> dict[str, Any]:
    return {"max_upload_bytes": app_state(request).settings.max_upload_bytes}


async def upload_form(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return see_other("/login")
    return page(request, "upload.html", user, upload_context(request))


async def upload_submit(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return see_other("/login")
    session = session_of(request)

    def form_is_trusted(form: FormData) -> bool:
        return csrf.token_matches(session, form.get(csrf.FORM_FIELD))

    try:
        photo = await receive_upload(request, app_state(request), user, form_is_trusted)
    except UploadError as exc:
        context = {"error": exc.message, **upload_context(request)}
        return page(request, "upload.html", user, context, exc.status)
    return see_other(page_url(photo.id))


async def photo_page(request: Request) -> Response:
    photo_id = parse_id(request.path_params["photo_id"])
    photo = None if photo_id is None else await app_state(request).store.photo(photo_id)
    if photo is None:
        return not_found(request)
    user = await current_user(request)
    return page(request, "photo.html", user, {"photo": photo})


async def photo_delete(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return see_other("/login")
    try:
        await read_form(request)
        await remove_photo(app_state(request), user, parse_id(request.path_params["photo_id"]))
    except (FormRejected, PhotoRemovalError) as exc:
        return error_response(request, exc.status, exc.message)
    return see_other("/")


async def profile_page(request: Request) -> Response:
    user = await current_user(request)
    try:
        found = await social.profile(app_state(request), user, request.path_params["username"])
    except social.SocialError as exc:
        return error_response(request, exc.status, exc.message)
    return page(request, "profile.html", user, {"profile": found})


async def follow_submit(request: Request) -> Response:
    """POST /u/{username}/follow and /u/{username}/unfollow: back to the profile."""
    user = await current_user(request)
    if user is None:
        return see_other("/login")
    username = request.path_params["username"]
    try:
        await read_form(request)
        if request.url.path.endswith("/unfollow"):
            await social.unfollow(app_state(request), user, username)
        else:
            await social.follow(app_state(request), user, username)
    except (FormRejected, social.SocialError) as exc:
        return error_response(request, exc.status, exc.message)
    return see_other(profile_url(username))


async def feed_page(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return see_other("/login")
    entries = await social.feed(app_state(request), user)
    following = await app_state(request).store.following(user.id, FOLLOWING_SHOWN)
    return page(request, "feed.html", user, {"entries": entries, "following": following})


routes = [
    Route("/", home, methods=["GET"]),
    Route("/signup", signup_form, methods=["GET"]),
    Route("/signup", signup_submit, methods=["POST"]),
    Route("/login", login_form, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout_submit, methods=["POST"]),
    Route("/upload", upload_form, methods=["GET"]),
    Route("/upload", upload_submit, methods=["POST"]),
    Route("/p/{photo_id}", photo_page, methods=["GET"]),
    Route("/p/{photo_id}/delete", photo_delete, methods=["POST"]),
    Route("/u/{username}", profile_page, methods=["GET"]),
    Route("/u/{username}/follow", follow_submit, methods=["POST"]),
    Route("/u/{username}/unfollow", follow_submit, methods=["POST"]),
    Route("/feed", feed_page, methods=["GET"]),
]
