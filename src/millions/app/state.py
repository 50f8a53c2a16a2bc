"""What a request handler reaches for: the process's resources and the user's session.

Resources (database, photo files, password hasher) are opened in the lifespan and
handed to requests through Starlette's lifespan state; per-user state lives only in
the session, which the session middleware loads from the shared store.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from millions.app.freshness import USER_ID_KEY as USER_ID_KEY
from millions.app.passwords import Passwords
from millions.app.photo_files import PhotoFiles
from millions.app.settings import AppSettings
from millions.app.store import AppStore, User
from millions.edge.links import CdnLinks
from millions.queue.base import MessageQueue
from millions.sessions.base import Session

STATE_KEY = "millions_app"


@dataclass(frozen=True)
class AppState:
    """Everything one web server process opened at startup."""

    settings: AppSettings
    store: AppStore
    files: PhotoFiles
    passwords: Passwords
    cdn: CdnLinks
    queue: MessageQueue | None = None  # None: photos are processed inline (see pipeline)


class AppMisconfigured(RuntimeError):
    """The app runs without its lifespan or without the session middleware."""


def app_state(request: Request) -> AppState:
    state = request.scope.get("state", {}).get(STATE_KEY)
    if not isinstance(state, AppState):
        raise AppMisconfigured(
            "millions.app: the lifespan did not run; start the server with lifespan enabled"
        )
    return state


def session_of(request: Request) -> Session:
    session = request.scope.get("session")
    if not isinstance(session, Session):
        raise AppMisconfigured(
            "millions.app needs millions.sessions.middleware.SessionMiddleware around it "
            "(`millions web` adds it)"
        )
    return session


async def current_user(request: Request) -> User | None:
    """The logged-in user, checked against the store (a stale session counts as logged out)."""
    user_id = session_of(request).get(USER_ID_KEY)
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        return None
    return await app_state(request).store.user_by_id(user_id)
