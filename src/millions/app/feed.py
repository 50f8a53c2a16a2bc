"""Feeds, written at upload time (fan-out on write): each timeline lives on its owner's shard.

When a photo is added, the owner's feed and every follower's feed get an entry; when it is
deleted, the entries go. Reading a feed is then one query on one shard, whoever the
followees are. The fan-out is a queue job (`feed.fanout`, run by the workers) when the web
server has a queue, else it runs before the answer; both run `fan_out`, which is
idempotent (an entry is upserted or deleted by its key), so a redelivered job is harmless.

A new follow copies the followee's latest photos into the follower's feed, an unfollow
removes them. A photo deleted while its add job runs could be re-added to some feeds
after its removal: the add job checks the photo again when done and removes the entries
if it is gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Literal

from millions.app.store import AppStore, FeedEntry, User

FEED_QUEUE = "feed.fanout"
FOLLOWERS_PAGE = 500
BACKFILL_PHOTOS = 20

FanOutAction = Literal["add", "remove"]


async def follower_pages(
    store: AppStore, user_id: int, page: int = FOLLOWERS_PAGE
) -> AsyncIterator[list[int]]:
    """Every follower id of a user, a page at a time (a celebrity has many)."""
    after = 0
    while True:
        ids = await store.follower_ids(user_id, after, page)
        if ids:
            yield ids
        if len(ids) < page:
            return
        after = ids[-1]


async def fan_out(store: AppStore, action: FanOutAction, photo_id: int, owner_id: int) -> int:
    """Add the photo to (or remove it from) the feeds of its owner and every follower;
    how many feeds were written."""
    if action == "add":
        photo = await store.photo(photo_id)
        if photo is None:
            return 0
        entry = FeedEntry.of(photo)
        written = await _each_feed(store, owner_id, lambda user: store.add_to_feed(user, entry))
        if await store.photo(photo_id) is not None:
            return written
    return await _each_feed(store, owner_id, lambda user: store.remove_from_feed(user, photo_id))


async def _each_feed(
    store: AppStore, owner_id: int, write: Callable[[int], Awaitable[None]]
) -> int:
    await write(owner_id)
    written = 1
    async for page in follower_pages(store, owner_id):
        await asyncio.gather(*(write(user_id) for user_id in page))
        written += len(page)
    return written


async def start_following(store: AppStore, follower: User, followee: User) -> bool:
    """Follow and copy the followee's latest photos into the follower's feed; False when
    the follow existed already."""
    created = await store.follow(follower, followee)
    for photo in await store.photos_of(followee.id, BACKFILL_PHOTOS):
        await store.add_to_feed(follower.id, FeedEntry.of(photo))
    return created


async def stop_following(store: AppStore, follower_id: int, followee_id: int) -> bool:
    """Unfollow and remove the followee's photos from the follower's feed."""
    removed = await store.unfollow(follower_id, followee_id)
    await store.remove_owner_from_feed(follower_id, followee_id)
    return removed
