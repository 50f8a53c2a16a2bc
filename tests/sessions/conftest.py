"""The `engine` fixture: every session store engine, isolated per test and cleaned up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from session_support import (
    ENGINE_NAMES,
    Engine,
    make_engine,
    remove_backing_data,
    require_service,
)

from millions.sessions.base import SessionStore


@pytest.fixture(params=ENGINE_NAMES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    name: str = request.param
    if name != "sqlite":
        require_service(name)
    engine = make_engine(name, tmp_path)
    try:
        yield engine
    finally:
        for store in engine.opened:
            await store.close()
        await remove_backing_data(engine)


@pytest.fixture
async def store(engine: Engine) -> SessionStore:
    return engine.open()
