"""Shared helpers for the shards tests: a demo schema, configs per engine, cleanup.

Service gating comes from tests/services.py.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from millions.shards import (
    Migration,
    ShardCluster,
    ShardRouter,
    ShardSchema,
    ShardsConfig,
    TableSpec,
)
from millions.shards.config import CacheConfig, ShardSpec
from services import POSTGRES_URL
from services import require_service as require_service

ENGINES = ("sqlite", "postgres")

SCHEMA = ShardSchema(
    tables=(
        TableSpec("users", primary_key=("id",), shard_key="id"),
        TableSpec("usernames", primary_key=("username",), shard_key="username"),
        TableSpec("photos", primary_key=("owner_id", "id"), shard_key="owner_id"),
    ),
    migrations=(
        Migration(
            1,
            "users",
            """
            CREATE TABLE users (
                id BIGINT PRIMARY KEY,
                username TEXT NOT NULL,
                bio TEXT,
                visits BIGINT NOT NULL DEFAULT 0,
                key_hash BIGINT NOT NULL);
            CREATE INDEX users_key_hash ON users (key_hash);
            CREATE TABLE usernames (
                username TEXT PRIMARY KEY,
                user_id BIGINT NOT NULL,
                key_hash BIGINT NOT NULL);
            CREATE INDEX usernames_key_hash ON usernames (key_hash);
            """,
        ),
        Migration(
            2,
            "photos",
            {
                "sqlite": """
                    CREATE TABLE photos (
                        owner_id BIGINT NOT NULL,
                        id BIGINT NOT NULL,
                        title TEXT NOT NULL,
                        size_bytes BIGINT NOT NULL,
                        thumb BLOB,
                        created_at REAL NOT NULL,
                        key_hash BIGINT NOT NULL,
                        PRIMARY KEY (owner_id, id));
                    CREATE INDEX photos_key_hash ON photos (key_hash);
                """,
                "postgres": """
                    CREATE TABLE photos (
                        owner_id BIGINT NOT NULL,
                        id BIGINT NOT NULL,
                        title TEXT NOT NULL,
                        size_bytes BIGINT NOT NULL,
                        thumb BYTEA,
                        created_at DOUBLE PRECISION NOT NULL,
                        key_hash BIGINT NOT NULL,
                        PRIMARY KEY (owner_id, id));
                    CREATE INDEX photos_key_hash ON photos (key_hash);
                """,
            },
        ),
    ),
)


@dataclass
class ShardEnv:
    """One engine's cluster config; `router()`/`cluster()` open more processes' views."""

    engine: str
    config: ShardsConfig
    run_dir: Path
    opened: list[ShardRouter | ShardCluster]

    def cluster(self) -> ShardCluster:
        cluster = ShardCluster(self.config, self.run_dir, SCHEMA)
        self.opened.append(cluster)
        return cluster

    async def router(self) -> ShardRouter:
        router = await ShardRouter.open(self.config, self.run_dir, SCHEMA)
        self.opened.append(router)
        return router


def make_config(engine: str, run_dir: Path, tag: str, **overrides: object) -> ShardsConfig:
    base: dict[str, object] = {
        "engine": engine,
        "shards": [ShardSpec(name="s1"), ShardSpec(name="s2")],
        "cache": CacheConfig(engine="memory", ttl_s=30),
        "batch_rows": 50,
    }
    if engine == "postgres":
        base |= {
            "url": POSTGRES_URL,
            "schema_prefix": f"{tag}_",
            "metadata_url": POSTGRES_URL,
            "metadata_schema": f"{tag}_meta",
        }
    base |= overrides
    return ShardsConfig.model_validate(base)


@asynccontextmanager
async def shard_env(engine: str, tmp_path: Path, **overrides: object) -> AsyncIterator[ShardEnv]:
    """A fresh cluster on `engine` (PostgreSQL: schemas with a unique prefix, dropped after)."""
    if engine == "postgres":
        require_service("postgres")
    tag = f"shtest_{uuid.uuid4().hex[:10]}"
    env = ShardEnv(engine, make_config(engine, tmp_path, tag, **overrides), tmp_path, [])
    try:
        yield env
    finally:
        for item in env.opened:
            await item.close()
        if engine == "postgres":
            await drop_schemas(tag)


async def drop_schemas(prefix: str) -> None:
    connection = await asyncpg.connect(POSTGRES_URL)
    try:
        names = await connection.fetch(
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE $1",
            prefix + "%",
        )
        for row in names:
            await connection.execute(f'DROP SCHEMA IF EXISTS "{row["schema_name"]}" CASCADE')
    finally:
        await connection.close()


POSTGRES_URL_FOR_TESTS = POSTGRES_URL
