"""Shared sessions: the store every web server reads and writes, and the ASGI middleware.

`open_store` picks the engine named by `SessionsConfig.engine`. Engines are imported on
demand so a web server on SQLite never loads the Redis or PostgreSQL drivers.
"""

from __future__ import annotations

from pathlib import Path

from millions.sessions.base import Session, SessionDataError, SessionStore, SessionStoreError

ENGINES = ("sqlite", "redis", "postgres")

__all__ = [
    "ENGINES",
    "Session",
    "SessionDataError",
    "SessionStore",
    "SessionStoreError",
    "open_store",
]


def open_store(engine: str, url: str, run_dir: Path) -> SessionStore:
    """The session store for `engine`; connections open on first use."""
    if engine == "sqlite":
        from millions.sessions.sqlite import SqliteSessionStore, path_from_url

        return SqliteSessionStore(path_from_url(url, run_dir))
    if engine == "redis":
        if not url:
            raise ValueError("sessions.url is required for redis, e.g. redis://127.0.0.1:6379/0")
        from millions.sessions.redis import RedisSessionStore

        return RedisSessionStore(url)
    if engine == "postgres":
        if not url:
            raise ValueError(
                "sessions.url is required for postgres, e.g. postgresql://user@127.0.0.1/db"
            )
        from millions.sessions.postgres import PostgresSessionStore

        return PostgresSessionStore(url)
    raise ValueError(f"unknown session engine {engine!r}; expected one of {', '.join(ENGINES)}")
