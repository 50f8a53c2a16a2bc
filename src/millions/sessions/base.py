"""The session interface: what an app sees (`Session`) and what a store implements.

Web servers keep no per-user state in memory: the session data lives in a shared
`SessionStore`, the browser holds only a signed session id. Any web server can
therefore answer any request, and servers can come and go freely.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol


class SessionDataError(ValueError):
    """Session data that cannot be stored: not a dict with str keys of JSON values."""


class SessionStoreError(Exception):
    """The store failed or is unreachable; engines wrap their driver's errors in this."""


def encode_data(data: dict[str, Any]) -> str:
    """The stored form of session data: compact JSON, checked before any store write."""
    if not isinstance(data, dict):
        raise SessionDataError(f"session data must be a dict, not {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise SessionDataError(f"session keys must be str, got {key!r}")
    try:
        return json.dumps(data, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SessionDataError(f"session data is not JSON-serializable: {exc}") from exc


def decode_data(stored: str | bytes) -> dict[str, Any] | None:
    """Session data from its stored form; None when the record is not a JSON object.

    A corrupt record reads as no session (the user starts afresh) instead of failing
    every later request that carries its cookie.
    """
    try:
        value = json.loads(stored)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def check_ttl(ttl_s: int) -> int:
    """Reject expiries a store cannot honour (Redis refuses EX 0)."""
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s < 1:
        raise ValueError(f"ttl_s must be a whole number of seconds >= 1, got {ttl_s!r}")
    return ttl_s


class SessionStore(Protocol):
    """A shared, server-side session store. Every engine passes one contract suite.

    Expiry is server-side and sliding: `load` returns None for an id whose TTL has
    passed, and `save`/`touch` push the expiry `ttl_s` seconds into the future.
    """

    async def load(self, session_id: str) -> dict[str, Any] | None:
        """The session's data, or None when it is unknown or expired."""
        ...

    async def save(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        """Create or replace the session and restart its expiry."""
        ...

    async def touch(self, session_id: str, ttl_s: int) -> None:
        """Restart the expiry of an existing session without rewriting its data."""
        ...

    async def delete(self, session_id: str) -> None:
        """Forget the session; deleting an unknown id is not an error."""
        ...

    async def purge_expired(self) -> int:
        """Remove expired sessions; returns how many were removed."""
        ...

    async def count(self) -> int:
        """Number of live (unexpired) sessions."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...


class Session(MutableMapping[str, Any]):
    """The current request's session, a dict of JSON-serializable values.

    An app reads and writes it like a dict (`request.session["user_id"] = 7`) and calls
    `rotate()` after a login (a new id, the same data: defeats session fixation) and
    `destroy()` on logout (the server-side record is deleted and the cookie cleared).
    The middleware persists it before the response headers leave.

    Changes are noticed through item assignment and deletion: to change a nested value,
    assign the key again (`session["cart"] = cart + [item]`), since mutating it in place
    (`session["cart"].append(item)`) does not mark the session modified.
    """

    __slots__ = ("_data", "destroyed", "id", "modified", "rotated_from")

    def __init__(self, session_id: str | None, data: dict[str, Any] | None = None) -> None:
        self.id = session_id
        self._data: dict[str, Any] = dict(data or {})
        self.modified = False
        self.destroyed = False
        self.rotated_from: str | None = None

    @property
    def is_new(self) -> bool:
        """True when no stored session backs this request yet."""
        return self.id is None

    def rotate(self) -> None:
        """Give the session a new id at the end of this request, keeping its data."""
        if self.id is not None and self.rotated_from is None:
            self.rotated_from = self.id
        self.id = None
        self.modified = True

    def destroy(self) -> None:
        """Delete the session server-side and clear the cookie."""
        self._data.clear()
        self.destroyed = True
        self.modified = True

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value
        self.modified = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self.modified = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def clear(self) -> None:
        if self._data:
            self._data.clear()
            self.modified = True
