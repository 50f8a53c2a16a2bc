"""Real-service gating for tests that need Redis, PostgreSQL or RabbitMQ.

Tests that need Redis, PostgreSQL or RabbitMQ call `require_service(name)`. Without
MILLIONS_REQUIRE_SERVICES=1 they skip with the reason; with it (as in CI) they fail.
"""

from __future__ import annotations

import os
import socket

import pytest

SERVICES = {
    "redis": ("127.0.0.1", 6379),
    "postgres": ("127.0.0.1", 5432),
    "rabbitmq": ("127.0.0.1", 5672),
}

REDIS_URL = os.environ.get("MILLIONS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "MILLIONS_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def service_reachable(name: str) -> bool:
    host, port = SERVICES[name]
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str) -> None:
    """Skip (or, under MILLIONS_REQUIRE_SERVICES=1, fail) when `name` is not reachable."""
    if service_reachable(name):
        return
    host, port = SERVICES[name]
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("MILLIONS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} and MILLIONS_REQUIRE_SERVICES=1 requires it")
    pytest.skip(f"{reason}; start it or set MILLIONS_TEST_*_URL")
