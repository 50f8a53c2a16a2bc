"""The `engine` fixture: every queue engine, isolated per test and cleaned up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from queue_support import ENGINE_NAMES, Engine, require_engine


@pytest.fixture(params=ENGINE_NAMES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    name: str = request.param
    require_engine(name)
    engine = Engine(name, tmp_path)
    try:
        yield engine
    finally:
        await engine.cleanup()
