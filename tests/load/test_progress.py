"""The live panel and the final report render what the run measured."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from fake_photo_app import FakeServer, Faults
from rich.console import Console

from millions.load import LoadConfig, LoadRunner, render_report, run_with_progress
from millions.load.progress import snapshot_panel
from millions.load.stats import LoadSnapshot

pytestmark = pytest.mark.timeout(30)


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120, color_system=None), out


def runner_for(server: FakeServer) -> LoadRunner:
    return LoadRunner(LoadConfig(targets=[server.url], users=2, duration_s=0.6, upload_bytes=2000))


async def test_live_progress_on_a_terminal(fake_app: Callable[..., FakeServer]) -> None:
    server = fake_app()
    term, out = console(terminal=True)
    report = await run_with_progress(runner_for(server), term)
    text = out.getvalue()
    assert report.requests > 0
    assert "rps" in text and "p99" in text and "logged out" in text
    assert "running" in text or "draining" in text


async def test_no_live_display_off_a_terminal(fake_app: Callable[..., FakeServer]) -> None:
    server = fake_app()
    plain, out = console(terminal=False)
    report = await run_with_progress(runner_for(server), plain)
    assert report.requests > 0
    assert out.getvalue() == ""
    term, term_out = console(terminal=True)
    await run_with_progress(runner_for(server), term, live=False)
    assert term_out.getvalue() == ""


async def test_report_shows_failures_servers_and_examples(
    fake_app: Callable[..., FakeServer],
) -> None:
    server = fake_app(Faults(fail_every=3))
    report = await runner_for(server).run()
    plain, out = console(terminal=False)
    render_report(report, plain)
    text = out.getvalue()
    assert "served by" in text and "fake-1" in text and "100.0%" in text
    assert "status_500" in text and "boom" in text
    assert f"{report.requests:,}" in text
    assert "500" in text and "by action" in text


def test_setup_panel_shows_users_ready() -> None:
    snapshot = LoadSnapshot(
        phase="setup",
        elapsed_s=0.0,
        duration_s=10.0,
        users=40,
        users_ready=12,
        users_logged_in=12,
        requests=0,
        failed_requests=0,
        logged_out_users=0,
        rps=0.0,
        p50_ms=0.0,
        p99_ms=0.0,
        setup_requests=24,
        setup_failures=1,
        dropped_requests=5,
    )
    plain, out = console(terminal=False)
    plain.print(snapshot_panel(snapshot))
    text = out.getvalue()
    assert "setting up users 12/40" in text
    assert "dropped" in text
