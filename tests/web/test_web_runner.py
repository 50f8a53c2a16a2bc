"""The web server runner: app import errors, the shared session secret, ops endpoints."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from millions.topology.config import MillionsConfig, parse
from millions.web.main import AppImportError, load_app, session_secret
from millions.web.ops import OpsMiddleware


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("no_such_module_xyz:app", "cannot import module 'no_such_module_xyz'"),
        ("millions.web.main:nothing_here", "has no 'nothing_here'"),
        ("millions.web.main:SECRET_FILE", "is not an ASGI application"),
    ],
)
def test_bad_app_path_is_a_clear_error(path: str, message: str) -> None:
    with pytest.raises(AppImportError, match=message):
        load_app(path)


def test_load_app_finds_nested_attributes() -> None:
    assert load_app("millions.web.ops:OpsMiddleware.__call__") is OpsMiddleware.__call__


def test_session_secret_is_generated_once_per_run_dir_and_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MILLIONS_SESSION_SECRET", raising=False)
    config = MillionsConfig()
    first = session_secret(config, tmp_path)
    assert len(first) >= 48
    assert session_secret(config, tmp_path) == first
    mode = stat.S_IMODE((tmp_path / "session-secret").stat().st_mode)
    assert mode == 0o600
    assert session_secret(config, tmp_path / "other") != first
    configured = parse({"sessions": {"secret": "from-config"}})
    assert session_secret(configured, tmp_path) == "from-config"
    monkeypatch.setenv("MILLIONS_SESSION_SECRET", "from-env")
    assert session_secret(config, tmp_path) == "from-env"


async def test_ops_endpoints_answer_before_the_app_and_requests_are_counted() -> None:
    async def hello(_request: object) -> PlainTextResponse:
        return PlainTextResponse("hello")

    app = OpsMiddleware(Starlette(routes=[Route("/", hello)]), component="web-x-1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        health = await client.get("/healthz")
        assert health.status_code == 200
        assert health.json()["component"] == "web-x-1"
        assert (await client.get("/")).text == "hello"
        assert (await client.get("/missing")).status_code == 404
        metrics = (await client.get("/metrics")).text
    assert 'millions_web_requests_total{method="GET",status_class="2xx"}' in metrics
    assert 'millions_web_requests_total{method="GET",status_class="4xx"}' in metrics
    assert "millions_web_request_seconds_bucket" in metrics
