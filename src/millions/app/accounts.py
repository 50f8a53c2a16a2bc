"""Signing up, logging in and out: shared by the JSON API and the HTML forms."""

from __future__ import annotations

from millions.app import csrf
from millions.app.state import USER_ID_KEY, AppState
from millions.app.store import User, UsernameTaken
from millions.app.validation import password_problem, username_problem
from millions.sessions.base import Session


class AccountError(Exception):
    """A signup or login that cannot proceed; `status` follows the JSON API's codes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def credentials(username: object, password: object) -> tuple[str, str]:
    """Both fields as strings, or AccountError(400) naming what is missing."""
    if not isinstance(username, str) or not isinstance(password, str):
        raise AccountError(400, "both 'username' and 'password' are required, as strings")
    return username, password


async def sign_up(state: AppState, username: str, password: str) -> User:
    """Register a new user: 422 for a rule violation, 409 when the name is taken."""
    problem = username_problem(username) or password_problem(password)
    if problem is not None:
        raise AccountError(422, problem)
    if await state.store.user_by_name(username) is not None:
        raise AccountError(409, f"the username {username!r} is taken")
    password_hash = await state.passwords.hash(password)
    try:
        return await state.store.create_user(username, password_hash)
    except UsernameTaken:  # somebody else won the race on another server
        raise AccountError(409, f"the username {username!r} is taken") from None


async def log_in(state: AppState, username: str, password: str) -> User:
    """The user with these credentials, or AccountError(401) without saying which was wrong."""
    plausible = username_problem(username) is None and password_problem(password) is None
    user = await state.store.user_by_name(username) if plausible else None
    if not await state.passwords.verify(user.password_hash if user else None, password):
        raise AccountError(401, "wrong username or password")
    assert user is not None
    if state.passwords.needs_rehash(user.password_hash):
        await state.store.set_password_hash(user.id, await state.passwords.hash(password))
    return user


def start_session(session: Session, user: User) -> None:
    """A new session id (defeats fixation), the user's id and a fresh form token."""
    session.rotate()
    session[USER_ID_KEY] = user.id
    csrf.renew_token(session)


def end_session(session: Session) -> None:
    session.destroy()
