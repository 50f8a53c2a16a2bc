"""Rules for what users type: usernames, passwords, photo titles and ids. Pure functions.

Each `*_problem` function returns a sentence for the user, or None when the value is fine,
so the JSON API and the HTML forms report the same wording.
"""

from __future__ import annotations

import re

USERNAME_MIN, USERNAME_MAX = 3, 32
PASSWORD_MIN, PASSWORD_MAX = 8, 256
TITLE_MAX = 200
_USERNAME = re.compile(rf"[a-z0-9_]{{{USERNAME_MIN},{USERNAME_MAX}}}", re.ASCII)
# SQLite integers are signed 64-bit: a longer id can never exist, and binding one fails.
_MAX_ID_DIGITS = 18


def username_problem(username: str) -> str | None:
    """Why `username` cannot be registered, or None."""
    if _USERNAME.fullmatch(username) is None:
        return (
            f"username must be {USERNAME_MIN}-{USERNAME_MAX} characters: "
            "lowercase letters, digits or underscore"
        )
    return None


def password_problem(password: str) -> str | None:
    """Why `password` is unacceptable, or None."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return f"password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters"
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:
        return "password must be valid Unicode text"
    return None


def clean_title(title: str) -> str:
    """A title as stored: whitespace collapsed, control characters dropped, length capped."""
    printable = "".join(ch if ch.isprintable() else " " for ch in title)
    return " ".join(printable.split())[:TITLE_MAX]


def parse_id(text: str) -> int | None:
    """A positive database id from a URL segment, or None when it cannot name a row."""
    if not text.isascii() or not text.isdigit() or len(text) > _MAX_ID_DIGITS:
        return None
    value = int(text)
    return value if value > 0 else None
