"""Engine-specific properties beyond the shared contract, and the `open_store` factory."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import uuid
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from session_support import POSTGRES_URL, REDIS_URL, require_service

from millions.sessions import open_store
from millions.sessions.base import decode_data, encode_data
from millions.sessions.postgres import PostgresSessionStore
from millions.sessions.redis import RedisSessionStore, scan_pattern
from millions.sessions.sqlite import SqliteSessionStore, path_from_url

pytestmark = pytest.mark.timeout(30)

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from millions.sessions.sqlite import SqliteSessionStore

    async def main(path: str, worker: int, sessions: int) -> None:
        store = SqliteSessionStore(path)
        try:
            for start in range(0, sessions, 20):
                await asyncio.gather(*(
                    store.save(f"w{worker}-{n}", {"worker": worker, "n": n}, 60)
                    for n in range(start, start + 20)
                ))
                assert await store.load(f"w{worker}-{start}") == {"worker": worker, "n": start}
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
    """
)


@pytest.mark.timeout(60)
async def test_sqlite_is_shared_by_concurrent_processes(tmp_path: Path) -> None:
    """Web server processes writing one file at once never see "database is locked"."""
    path = tmp_path / "shared.sqlite3"
    workers, per_worker = 3, 1000
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WRITER,
            str(path),
            str(worker),
            str(per_worker),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for worker in range(workers)
    ]
    try:
        for process in processes:
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=50)
            assert process.returncode == 0, stderr.decode()
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    store = SqliteSessionStore(path)
    try:
        assert await store.count() == workers * per_worker
        assert await store.load(f"w2-{per_worker - 1}") == {"worker": 2, "n": per_worker - 1}
    finally:
        await store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_sqlite_save_purges_expired_rows_periodically(tmp_path: Path) -> None:
    path = tmp_path / "purge.sqlite3"
    store = SqliteSessionStore(path, purge_interval_s=0)
    try:
        await store.save("old", {"a": 1}, 60)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE sessions SET expires_at = 0 WHERE id = 'old'")
        await store.save("new", {"a": 2}, 60)
        with sqlite3.connect(path) as db:
            ids = [row[0] for row in db.execute("SELECT id FROM sessions")]
        assert ids == ["new"]
    finally:
        await store.close()


async def test_sqlite_store_refuses_use_after_close(tmp_path: Path) -> None:
    from millions.sessions.base import SessionStoreError

    store = SqliteSessionStore(tmp_path / "closed.sqlite3")
    await store.save("a", {"x": 1}, 60)
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(SessionStoreError, match="closed"):
        await store.load("a")


async def test_a_corrupt_record_reads_as_no_session(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.sqlite3"
    store = SqliteSessionStore(path)
    try:
        await store.save("a", {"x": 1}, 60)
        with sqlite3.connect(path) as db:
            db.execute("UPDATE sessions SET data = '[1, 2' WHERE id = 'a'")
        assert await store.load("a") is None
    finally:
        await store.close()


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=10),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers()
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.text(),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
            ),
            max_leaves=10,
        ),
        max_size=6,
    )
)
def test_encoded_data_decodes_to_the_same_dict(data: dict[str, object]) -> None:
    assert decode_data(encode_data(data)) == data
    assert decode_data(encode_data(data).encode()) == data


@pytest.mark.parametrize("stored", ["", "[]", "7", "null", '"text"', "{bad", b"\xff\xfe"])
def test_stored_values_that_are_not_objects_decode_to_none(stored: str | bytes) -> None:
    assert decode_data(stored) is None


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "/run/dir/sessions.sqlite3"),
        ("/var/lib/s.sqlite3", "/var/lib/s.sqlite3"),
        ("./s.sqlite3", "s.sqlite3"),
        ("sqlite:///abs/s.db", "/abs/s.db"),
        ("sqlite://rel/s.db", "rel/s.db"),
    ],
)
def test_sqlite_path_from_url(url: str, expected: str) -> None:
    assert path_from_url(url, Path("/run/dir")) == Path(expected)


def test_sqlite_url_without_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="file path"):
        path_from_url("sqlite://", Path("/run"))


async def test_open_store_picks_the_engine(tmp_path: Path) -> None:
    sqlite_store = open_store("sqlite", "", tmp_path)
    assert isinstance(sqlite_store, SqliteSessionStore)
    assert sqlite_store.path == tmp_path / "sessions.sqlite3"
    await sqlite_store.close()
    redis_store = open_store("redis", "redis://127.0.0.1:6379/0", tmp_path)
    assert isinstance(redis_store, RedisSessionStore)
    await redis_store.close()
    postgres_store = open_store("postgres", "postgresql://u@127.0.0.1/db", tmp_path)
    assert isinstance(postgres_store, PostgresSessionStore)
    await postgres_store.close()


@pytest.mark.parametrize(
    ("engine", "url", "message"),
    [
        ("memcached", "", "unknown session engine 'memcached'"),
        ("redis", "", "sessions.url is required for redis"),
        ("postgres", "", "sessions.url is required for postgres"),
        ("redis", "http://nope", "bad Redis URL"),
    ],
)
def test_open_store_rejects_bad_configuration(
    engine: str, url: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(engine, url, tmp_path)


@pytest.mark.parametrize("table", ["", "1abc", "a-b", 'x"; DROP TABLE y; --', "a" * 64])
def test_postgres_table_must_be_a_plain_identifier(table: str) -> None:
    with pytest.raises(ValueError, match="identifier"):
        PostgresSessionStore(POSTGRES_URL, table=table)


@pytest.mark.parametrize(
    ("prefix", "pattern"),
    [
        ("millions:session:", "millions:session:*"),
        ("a*b?[c]\\:", "a\\*b\\?\\[c\\]\\\\:*"),
    ],
)
def test_redis_scan_pattern_escapes_glob_characters(prefix: str, pattern: str) -> None:
    assert scan_pattern(prefix) == pattern


async def test_redis_expiry_is_a_redis_ttl_and_count_respects_the_prefix() -> None:
    require_service("redis")
    tag = uuid.uuid4().hex
    store = RedisSessionStore(REDIS_URL, prefix=f"millions-test:{tag}:[*]:")
    neighbour = RedisSessionStore(REDIS_URL, prefix=f"millions-test:{tag}:x:")
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await store.save("s1", {"a": 1}, 120)
        await neighbour.save("s2", {"a": 2}, 120)
        ttl_ms = await client.pttl(f"millions-test:{tag}:[*]:s1")
        assert 110_000 < ttl_ms <= 120_000
        await store.touch("s1", 600)
        assert 590_000 < await client.pttl(f"millions-test:{tag}:[*]:s1") <= 600_000
        assert await store.count() == 1  # the glob in the prefix does not match x:
        assert await neighbour.count() == 1
    finally:
        keys = [key async for key in client.scan_iter(match=f"millions-test:{tag}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await store.close()
        await neighbour.close()


async def test_postgres_table_creation_is_safe_when_processes_start_together() -> None:
    require_service("postgres")
    table = f"sessions_test_{uuid.uuid4().hex[:16]}"
    stores = [PostgresSessionStore(POSTGRES_URL, table=table) for _ in range(6)]
    try:
        await asyncio.gather(*(store.save(f"s{n}", {"n": n}, 60) for n, store in enumerate(stores)))
        assert await stores[0].count() == 6
    finally:
        for store in stores:
            await store.close()
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            await connection.execute(f'DROP TABLE IF EXISTS "{table}"')
        finally:
            await connection.close()


async def test_postgres_save_purges_expired_rows_periodically() -> None:
    require_service("postgres")
    table = f"sessions_test_{uuid.uuid4().hex[:16]}"
    store = PostgresSessionStore(POSTGRES_URL, table=table, purge_interval_s=0)
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        await store.save("old", {"a": 1}, 60)
        await connection.execute(f"UPDATE \"{table}\" SET expires_at = now() - interval '1 s'")
        await store.save("new", {"a": 2}, 60)
        rows = await connection.fetch(f'SELECT id FROM "{table}"')
        assert [row["id"] for row in rows] == ["new"]
    finally:
        await store.close()
        await connection.execute(f'DROP TABLE IF EXISTS "{table}"')
        await connection.close()
