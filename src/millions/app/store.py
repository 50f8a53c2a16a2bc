"""The app's records (users, photos) behind a small repository interface.

`AppStore` is what the handlers use; `SqliteAppStore` is the embedded engine: one SQLite
file in WAL mode that every web server process of a data center opens at once (readers
never block the single writer; `busy_timeout` makes a writer wait its turn instead of
failing). A sharded engine can implement the same protocol: photos carry their owner's
username (denormalized) so a photo page never needs a join across shards.

Schema changes are additive and applied on open (`MIGRATIONS`): a database created by an
older release gains the new columns with their defaults and keeps working.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from millions.sqlite_wal import enable_wal_async

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
    created_at REAL NOT NULL,
    processed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS photos_by_owner ON photos (owner_id, id DESC);
"""

#: Columns added after the first release: (table, column, definition for ADD COLUMN).
MIGRATIONS = (("photos", "processed", "INTEGER NOT NULL DEFAULT 0"),)

_USER_COLUMNS = "id, username, password_hash, created_at"
_PHOTO_COLUMNS = (
    "id, owner_id, owner_username, title, content_type, width, height, size_bytes, sha256,"
    " created_at, processed"
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
    processed: bool = False  # the photo pipeline made its thumbnail and variants

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Photo:
        photo_id, owner_id, owner_username, title, content_type, width, height = row[:7]
        size_bytes, sha256, created_at, processed = row[7:]
        return cls(
            photo_id,
            owner_id,
            owner_username,
            title,
            content_type,
            width,
            height,
            size_bytes,
            sha256,
            created_at,
            bool(processed),
        )


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

    async def delete_photo(self, photo_id: int, owner_id: int) -> bool:
        """Delete the photo if `owner_id` owns it; whether a record was deleted."""
        ...

    async def mark_processed(self, photo_id: int) -> bool:
        """Record that the photo's variants exist (read back as `Photo.processed`).

        Idempotent: True only for the call that changed the flag, False when the photo
        was already processed or does not exist."""
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
            await db.execute_fetchall(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            await enable_wal_async(db.execute_fetchall)
            for pragma in ("PRAGMA synchronous = NORMAL", "PRAGMA foreign_keys = ON"):
                await db.execute_fetchall(pragma)
            await db.executescript(f"BEGIN IMMEDIATE;{SCHEMA}COMMIT;")
            await migrate(db)
        except BaseException:
            await db.close()
            raise
        return cls(db)

    async def _rows(self, sql: str, parameters: tuple[object, ...]) -> list[tuple[Any, ...]]:
        """Run one statement to completion in a single call on the connection's thread.

        The connection serves many requests at once. A statement left open across two
        calls (execute, then fetch) would pin a read snapshot, and another request's
        INSERT interleaved on the same connection after another process's commit would
        fail at once with SQLITE_BUSY_SNAPSHOT, which busy_timeout does not retry.
        """
        return [tuple(row) for row in await self._db.execute_fetchall(sql, parameters)]

    async def create_user(self, username: str, password_hash: str) -> User:
        created_at = time.time()
        try:
            rows = await self._rows(
                "INSERT INTO users (username, password_hash, created_at) VALUES (?, ?, ?)"
                " RETURNING id",
                (username, password_hash, created_at),
            )
        except sqlite3.IntegrityError:
            raise UsernameTaken(username) from None
        return User(rows[0][0], username, password_hash, created_at)

    async def user_by_id(self, user_id: int) -> User | None:
        rows = await self._rows(f"SELECT {_USER_COLUMNS} FROM users WHERE id = ?", (user_id,))
        return User(*rows[0]) if rows else None

    async def user_by_name(self, username: str) -> User | None:
        rows = await self._rows(
            f"SELECT {_USER_COLUMNS} FROM users WHERE username = ?", (username,)
        )
        return User(*rows[0]) if rows else None

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self._rows(
            "UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id)
        )

    async def add_photo(self, photo: NewPhoto) -> Photo:
        created_at = time.time()
        rows = await self._rows(
            "INSERT INTO photos (owner_id, owner_username, title, content_type, width, height,"
            " size_bytes, sha256, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
        )
        return Photo(
            id=rows[0][0],
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
        rows = await self._rows(f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE id = ?", (photo_id,))
        return Photo.from_row(rows[0]) if rows else None

    async def photos_of(self, owner_id: int, limit: int) -> list[Photo]:
        rows = await self._rows(
            f"SELECT {_PHOTO_COLUMNS} FROM photos WHERE owner_id = ? ORDER BY id DESC LIMIT ?",
            (owner_id, limit),
        )
        return [Photo.from_row(row) for row in rows]

    async def delete_photo(self, photo_id: int, owner_id: int) -> bool:
        rows = await self._rows(
            "DELETE FROM photos WHERE id = ? AND owner_id = ? RETURNING id", (photo_id, owner_id)
        )
        return bool(rows)

    async def mark_processed(self, photo_id: int) -> bool:
        rows = await self._rows(
            "UPDATE photos SET processed = 1 WHERE id = ? AND processed = 0 RETURNING id",
            (photo_id,),
        )
        return bool(rows)

    async def close(self) -> None:
        await self._db.close()


async def migrate(db: aiosqlite.Connection) -> None:
    """Add the `MIGRATIONS` columns a database lacks.

    Several processes may open an old database at once: a column another process added
    in the meantime shows up as "duplicate column name", which means the work is done."""
    for table, column, definition in MIGRATIONS:
        present = {row[1] for row in await db.execute_fetchall(f"PRAGMA table_info({table})")}
        if column in present:
            continue
        try:
            await db.execute_fetchall(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        except sqlite3.OperationalError as exc:
            if "duplicate column name" not in str(exc):
                raise
