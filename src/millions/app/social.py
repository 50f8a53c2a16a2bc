"""Following people and reading the feed: the rules shared by the pages and the JSON API.

A profile is read from its owner's shard (photos, follower count) plus one lookup on the
viewer's shard (whether the viewer follows them); the feed is one query on the viewer's
shard (see `millions.app.feed`).
"""

from __future__ import annotations

from dataclasses import dataclass

from millions.app.feed import start_following, stop_following
from millions.app.state import AppState
from millions.app.store import FeedEntry, Photo, User
from millions.app.urls import image_url, page_url, profile_url
from millions.app.validation import username_problem

PROFILE_PHOTO_LIMIT = 60
FEED_LIMIT = 60


class SocialError(Exception):
    """A follow or profile request that cannot proceed; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Profile:
    user: User
    photos: list[Photo]
    followers: int
    followed_by_viewer: bool


async def find_user(state: AppState, username: str) -> User:
    """The user named `username` (404 when there is none, or the name cannot exist)."""
    user = None if username_problem(username) else await state.store.user_by_name(username)
    if user is None:
        raise SocialError(404, "no such user")
    return user


async def profile(state: AppState, viewer: User | None, username: str) -> Profile:
    user = await find_user(state, username)
    photos = await state.store.photos_of(user.id, PROFILE_PHOTO_LIMIT)
    followers = await state.store.follower_count(user.id)
    followed = viewer is not None and await state.store.is_following(viewer.id, user.id)
    return Profile(user, photos, followers, followed)


async def follow(state: AppState, viewer: User, username: str) -> bool:
    """Follow `username`; False when the viewer followed them already."""
    followee = await find_user(state, username)
    if followee.id == viewer.id:
        raise SocialError(400, "you cannot follow yourself")
    return await start_following(state.store, viewer, followee)


async def unfollow(state: AppState, viewer: User, username: str) -> bool:
    """Stop following `username`; False when the viewer did not follow them."""
    followee = await find_user(state, username)
    return await stop_following(state.store, viewer.id, followee.id)


async def feed(state: AppState, viewer: User, limit: int = FEED_LIMIT) -> list[FeedEntry]:
    return await state.store.feed(viewer.id, limit)


def feed_entry_json(entry: FeedEntry) -> dict[str, object]:
    """The JSON API's description of a feed entry."""
    return {
        "id": entry.photo_id,
        "title": entry.title,
        "owner": entry.owner_username,
        "owner_url": profile_url(entry.owner_username),
        "width": entry.width,
        "height": entry.height,
        "created_at": entry.created_at,
        "url": image_url(entry.photo_id),
        "page_url": page_url(entry.photo_id),
    }
