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
