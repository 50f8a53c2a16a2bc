"""The app's records (users, photos, follows, feeds) behind a small repository interface.

`AppStore` is what the handlers use; `ShardedAppStore` keeps everything in the sharded
database (`millions.shards`), sharded by user id as `millions.app.schema` lays out, so
every page reads one shard. Writes that span shards (a user row and its name, a photo and
its owner lookup, the two sides of a follow) are ordered so that a crash between them
leaves only an unreachable row behind, never a reference to a missing one: the row that
makes the record findable is written last and deleted first.

Lookups that never change once written (a name's user id, a photo's owner) and the
user row (read by every request; its one changing column, the password hash, verifies
the same password before and after a rehash) always go through the shards' read cache.
Everything else is read the router's default way — from the cache only for keys hot
enough to need it (the celebrity problem) — except in a request of a user who wrote
within the cache's TTL (`millions.app.freshness`), which reads from the shards so that
the user sees their own writes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from millions.app.freshness import fresh_reads
from millions.app.schema import APP_SCHEMA
from millions.shards import DuplicateRowError, ShardCluster, ShardRouter, ShardsConfig
from millions.shards.replication import ReplicatedCluster


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
    def from_row(cls, row: Mapping[str, Any]) -> Photo:
        return cls(
            id=int(row["id"]),
            owner_id=int(row["owner_id"]),
            owner_username=str(row["owner_username"]),
            title=str(row["title"]),
            content_type=str(row["content_type"]),
            width=int(row["width"]),
            height=int(row["height"]),
            size_bytes=int(row["size_bytes"]),
            sha256=str(row["sha256"]),
            created_at=float(row["created_at"]),
            processed=bool(row["processed"]),
        )


@dataclass(frozen=True)
class FeedEntry:
    """A photo in a user's feed, with what the feed page shows (denormalized)."""

    photo_id: int
    owner_id: int
    owner_username: str
    title: str
    width: int
    height: int
    created_at: float

    @classmethod
    def of(cls, photo: Photo) -> FeedEntry:
        return cls(
            photo.id,
            photo.owner_id,
            photo.owner_username,
            photo.title,
            photo.width,
            photo.height,
            photo.created_at,
        )


@dataclass(frozen=True)
class Followee:
    id: int
    username: str


class UsernameTaken(Exception):
    """Another account already has this username."""


class AppStore(Protocol):
    """Users, photo records, follows and feeds. Ids are positive integers the store assigns."""

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

        Idempotent: True only for the call that recorded it, False when the photo was
        already processed or does not exist."""
        ...

    async def mark_queued(self, photo: Photo) -> None:
        """Record that the photo's jobs are published (or done)."""
        ...

    async def stranded_photos(self, created_before: float, limit: int) -> list[Photo]:
        """Photos stored before `created_before` whose jobs were never published."""
        ...

    async def follow(self, follower: User, followee: User) -> bool:
        """Start following; False when `follower` already follows `followee`."""
        ...

    async def unfollow(self, follower_id: int, followee_id: int) -> bool:
        """Stop following; False when there was no such follow."""
        ...

    async def is_following(self, follower_id: int, followee_id: int) -> bool: ...

    async def following(self, user_id: int, limit: int) -> list[Followee]:
        """Whom the user follows, most recent first."""
        ...

    async def follower_count(self, user_id: int) -> int: ...

    async def follower_ids(self, user_id: int, after: int, limit: int) -> list[int]:
        """One page of the user's followers' ids, ascending, all greater than `after`."""
        ...

    async def feed(self, user_id: int, limit: int) -> list[FeedEntry]:
        """The user's timeline, newest photo first."""
        ...

    async def add_to_feed(self, user_id: int, entry: FeedEntry) -> None:
        """Put `entry` in the user's feed (again: no change)."""
        ...

    async def remove_from_feed(self, user_id: int, photo_id: int) -> None: ...

    async def remove_owner_from_feed(self, user_id: int, owner_id: int) -> int:
        """Remove every photo of `owner_id` from the user's feed; how many there were."""
        ...

    async def close(self) -> None: ...


class ShardedAppStore:
    """AppStore on the sharded database; see the module docstring."""

    def __init__(self, router: ShardRouter) -> None:
        self.router = router

    @classmethod
    async def open(
        cls, config: ShardsConfig, run_dir: Path, dcs: Sequence[str] = ()
    ) -> ShardedAppStore:
        """Bring every shard up to the app's schema (safe from several processes at once)
        and open a router on them; with `dcs` (cross-DC copies), a router that writes to
        each shard's current primary copy, wherever a failover put it."""
        cluster = ShardCluster(config, run_dir, APP_SCHEMA)
        try:
            await cluster.migrate()
        finally:
            await cluster.close()
        replicated = (
            ReplicatedCluster(config, run_dir, APP_SCHEMA, dcs=dcs) if len(dcs) >= 2 else None
        )
        return cls(await ShardRouter.open(config, run_dir, APP_SCHEMA, cluster=replicated))

    # -- users -----------------------------------------------------------------------------

    async def create_user(self, username: str, password_hash: str) -> User:
        user = User(await self.router.next_id("users"), username, password_hash, time.time())
        await self.router.insert("users", asdict(user))
        try:
            await self.router.insert("usernames", {"username": username, "user_id": user.id})
        except DuplicateRowError:
            await self.router.delete("users", {"id": user.id})
            raise UsernameTaken(username) from None
        return user

    async def user_by_id(self, user_id: int) -> User | None:
        row = await self.router.get("users", {"id": user_id}, cached=True)
        return None if row is None else _user(row)

    async def user_by_name(self, username: str) -> User | None:
        row = await self.router.get("usernames", {"username": username}, cached=True)
        return None if row is None else await self.user_by_id(int(row["user_id"]))

    async def set_password_hash(self, user_id: int, password_hash: str) -> None:
        await self.router.update("users", {"id": user_id}, {"password_hash": password_hash})

    # -- photos ----------------------------------------------------------------------------

    async def add_photo(self, photo: NewPhoto) -> Photo:
        photo_id = await self.router.next_id("photos")
        stored = Photo(id=photo_id, created_at=time.time(), **asdict(photo))
        await self.router.insert("photos", asdict(stored))
        await self.router.insert("photo_owners", {"photo_id": photo_id, "owner_id": photo.owner_id})
        return stored

    async def photo(self, photo_id: int) -> Photo | None:
        owner = await self.router.get("photo_owners", {"photo_id": photo_id}, cached=True)
        if owner is None:
            return None
        row = await self.router.get(
            "photos", {"owner_id": int(owner["owner_id"]), "id": photo_id}, cached=_cache_mode()
        )
        return None if row is None else Photo.from_row(row)

    async def photos_of(self, owner_id: int, limit: int) -> list[Photo]:
        rows = await self.router.fetch(
            owner_id,
            "SELECT * FROM photos WHERE owner_id = $1 ORDER BY id DESC LIMIT $2",
            (owner_id, limit),
            cached=_cache_mode(),
        )
        return [Photo.from_row(row) for row in rows]

    async def delete_photo(self, photo_id: int, owner_id: int) -> bool:
        owner = await self.router.get("photo_owners", {"photo_id": photo_id})
        if owner is None or int(owner["owner_id"]) != owner_id:
            return False
        await self.router.delete("photo_owners", {"photo_id": photo_id})
        await self.router.delete("processed_photos", {"owner_id": owner_id, "photo_id": photo_id})
        return await self.router.delete("photos", {"owner_id": owner_id, "id": photo_id})

    async def mark_processed(self, photo_id: int) -> bool:
        """The processed_photos row is the once-only record: its insert succeeds for exactly
        one caller. The photo's flag is set by every caller, so a crash between the two
        writes is repaired by the job's redelivery."""
        photo = await self.photo(photo_id)
        if photo is None:
            return False
        record = {"owner_id": photo.owner_id, "photo_id": photo_id, "processed_at": time.time()}
        try:
            await self.router.insert("processed_photos", record)
            first = True
        except DuplicateRowError:
            first = False
        if not photo.processed:
            updated = await self.router.update(
                "photos", {"owner_id": photo.owner_id, "id": photo_id}, {"processed": 1}
            )
            first = first and updated is not None
        return first

    async def mark_queued(self, photo: Photo) -> None:
        await self.router.update(
            "photos", {"owner_id": photo.owner_id, "id": photo.id}, {"queued": 1}
        )

    async def stranded_photos(self, created_before: float, limit: int) -> list[Photo]:
        rows = await self.router.scatter(
            "SELECT * FROM photos WHERE queued = 0 AND created_at < $1 AND {owned}",
            (created_before,),
            order_by=("id",),
            limit=limit,
        )
        return [Photo.from_row(row) for row in rows]

    # -- follows ---------------------------------------------------------------------------

    async def follow(self, follower: User, followee: User) -> bool:
        """The followers row (what fan-out reads) first, the follows row (what makes the
        follow visible to the follower) last."""
        now = time.time()
        await self.router.upsert(
            "followers", {"followee_id": followee.id, "follower_id": follower.id, "created_at": now}
        )
        try:
            await self.router.insert(
                "follows",
                {
                    "follower_id": follower.id,
                    "followee_id": followee.id,
                    "followee_username": followee.username,
                    "created_at": now,
                },
            )
        except DuplicateRowError:
            return False
        return True

    async def unfollow(self, follower_id: int, followee_id: int) -> bool:
        removed = await self.router.delete(
            "follows", {"follower_id": follower_id, "followee_id": followee_id}
        )
        await self.router.delete(
            "followers", {"followee_id": followee_id, "follower_id": follower_id}
        )
        return removed

    async def is_following(self, follower_id: int, followee_id: int) -> bool:
        pk = {"follower_id": follower_id, "followee_id": followee_id}
        return await self.router.get("follows", pk, cached=_cache_mode()) is not None

    async def following(self, user_id: int, limit: int) -> list[Followee]:
        rows = await self.router.fetch(
            user_id,
            "SELECT followee_id, followee_username FROM follows WHERE follower_id = $1"
            " ORDER BY created_at DESC, followee_id LIMIT $2",
            (user_id, limit),
            cached=_cache_mode(),
        )
        return [Followee(int(row["followee_id"]), str(row["followee_username"])) for row in rows]

    async def follower_count(self, user_id: int) -> int:
        rows = await self.router.fetch(
            user_id,
            "SELECT count(*) AS n FROM followers WHERE followee_id = $1",
            (user_id,),
            cached=_cache_mode(),
        )
        return int(rows[0]["n"])

    async def follower_ids(self, user_id: int, after: int, limit: int) -> list[int]:
        rows = await self.router.fetch(
            user_id,
            "SELECT follower_id FROM followers WHERE followee_id = $1 AND follower_id > $2"
            " ORDER BY follower_id LIMIT $3",
            (user_id, after, limit),
            cached=False,  # a stale list would leave a new follower out of a fan-out
        )
        return [int(row["follower_id"]) for row in rows]

    # -- feeds -----------------------------------------------------------------------------

    async def feed(self, user_id: int, limit: int) -> list[FeedEntry]:
        rows = await self.router.fetch(
            user_id,
            "SELECT photo_id, owner_id, owner_username, title, width, height, created_at"
            " FROM feed WHERE user_id = $1 ORDER BY photo_id DESC LIMIT $2",
            (user_id, limit),
            cached=_cache_mode(),
        )
        return [_feed_entry(row) for row in rows]

    async def add_to_feed(self, user_id: int, entry: FeedEntry) -> None:
        await self.router.upsert("feed", {"user_id": user_id, **asdict(entry)})

    async def remove_from_feed(self, user_id: int, photo_id: int) -> None:
        await self.router.delete("feed", {"user_id": user_id, "photo_id": photo_id})

    async def remove_owner_from_feed(self, user_id: int, owner_id: int) -> int:
        rows = await self.router.fetch(
            user_id,
            "SELECT photo_id FROM feed WHERE user_id = $1 AND owner_id = $2",
            (user_id, owner_id),
            cached=False,
        )
        for row in rows:
            await self.remove_from_feed(user_id, int(row["photo_id"]))
        return len(rows)

    async def close(self) -> None:
        await self.router.close()


def _cache_mode() -> bool | None:
    """How a read of changing rows uses the read cache: the router's default (hot keys
    only), or not at all in a request that must see its user's own writes."""
    return False if fresh_reads() else None


def _user(row: Mapping[str, Any]) -> User:
    return User(
        int(row["id"]), str(row["username"]), str(row["password_hash"]), float(row["created_at"])
    )


def _feed_entry(row: Mapping[str, Any]) -> FeedEntry:
    return FeedEntry(
        photo_id=int(row["photo_id"]),
        owner_id=int(row["owner_id"]),
        owner_username=str(row["owner_username"]),
        title=str(row["title"]),
        width=int(row["width"]),
        height=int(row["height"]),
        created_at=float(row["created_at"]),
    )
