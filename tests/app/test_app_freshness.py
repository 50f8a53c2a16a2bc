"""Read-your-writes across web servers whose read caches are each in their own memory.

Two web servers behind round robin, each with its own embedded read cache, and a user
hot enough that the router caches reads of their rows (the celebrity problem): another
visitor may see the old photo list for the cache's TTL — the cache works — but the writer
never does, whichever server answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from app_harness import (
    BASE_URL,
    RoundRobinTransport,
    image_bytes,
    lifespan,
    sign_up,
    upload,
    with_state,
)
from starlette.types import ASGIApp

from millions.app.freshness import wrote_recently
from millions.app.state import STATE_KEY
from millions.sessions.base import Session
from millions.topology.app_env import SHARDS_CONFIG_ENV

pytestmark = pytest.mark.timeout(60)


def hot_shards_config(directory: Path) -> str:
    """Every key read a few times a second counts as hot and is served from the cache."""
    return json.dumps(
        {
            "directory": str(directory),
            "cache": {"engine": "memory", "ttl_s": 30},
            "hot": {"threshold_ops_s": 0.5, "window_s": 10, "report_interval_s": 0.05},
        }
    )


async def photo_ids(client: httpx.AsyncClient, path: str) -> list[int]:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    return [photo["id"] for photo in response.json()["photos"]]


async def test_the_writer_sees_their_write_on_every_server_while_others_may_not_yet(
    make_app: Callable[..., ASGIApp], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(SHARDS_CONFIG_ENV, hot_shards_config(tmp_path / "data" / "shards"))
    apps = [make_app("web-a"), make_app("web-b")]
    async with AsyncExitStack() as stack:
        states = [await stack.enter_async_context(lifespan(app)) for app in apps]
        servers = [with_state(app, state) for app, state in zip(apps, states, strict=True)]
        routers = [state[STATE_KEY].store.router for state in states]
        writer = await stack.enter_async_context(
            httpx.AsyncClient(transport=RoundRobinTransport(servers), base_url=BASE_URL)
        )
        reader = await stack.enter_async_context(
            httpx.AsyncClient(transport=RoundRobinTransport(servers), base_url=BASE_URL)
        )
        celebrity = await sign_up(writer, "celebrity")
        # the reader is anonymous: a signed-up one would read fresh for a TTL after signing up
        tag = str(celebrity["id"])
        deadline = time.monotonic() + 20
        while not all(tag in router.hot_keys for router in routers):  # heat the rows up
            assert time.monotonic() < deadline, "the celebrity never became a hot key"
            assert await photo_ids(reader, "/api/users/celebrity") == []
            await asyncio.sleep(0.01)  # lets the routers publish their load reports
        for _ in range(2):  # each server caches the (empty) list for other users
            assert await photo_ids(reader, "/api/users/celebrity") == []

        created = await upload(writer, image_bytes("PNG"))
        assert created.status_code == 201
        photo_id = created.json()["id"]
        for path in ("/api/users/celebrity", "/api/photos"):
            for _ in range(2):  # one request to each server
                assert await photo_ids(writer, path) == [photo_id]
        seen_by_fan = [await photo_ids(reader, "/api/users/celebrity") for _ in range(4)]
    assert [photo_id] in seen_by_fan  # the server that took the upload invalidated its copy
    assert [] in seen_by_fan  # the other still serves its cached list to others


def test_a_write_counts_as_recent_for_the_cache_ttl_only() -> None:
    session = Session(None, {"wrote_at": 100.0})
    assert wrote_recently(session, 30, 100.0)
    assert wrote_recently(session, 30, 129.9)
    assert not wrote_recently(session, 30, 130.0)
    assert not wrote_recently(session, 30, 99.0)  # a clock that went backwards
    assert not wrote_recently(Session(None, {"wrote_at": "100"}), 30, 100.0)
    assert not wrote_recently(Session(None, {}), 30, 100.0)
