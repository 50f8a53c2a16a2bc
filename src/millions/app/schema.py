"""The reference app's sharded tables: everything a user owns lives on that user's shard.

The shard key is the user id (`owner_id`, `follower_id`, `user_id`), so a home page, a
profile and a feed are each read from one shard. Two lookup tables answer the questions
that do not start from a user id — who has this name, who owns this photo — by sharding
on the name and the photo id instead (Vitess calls these lookup vindexes). Follows are
stored twice, once on each side's shard, so both "whom do I follow" and "who follows me"
(the feed fan-out's question) are single-shard reads; the feed is denormalized: each
entry carries what a feed page shows, so the page needs no join across shards.

A photo row is also its own outbox entry: `queued` stays 0 until its jobs are published,
so a web server killed between storing a photo and publishing its jobs leaves a row that
`millions.app.pipeline.requeue_stranded` finds and publishes later.

The SQL is shared by SQLite and PostgreSQL: BIGINT, TEXT and DOUBLE PRECISION mean the
same in both, and flags are 0/1 integers.
"""

from __future__ import annotations

from millions.shards import Migration, ShardSchema, TableSpec

_TABLES = """
CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    key_hash BIGINT NOT NULL);
CREATE INDEX users_key_hash ON users (key_hash);
CREATE TABLE usernames (
    username TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    key_hash BIGINT NOT NULL);
CREATE INDEX usernames_key_hash ON usernames (key_hash);
CREATE TABLE photos (
    owner_id BIGINT NOT NULL,
    id BIGINT NOT NULL,
    owner_username TEXT NOT NULL,
    title TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    processed BIGINT NOT NULL DEFAULT 0,
    queued BIGINT NOT NULL DEFAULT 0,
    key_hash BIGINT NOT NULL,
    PRIMARY KEY (owner_id, id));
CREATE INDEX photos_key_hash ON photos (key_hash);
CREATE INDEX photos_unqueued ON photos (created_at) WHERE queued = 0;
CREATE TABLE photo_owners (
    photo_id BIGINT PRIMARY KEY,
    owner_id BIGINT NOT NULL,
    key_hash BIGINT NOT NULL);
CREATE INDEX photo_owners_key_hash ON photo_owners (key_hash);
CREATE TABLE processed_photos (
    owner_id BIGINT NOT NULL,
    photo_id BIGINT NOT NULL,
    processed_at DOUBLE PRECISION NOT NULL,
    key_hash BIGINT NOT NULL,
    PRIMARY KEY (owner_id, photo_id));
CREATE INDEX processed_photos_key_hash ON processed_photos (key_hash);
CREATE TABLE follows (
    follower_id BIGINT NOT NULL,
    followee_id BIGINT NOT NULL,
    followee_username TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    key_hash BIGINT NOT NULL,
    PRIMARY KEY (follower_id, followee_id));
CREATE INDEX follows_key_hash ON follows (key_hash);
CREATE TABLE followers (
    followee_id BIGINT NOT NULL,
    follower_id BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    key_hash BIGINT NOT NULL,
    PRIMARY KEY (followee_id, follower_id));
CREATE INDEX followers_key_hash ON followers (key_hash);
CREATE TABLE feed (
    user_id BIGINT NOT NULL,
    photo_id BIGINT NOT NULL,
    owner_id BIGINT NOT NULL,
    owner_username TEXT NOT NULL,
    title TEXT NOT NULL,
    width BIGINT NOT NULL,
    height BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    key_hash BIGINT NOT NULL,
    PRIMARY KEY (user_id, photo_id));
CREATE INDEX feed_key_hash ON feed (key_hash);
"""

APP_SCHEMA = ShardSchema(
    tables=(
        TableSpec("users", primary_key=("id",), shard_key="id"),
        TableSpec("usernames", primary_key=("username",), shard_key="username"),
        TableSpec("photos", primary_key=("owner_id", "id"), shard_key="owner_id"),
        TableSpec("photo_owners", primary_key=("photo_id",), shard_key="photo_id"),
        TableSpec("processed_photos", primary_key=("owner_id", "photo_id"), shard_key="owner_id"),
        TableSpec("follows", primary_key=("follower_id", "followee_id"), shard_key="follower_id"),
        TableSpec("followers", primary_key=("followee_id", "follower_id"), shard_key="followee_id"),
        TableSpec("feed", primary_key=("user_id", "photo_id"), shard_key="user_id"),
    ),
    migrations=(Migration(1, "users, photos, follows and feeds", _TABLES),),
)
