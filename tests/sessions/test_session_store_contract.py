"""The SessionStore contract, run against every engine (sqlite, redis, postgres)."""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from typing import Any

import pytest
from session_support import Engine

from millions.sessions.base import SessionDataError, SessionStore, SessionStoreError

pytestmark = pytest.mark.timeout(30)

DATA: dict[str, Any] = {
    "user_id": 7,
    "name": 'Zoë \u2603 "quoted" \\ back',
    "csrf_token": secrets.token_urlsafe(32),
    "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
}


def new_id() -> str:
    return secrets.token_urlsafe(32)


async def wait_until_gone(store: SessionStore, session_id: str, deadline_s: float = 5.0) -> None:
    """Poll until the store stops returning `session_id` (expiry is time by definition)."""
    deadline = time.monotonic() + deadline_s
    while await store.load(session_id) is not None:
        assert time.monotonic() < deadline, f"{session_id} still loads after {deadline_s}s"
        await asyncio.sleep(0.05)


async def test_save_then_load_returns_the_same_data(store: SessionStore) -> None:
    session_id = new_id()
    await store.save(session_id, DATA, 60)
    assert await store.load(session_id) == DATA


async def test_save_replaces_the_data(store: SessionStore) -> None:
    session_id = new_id()
    await store.save(session_id, {"a": 1, "b": 2}, 60)
    await store.save(session_id, {"c": 3}, 60)
    assert await store.load(session_id) == {"c": 3}
    assert await store.count() == 1


async def test_unknown_id_loads_as_none(store: SessionStore) -> None:
    await store.save(new_id(), DATA, 60)
    assert await store.load(new_id()) is None
    assert await store.load("") is None


async def test_delete_forgets_only_that_session(store: SessionStore) -> None:
    kept, deleted = new_id(), new_id()
    await store.save(kept, {"n": 1}, 60)
    await store.save(deleted, {"n": 2}, 60)
    await store.delete(deleted)
    assert await store.load(deleted) is None
    assert await store.load(kept) == {"n": 1}


async def test_deleting_an_unknown_id_is_not_an_error(store: SessionStore) -> None:
    await store.delete(new_id())
    assert await store.count() == 0


async def test_count_counts_live_sessions(store: SessionStore) -> None:
    assert await store.count() == 0
    ids = [new_id() for _ in range(5)]
    for session_id in ids:
        await store.save(session_id, {"id": session_id}, 60)
    assert await store.count() == 5
    await store.delete(ids[0])
    assert await store.count() == 4


@pytest.mark.timeout(20)
async def test_expired_sessions_vanish_and_are_purged(engine: Engine) -> None:
    store = engine.open()
    short = [new_id(), new_id()]
    long = new_id()
    for session_id in short:
        await store.save(session_id, {"short": True}, 1)
    await store.save(long, {"short": False}, 60)
    assert await store.load(short[0]) == {"short": True}

    for session_id in short:
        await wait_until_gone(store, session_id)
    assert await store.count() == 1

    removed = await store.purge_expired()
    assert removed == (0 if engine.purges_itself else 2)
    assert await store.purge_expired() == 0
    assert await store.count() == 1
    assert await store.load(long) == {"short": False}


@pytest.mark.timeout(20)
async def test_touch_extends_expiry_without_changing_data(store: SessionStore) -> None:
    touched, untouched = new_id(), new_id()
    await store.save(touched, {"kept": 1}, 1)
    await store.save(untouched, {"kept": 0}, 1)
    await store.touch(touched, 30)
    await wait_until_gone(store, untouched)
    # `untouched` had the same 1 s expiry; `touched` outlives it.
    assert await store.load(touched) == {"kept": 1}
    assert await store.count() == 1


async def test_touch_does_not_create_a_session(store: SessionStore) -> None:
    session_id = new_id()
    await store.touch(session_id, 60)
    assert await store.load(session_id) is None
    assert await store.count() == 0


async def test_concurrent_saves_from_many_tasks(store: SessionStore) -> None:
    ids = [new_id() for _ in range(100)]
    shared = new_id()
    await asyncio.gather(
        *(store.save(session_id, {"id": session_id}, 60) for session_id in ids),
        *(store.save(shared, {"writer": n}, 60) for n in range(20)),
    )
    assert await store.count() == 101
    loaded = await asyncio.gather(*(store.load(session_id) for session_id in ids))
    assert loaded == [{"id": session_id} for session_id in ids]
    shared_data = await store.load(shared)
    assert shared_data is not None and shared_data["writer"] in range(20)


@pytest.mark.parametrize(
    "bad",
    [
        {"when": object()},
        {"tags": {"a", "b"}},
        {"ratio": math.nan},
        {"deep": {"deeper": [1, b"bytes"]}},
        {1: "int key"},
    ],
    ids=["object", "set", "nan", "nested-bytes", "int-key"],
)
async def test_non_json_data_is_refused_at_save(store: SessionStore, bad: dict[Any, Any]) -> None:
    session_id = new_id()
    with pytest.raises(SessionDataError, match="session"):
        await store.save(session_id, bad, 60)
    assert await store.load(session_id) is None


async def test_ttl_below_one_second_is_refused(store: SessionStore) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await store.save(new_id(), {"a": 1}, 0)


async def test_two_instances_see_each_others_writes(engine: Engine) -> None:
    """Two web servers, each with its own store instance on the same backing data."""
    server_a, server_b = engine.open(), engine.open()
    session_id = new_id()
    await server_a.save(session_id, {"user_id": 1}, 60)
    assert await server_b.load(session_id) == {"user_id": 1}
    await server_b.save(session_id, {"user_id": 2}, 60)
    assert await server_a.load(session_id) == {"user_id": 2}
    assert await server_a.count() == await server_b.count() == 1
    await server_b.delete(session_id)
    assert await server_a.load(session_id) is None


@pytest.mark.timeout(20)
async def test_an_unreachable_backend_raises_store_error(engine: Engine) -> None:
    store = engine.unreachable()
    engine.opened.append(store)
    for operation in (
        store.load(new_id()),
        store.save(new_id(), {"a": 1}, 60),
        store.touch(new_id(), 60),
        store.delete(new_id()),
        store.count(),
    ):
        with pytest.raises(SessionStoreError):
            await operation
