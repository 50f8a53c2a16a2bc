"""The app's sharded store: records round-trip on both engines, each user's rows live on
that user's shard, follows and feeds, once-only processing, and several processes (web
servers) writing at once."""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from millions.app.feed import fan_out, start_following, stop_following
from millions.app.photo_files import PhotoFiles
from millions.app.schema import APP_SCHEMA
from millions.app.store import FeedEntry, NewPhoto, ShardedAppStore, UsernameTaken
from millions.shards import ShardsConfig, key_hash
from millions.shards.config import ShardSpec
from services import POSTGRES_URL, require_service

pytestmark = pytest.mark.timeout(90)


def new_photo(owner_id: int, owner: str, title: str) -> NewPhoto:
    return NewPhoto(owner_id, owner, title, "image/png", 3, 2, 99, "ab" * 32)


def sqlite_config(directory: Path) -> ShardsConfig:
    return ShardsConfig(
        directory=str(directory), shards=[ShardSpec(name="s1"), ShardSpec(name="s2")]
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ShardedAppStore]:
    if request.param == "sqlite":
        config = sqlite_config(tmp_path / "shards")
        opened = await ShardedAppStore.open(config, tmp_path)
        yield opened
        await opened.close()
        return
    require_service("postgres")
    tag = f"apptest_{uuid.uuid4().hex[:10]}"
    config = ShardsConfig(
        engine="postgres",
        url=POSTGRES_URL,
        schema_prefix=f"{tag}_",
        metadata_url=POSTGRES_URL,
        metadata_schema=f"{tag}_meta",
    )
    opened = await ShardedAppStore.open(config, tmp_path)
    try:
        yield opened
    finally:
        await opened.close()
        connection = await asyncpg.connect(POSTGRES_URL)
        try:
            for row in await connection.fetch(
                "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE $1",
                tag + "%",
            ):
                await connection.execute(f'DROP SCHEMA "{row["schema_name"]}" CASCADE')
        finally:
            await connection.close()


async def test_users_and_photos_round_trip(store: ShardedAppStore) -> None:
    alice = await store.create_user("alice", "hash-1")
    with pytest.raises(UsernameTaken):
        await store.create_user("alice", "hash-2")
    assert await store.user_by_name("alice") == alice
    assert await store.user_by_name("nobody") is None
    assert await store.user_by_id(alice.id) == alice
    assert await store.user_by_id(alice.id + 1000) is None
    await store.set_password_hash(alice.id, "hash-3")
    rehashed = await store.user_by_id(alice.id)
    assert rehashed is not None and rehashed.password_hash == "hash-3"
    first = await store.add_photo(new_photo(alice.id, "alice", "first"))
    second = await store.add_photo(new_photo(alice.id, "alice", "second"))
    assert await store.photo(first.id) == first
    assert await store.photos_of(alice.id, 10) == [second, first]
    assert await store.photos_of(alice.id, 1) == [second]
    assert await store.photos_of(alice.id + 1000, 10) == []
    assert await store.delete_photo(first.id, alice.id + 1000) is False  # not the owner
    assert await store.delete_photo(first.id, alice.id) is True
    assert await store.delete_photo(first.id, alice.id) is False
    assert await store.photo(first.id) is None
    assert await store.photos_of(alice.id, 10) == [second]


async def test_a_failed_signup_leaves_no_user_row_behind(store: ShardedAppStore) -> None:
    await store.create_user("taken", "h")
    for _ in range(3):
        with pytest.raises(UsernameTaken):
            await store.create_user("taken", "h")
    counts = await store.router.scatter(
        "SELECT count(*) AS n FROM users WHERE {owned}", aggregate={"n": "sum"}
    )
    assert counts[0]["n"] == 1


async def test_each_users_rows_live_on_the_shard_owning_the_user_id(tmp_path: Path) -> None:
    """Sharded by user id: a user's photos, follows and feed sit on one shard, and with
    enough users both shards hold some."""
    store = await ShardedAppStore.open(sqlite_config(tmp_path / "shards"), tmp_path)
    try:
        users = [await store.create_user(f"user{i}", "h") for i in range(24)]
        for user in users:
            await store.add_photo(new_photo(user.id, user.username, "p"))
            await store.follow(user, users[0])
            await store.add_to_feed(user.id, FeedEntry(1, 1, "x", "t", 1, 1, 0.0))
        router = store.router
        owners = {router.shard_for(user.id) for user in users}
        assert owners == {"s1", "s2"}
        for user in users:
            owner = router.shard_for(user.id)
            for table, column in (
                ("photos", "owner_id"),
                ("follows", "follower_id"),
                ("feed", "user_id"),
            ):
                storage = await router.cluster.storage(owner)
                rows = await storage.fetch(
                    f"SELECT count(*) AS n FROM {table} WHERE {column} = $1",
                    (user.id,),
                    keyspace_id=key_hash(user.id),
                )
                assert rows[0]["n"] == 1, (table, user.id, owner)
        assert {t.name for t in router.schema.tables} == {t.name for t in APP_SCHEMA.tables}
    finally:
        await store.close()


async def test_follows_and_the_feed_fan_out(store: ShardedAppStore) -> None:
    star = await store.create_user("star", "h")
    fans = [await store.create_user(f"fan{i}", "h") for i in range(5)]
    early = await store.add_photo(new_photo(star.id, "star", "before anyone followed"))
    for fan in fans:
        assert await start_following(store, fan, star) is True
    assert await start_following(store, fans[0], star) is False
    assert await store.is_following(fans[0].id, star.id)
    assert not await store.is_following(star.id, fans[0].id)
    assert await store.follower_count(star.id) == 5
    assert [f.username for f in await store.following(fans[0].id, 10)] == ["star"]
    # the backfill copied the earlier photo
    assert [e.photo_id for e in await store.feed(fans[1].id, 10)] == [early.id]

    photo = await store.add_photo(new_photo(star.id, "star", "new"))
    assert await fan_out(store, "add", photo.id, star.id) == 6  # the owner and 5 fans
    assert await fan_out(store, "add", photo.id, star.id) == 6  # again: no duplicates
    for user in (star, *fans):
        entries = await store.feed(user.id, 10)
        assert entries[0] == FeedEntry.of(photo)
        assert len({e.photo_id for e in entries}) == len(entries)

    assert await stop_following(store, fans[2].id, star.id) is True
    assert await store.feed(fans[2].id, 10) == []
    assert await store.follower_count(star.id) == 4

    assert await store.delete_photo(photo.id, star.id)
    assert await fan_out(store, "remove", photo.id, star.id) == 5
    for user in (star, fans[0], fans[1]):
        assert photo.id not in [e.photo_id for e in await store.feed(user.id, 10)]


async def test_an_add_job_for_a_deleted_photo_writes_no_feed(store: ShardedAppStore) -> None:
    owner = await store.create_user("owner", "h")
    fan = await store.create_user("fan", "h")
    await store.follow(fan, owner)
    photo = await store.add_photo(new_photo(owner.id, "owner", "gone"))
    await store.delete_photo(photo.id, owner.id)
    assert await fan_out(store, "add", photo.id, owner.id) == 0
    assert await store.feed(fan.id, 10) == []


async def test_fan_out_pages_through_many_followers(tmp_path: Path) -> None:
    from millions.app import feed

    store = await ShardedAppStore.open(sqlite_config(tmp_path / "shards"), tmp_path)
    try:
        star = await store.create_user("celebrity", "h")
        fans = [await store.create_user(f"f{i}", "h") for i in range(23)]
        for fan in fans:
            await store.follow(fan, star)
        photo = await store.add_photo(new_photo(star.id, "celebrity", "hi"))
        pages = [page async for page in feed.follower_pages(store, star.id, page=5)]
        assert [len(page) for page in pages] == [5, 5, 5, 5, 3]
        assert sorted(i for page in pages for i in page) == sorted(f.id for f in fans)
        assert await fan_out(store, "add", photo.id, star.id) == 24
    finally:
        await store.close()


async def test_processing_is_recorded_once_even_when_jobs_race(store: ShardedAppStore) -> None:
    user = await store.create_user("racer", "h")
    photo = await store.add_photo(new_photo(user.id, "racer", "p"))
    results = await asyncio.gather(*(store.mark_processed(photo.id) for _ in range(8)))
    assert results.count(True) == 1
    reread = await store.photo(photo.id)
    assert reread is not None and reread.processed
    assert await store.mark_processed(photo.id) is False
    assert await store.mark_processed(photo.id + 1000) is False


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from millions.app.store import NewPhoto, ShardedAppStore
    from millions.shards import ShardsConfig

    async def main(directory: str, prefix: str) -> None:
        store = await ShardedAppStore.open(ShardsConfig(directory=directory), Path(directory))
        for i in range(30):
            user = await store.create_user(f"{prefix}_{i}", "hash")
            await store.add_photo(
                NewPhoto(user.id, user.username, "t", "image/png", 1, 1, 1, "00" * 32)
            )
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def test_several_processes_migrate_and_write_the_same_shards(tmp_path: Path) -> None:
    """Web servers start together: each migrates (safely) and writes at once; ids stay
    unique across processes."""
    directory = tmp_path / "shards"
    writers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(directory), prefix, stderr=asyncio.subprocess.PIPE
        )
        for prefix in ("a", "b", "c")
    ]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(writer.communicate() for writer in writers)), timeout=60
        )
    finally:
        for writer in writers:
            if writer.returncode is None:
                writer.kill()
                await writer.wait()
    for writer, (_, stderr) in zip(writers, results, strict=True):
        assert writer.returncode == 0, stderr.decode()
    store = await ShardedAppStore.open(ShardsConfig(directory=str(directory)), tmp_path)
    try:
        ids = set()
        for prefix in ("a", "b", "c"):
            for i in range(30):
                user = await store.user_by_name(f"{prefix}_{i}")
                assert user is not None
                photos = await store.photos_of(user.id, 10)
                assert len(photos) == 1
                ids.add(photos[0].id)
        assert len(ids) == 90
        total = await store.router.scatter(
            "SELECT count(*) AS n FROM photos WHERE {owned}", aggregate={"n": "sum"}
        )
        assert total[0]["n"] == 90
    finally:
        await store.close()


def test_photo_files_are_content_addressed_and_written_once(tmp_path: Path) -> None:
    files = PhotoFiles(tmp_path)
    digest = "cd" * 32
    path = files.write(digest, "image/webp", b"bytes")
    assert path == tmp_path / "cd" / f"{digest}.webp"
    assert path.read_bytes() == b"bytes"
    assert files.write(digest, "image/webp", b"bytes") == path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left over
