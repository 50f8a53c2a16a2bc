"""The app's records (users, photos) behind a small repository interface.

`AppStore` is what the handlers use; `SqliteAppStore` is the embedded engine: one SQLite
file in WAL mode that every web server process of a data center opens at once (readers
never block the single writer; `busy_timeout` makes a writer wait its turn instead of
failing). A sharded engine can implement the same protocol: photos carry their owner's
username (denormalized) so a photo page never needs a join across shards.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosqlite

BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS photos (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    owner_id INTEGER NOT NULL REFERENCES users(id),
    owner_username TEXT NOT NULL,
    title TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS photos_by_owner ON photos (owner_id, id DESC);
"""

_USER_COLUMNS = "id, username, password_hash, created_at"
_PHOTO_COLUMNS = (
    "id, owner_id, owner_username, title, content_type, width, height, size_bytes, sha256,"
    " created_at"
)


@dataclass(frozen=True)
class User:
    id: int
    username: str
    password_hash: str
    created_at: float


@dataclass(frozen=True)
class NewPhoto:
    """A validated photo whose bytes are already stored, ready to be recorded."""

    owner_id: int
    owner_username: str
    title: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Photo:
    id: int
    owner_id: int
    owner_username: str
    title: str
    content_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    created_at: float


class UsernameTaken(Exception):
    """Another account already has this username."""


class AppStore(Protocol):
    """Users and photo records. Ids are positive integers assigned by the store."""

    async def create_user(self, username: str, password_hash: str) -> User:
        """Register a user; raises UsernameTaken when the name exists."""
        ...

    async def user_by_id(self, user_id: int) -> User | None: ...

    async def user_by_name(self, username: str) -> User | None: ...

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        """Replace a hash after a login that showed it uses outdated parameters."""
        ...

    async def add_photo(self, photo: NewPhoto) -> Photo: ...

    async def photo(self, photo_id: int) -> Photo | None: ...

    async def photos_of(self, owner_id: int, limit: int) -> list[Photo]:
        """The owner's photos, newest first, at most `limit`."""
        ...

    async def close(self) -> None: ...


class SqliteAppStore:
    """AppStore on one SQLite file shared by every process that opens it."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    @classmethod
    async def open(cls, path: Path) -> SqliteAppStore:
        """Open (creating if needed) the database; safe when several processes race."""
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        try:
            await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def create_user(self, username: str, password_hash: str) -> User:
        created_at = time.time()
        try:
            async with self._db.execute(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)",
                (username, password_hash, created_at),
            ) as cursor:
                user_id = cursor.lastrowid
        except sqlite3.IntegrityError:
            raise UsernameTaken(username) from None
        assert user_id is not None
        return User(user_id, username, password_hash, created_at)

    async def user_by_id(self, user_id: int) -> User | None:
        async with self._db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else User(*row)

    async def user_by_name(self, username: str) -> User | None:
        async with self._db.execute(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else User(*row)

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        cursor = await self._db.execute(
            "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
        )
        await cursor.close()

    async def add_photo(self, photo: NewPhoto) -> Photo:
        created_at = time.time()
        async with self._db.execute(
            "INSERT INTO photos (owner_id, owner_username, title, content_type, width, height,"
            " size_bytes, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                photo.owner_id,
                photo.owner_username,
                photo.title,
                photo.content_type,
                photo.width,
                photo.height,
                photo.size_bytes,
                photo.sha256,
                created_at,
            ),
        ) as cursor:
            photo_id = cursor.lastrowid
        assert photo_id is not None
        return Photo(
            id=photo_id,
            owner_id=photo.owner_id,
            owner_username=photo.owner_username,
            title=photo.title,
            content_type=photo.content_type,
            width=photo.width,
            height=photo.height,
            size_bytes=photo.size_bytes,
            sha256=photo.sha256,
            created_at=created_at,
        )

    async def photo(self, photo_id: int) -> Photo | None:
        async with self._db.execute(
            f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE id = ?", (photo_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else Photo(*row)

    async def photos_of(self, owner_id: int, limit: int) -> list[Photo]:
        async with self._db.execute(
            f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE owner_id = ? ORDER BY id DESC LIMIT ?",
            (owner_id, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [Photo(*row) for row in rows]

    async def close(self) -> None:
        await self._db.close()
