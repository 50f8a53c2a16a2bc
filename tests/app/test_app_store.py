"""The SQLite repository: records round-trip, and several processes can write at once."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest

from millions.app.photo_files import PhotoFiles
from millions.app.store import NewPhoto, SqliteAppStore, UsernameTaken

pytestmark = pytest.mark.timeout(60)


def new_photo(owner_id: int, owner: str, title: str) -> NewPhoto:
    return NewPhoto(owner_id, owner, title, "image/png", 3, 2, 99, "ab" * 32)


async def test_users_and_photos_round_trip(tmp_path: Path) -> None:
    store = await SqliteAppStore.open(tmp_path / "app.sqlite3")
    try:
        alice = await store.create_user("alice", "hash-1")
        with pytest.raises(UsernameTaken):
            await store.create_user("alice", "hash-2")
        assert await store.user_by_name("alice") == alice
        assert await store.user_by_id(alice.id) == alice
        assert await store.user_by_id(alice.id + 1) is None
        await store.set_password_hash(alice.id, "hash-3")
        rehashed = await store.user_by_id(alice.id)
        assert rehashed is not None and rehashed.password_hash == "hash-3"
        first = await store.add_photo(new_photo(alice.id, "alice", "first"))
        second = await store.add_photo(new_photo(alice.id, "alice", "second"))
        assert await store.photo(first.id) == first
        assert await store.photos_of(alice.id, 10) == [second, first]
        assert await store.photos_of(alice.id, 1) == [second]
        assert await store.photos_of(alice.id + 1, 10) == []
        with sqlite3.connect(tmp_path / "app.sqlite3") as raw:
            assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()


async def test_concurrent_reads_and_writes_on_one_connection_never_hit_a_stale_snapshot(
    tmp_path: Path,
) -> None:
    """One connection serves many requests at once. A SELECT left open between two calls
    would pin an old snapshot, and an INSERT interleaved on the same connection after
    another connection's commit would fail at once with SQLITE_BUSY_SNAPSHOT."""
    path = tmp_path / "app.sqlite3"
    mine, other = await SqliteAppStore.open(path), await SqliteAppStore.open(path)
    try:
        user = await mine.create_user("alice", "hash")
        for i in range(60):
            await mine.add_photo(new_photo(user.id, "alice", f"seed {i}"))

        async def reader() -> None:
            for _ in range(30):
                photos = await mine.photos_of(user.id, 100)
                assert [p.id for p in photos] == sorted((p.id for p in photos), reverse=True)

        async def writer(store: SqliteAppStore) -> None:
            for i in range(30):
                await store.add_photo(new_photo(user.id, "alice", f"w{i}"))

        await asyncio.gather(*[reader() for _ in range(4)], writer(mine), writer(other))
        assert len(await mine.photos_of(user.id, 1000)) == 120
    finally:
        await mine.close()
        await other.close()


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from millions.app.store import NewPhoto, SqliteAppStore

    async def main(path: str, prefix: str) -> None:
        store = await SqliteAppStore.open(Path(path))
        for i in range(40):
            user = await store.create_user(f"{prefix}_{i}", "hash")
            await store.add_photo(
                NewPhoto(user.id, user.username, "t", "image/png", 1, 1, 1, "00" * 32)
            )
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_several_processes_write_the_same_database(tmp_path: Path) -> None:
    path = tmp_path / "app.sqlite3"
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(path), prefix, stderr=asyncio.subprocess.PIPE
        )
        for prefix in ("a", "b", "c")
    ]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(writer.communicate() for writer in writers)), timeout=45
        )
    finally:
        for writer in writers:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
    for writer, (_, stderr) in zip(writers, results, strict=True):
        assert writer.returncode == 0, stderr.decode()
    store = await SqliteAppStore.open(path)
    try:
        for prefix in ("a", "b", "c"):
            user = await store.user_by_name(f"{prefix}_39")
            assert user is not None
            assert len(await store.photos_of(user.id, 10)) == 1
    finally:
        await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT COUNT(*), COUNT(DISTINCT owner_id) FROM photos").fetchone() == (
            120,
            120,
        )


def test_photo_files_are_content_addressed_and_written_once(tmp_path: Path) -> None:
    files = PhotoFiles(tmp_path)
    digest = "cd" * 32
    path = files.write(digest, "image/webp", b"bytes")
    assert path == tmp_path / "cd" / f"{digest}.webp"
    assert path.read_bytes() == b"bytes"
    assert files.write(digest, "image/webp", b"bytes") == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over
