"""What to do with a request's session when its response starts. Pure, no I/O.

The rules:

* A session is stored only while it holds data: an anonymous visitor who never writes
  to the session costs no store write, and a session emptied by the app is deleted.
* New data gets a new id; `rotate()` moves the data to a new id and deletes the old one;
  `destroy()` deletes it and clears the cookie (data written after `destroy()` starts a
  new session).
* A changed session is saved (which restarts its expiry); an unchanged one is only
  touched, and only when its cookie is older than the touch interval, so a busy user
  costs one store write per interval rather than per request.
* Every save or touch re-issues the cookie (fresh timestamp, fresh Max-Age); a cookie
  that can never be valid again (bad signature, too old) is cleared. A well-signed
  cookie naming an unknown session is left alone: it may be a request that raced a
  login's rotation, and clearing it could log the user out of the new session.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from millions.sessions.base import Session
from millions.sessions.cookies import CookieReading

CookieAction = Literal["keep", "set", "clear"]


@dataclass(frozen=True, slots=True)
class CommitPlan:
    """Store operations (in order: save, then deletes) and the cookie to send."""

    save: Literal["none", "new", "existing"] = "none"
    delete_ids: tuple[str, ...] = ()
    touch: bool = False
    cookie: CookieAction = "keep"
    created: bool = False
    rotated: bool = False
    destroyed: bool = False


def plan_commit(
    session: Session, loaded_id: str | None, cookie: CookieReading, touch_interval_s: float
) -> CommitPlan:
    """The plan for `session`, which was loaded under `loaded_id` (None: anonymous)."""
    has_data = len(session) > 0
    idle_cookie: CookieAction = "clear" if cookie.problem is not None else "keep"

    if session.destroyed or session.rotated_from is not None:
        old_ids = tuple(dict.fromkeys(i for i in (loaded_id, session.rotated_from) if i))
        if has_data:
            return CommitPlan(
                save="new",
                delete_ids=old_ids,
                cookie="set",
                created=session.destroyed or not old_ids,
                rotated=not session.destroyed and bool(old_ids),
                destroyed=session.destroyed and bool(old_ids),
            )
        cookie_action: CookieAction = "clear" if old_ids or cookie.present else "keep"
        return CommitPlan(delete_ids=old_ids, cookie=cookie_action, destroyed=bool(old_ids))

    if loaded_id is None or session.id != loaded_id:
        if has_data:
            return CommitPlan(save="new", cookie="set", created=True)
        return CommitPlan(cookie=idle_cookie)

    if session.modified:
        if has_data:
            return CommitPlan(save="existing", cookie="set")
        return CommitPlan(delete_ids=(loaded_id,), cookie="clear", destroyed=True)

    if cookie.age_s is None or cookie.age_s >= touch_interval_s:
        return CommitPlan(touch=True, cookie="set")
    return CommitPlan()
