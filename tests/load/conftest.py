"""Fixtures for load generator tests: fake photo apps on 127.0.60.x, always stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fake_photo_app import FakeServer, Faults


@pytest.fixture
def fake_app() -> Iterator[Callable[..., FakeServer]]:
    """Factory: `fake_app(faults=Faults(...), host="127.0.60.1", name="fake-1")`."""
    started: list[FakeServer] = []

    def start(
        faults: Faults | None = None, host: str = "127.0.60.1", name: str = "fake-1"
    ) -> FakeServer:
        server = FakeServer(host, name)
        if faults is not None:
            server.state.faults = faults
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
