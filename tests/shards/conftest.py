"""Fixtures for the shards tests: `env` is a fresh cluster per engine (sqlite, postgres)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from shard_support import ENGINES, ShardEnv, shard_env


@pytest.fixture(params=ENGINES)
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ShardEnv]:
    async with shard_env(request.param, tmp_path) as created:
        yield created


@pytest.fixture
async def sqlite_env(tmp_path: Path) -> AsyncIterator[ShardEnv]:
    async with shard_env("sqlite", tmp_path) as created:
        yield created
