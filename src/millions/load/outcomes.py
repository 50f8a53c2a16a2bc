"""Did a request succeed, and if not, what kind of failure was it.

These rules are the load generator's definition of honest numbers: a request fails on a
transport error, a timeout or any status other than the one its action expects. A 401 on
an authenticated action after login means the user was logged out (a lost session) and
gets its own kind so scenarios can count it apart from server errors.
"""

from __future__ import annotations

import aiohttp

# The status each request kind expects from the photo-sharing app.
EXPECTED_STATUS: dict[str, int] = {
    "signup": 201,
    "login": 200,
    "browse": 200,
    "me": 200,
    "list": 200,
    "view": 200,
    "image": 200,
    "upload": 201,
}

# Actions that need the session; a 401 on them means the session was lost.
AUTHENTICATED_ACTIONS = frozenset({"me", "list", "upload"})

LOGGED_OUT = "logged_out"
WRONG_USER = "wrong_user"
BAD_RESPONSE = "bad_response"
DNS_FAILURE = "dns"  # the target's name did not resolve through the geo DNS


def status_failure(action: str, status: int) -> str | None:
    """The failure kind for `status` on `action`, or None when it is the expected status."""
    if status == EXPECTED_STATUS[action]:
        return None
    if status == 401 and action in AUTHENTICATED_ACTIONS:
        return LOGGED_OUT
    if status == 401 and action == "login":
        return "bad_credentials"
    if status == 409 and action == "signup":
        return "username_taken"
    return f"status_{status}"


def exception_failure(exc: BaseException) -> str:
    """The failure kind of a request that got no complete response."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect"
    if isinstance(
        exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientOSError
    ):
        return "disconnected"
    if isinstance(exc, aiohttp.ClientResponseError):
        return "bad_http"
    if isinstance(exc, aiohttp.ClientError):
        return "client_error"
    return "os_error"


def identity_failure(document: object, username: str) -> str | None:
    """A signup/login/me answer must name the user who asked; anyone else is a session mix-up."""
    if not isinstance(document, dict) or not isinstance(document.get("username"), str):
        return BAD_RESPONSE
    return None if document["username"] == username else WRONG_USER


def upload_failure(document: object) -> str | None:
    """An upload answer must carry the new photo's id."""
    if not isinstance(document, dict) or not isinstance(document.get("id"), str | int):
        return BAD_RESPONSE
    return None


def photo_list_failure(document: object) -> str | None:
    """A photo list answer is {"photos": [{"id": ...}, ...]}."""
    if not isinstance(document, dict) or not isinstance(document.get("photos"), list):
        return BAD_RESPONSE
    for photo in document["photos"]:
        if not isinstance(photo, dict) or not isinstance(photo.get("id"), str | int):
            return BAD_RESPONSE
    return None
