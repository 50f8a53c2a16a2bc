"""LoadRunner against the fake photo app: its numbers must match what the server saw."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_photo_app import FakeServer, Faults

from millions.load import LoadConfig, LoadReport, LoadRunner

FakeApp = Callable[..., FakeServer]
pytestmark = pytest.mark.timeout(30)


def config(*targets: str, **overrides: Any) -> LoadConfig:
    settings: dict[str, Any] = {
        "targets": list(targets),
        "users": 4,
        "duration_s": 0.6,
        "request_timeout_s": 5.0,
        "upload_bytes": 2000,
    }
    settings.update(overrides)
    return LoadConfig(**settings)


async def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


TRANSPORT_FAILURES = {"timeout", "connect", "disconnected", "bad_http", "client_error", "os_error"}


def assert_consistent(report: LoadReport) -> None:
    """Invariants any report must hold."""
    transport = sum(n for kind, n in report.errors.items() if kind in TRANSPORT_FAILURES)
    assert sum(report.status_counts.values()) + transport == report.requests
    assert sum(action.requests for action in report.actions.values()) == report.requests
    assert sum(report.errors.values()) == report.failed_requests
    assert report.p50_ms <= report.p90_ms <= report.p99_ms <= report.max_ms


async def test_counts_match_the_server(fake_app: FakeApp) -> None:
    server = fake_app()
    report = await LoadRunner(config(server.url)).run()
    state = server.state
    assert report.users_ready == 4
    assert report.setup_requests == state.setup_requests == 8
    assert report.setup_failures == 0
    assert report.requests == state.main_requests > 20
    assert report.failed_requests == 0
    assert report.logged_out_users == 0
    assert report.served_by == {"fake-1": report.requests}
    assert set(report.actions) <= {"browse", "me", "list", "view", "image", "upload"}
    assert report.throughput_rps == pytest.approx(report.requests / report.duration_s)
    assert 0.6 <= report.duration_s < 3.0
    assert not report.stopped_early
    assert_consistent(report)


async def test_users_spread_over_targets(fake_app: FakeApp) -> None:
    first = fake_app(host="127.0.60.1", name="fake-1")
    second = fake_app(host="127.0.60.2", name="fake-2")
    report = await LoadRunner(config(first.url, second.url)).run()
    assert len(first.state.users) == len(second.state.users) == 2
    assert report.served_by == {
        "fake-1": first.state.main_requests,
        "fake-2": second.state.main_requests,
    }
    assert report.served_by["fake-1"] > 0 and report.served_by["fake-2"] > 0


async def test_server_errors_are_failures(fake_app: FakeApp) -> None:
    server = fake_app(Faults(fail_every=5))
    report = await LoadRunner(config(server.url)).run()
    assert server.state.served_500 > 0
    assert report.errors["status_500"] == server.state.served_500
    assert report.failed_requests == server.state.served_500
    assert report.status_counts[500] == server.state.served_500
    assert any("-> 500 [fake-1]: boom" in e for e in report.error_examples["status_500"])
    assert_consistent(report)


async def test_dropped_connections_are_failures(fake_app: FakeApp) -> None:
    server = fake_app(Faults(drop_every=7))
    report = await LoadRunner(config(server.url)).run()
    assert server.state.dropped > 0
    assert report.errors["disconnected"] == server.state.dropped
    assert report.failed_requests == server.state.dropped
    assert report.requests == server.state.main_requests
    assert_consistent(report)


async def test_forgotten_sessions_count_logged_out_users_who_log_back_in(
    fake_app: FakeApp,
) -> None:
    server = fake_app(Faults(forget_sessions_after=20))
    cfg = config(server.url, mix={"me": 1.0, "browse": 1.0}, users=4)
    report = await LoadRunner(cfg).run()
    assert server.state.forgotten
    assert 0 < report.logged_out_users <= 4
    assert report.errors["logged_out"] == server.state.unauthorized >= report.logged_out_users
    # Each logged-out user logged in again and carried on with a working session.
    assert report.actions["login"].requests >= report.logged_out_users
    assert report.actions["login"].failed == 0
    assert report.failed_requests == report.errors["logged_out"]
    assert_consistent(report)


async def test_session_for_the_wrong_user_is_caught(fake_app: FakeApp) -> None:
    server = fake_app(Faults(swap_identity=True))
    report = await LoadRunner(config(server.url, mix={"me": 1.0})).run()
    assert report.requests > 0
    assert report.errors == {"wrong_user": report.requests}
    assert report.failed_requests == report.requests


async def test_each_user_keeps_its_own_session(fake_app: FakeApp) -> None:
    server = fake_app()
    runner = LoadRunner(config(server.url, users=6, mix={"upload": 1.0, "me": 1.0, "list": 1.0}))
    report = await runner.run()
    state = server.state
    assert report.failed_requests == 0
    assert report.actions["upload"].requests > 6
    # Every upload was titled by the user whose session carried it.
    assert state.title_mismatches == 0
    # Every user was seen authenticated, each holding a different live session.
    assert state.authenticated_users == {user.username for user in runner.users}
    sessions = [user.cookies["millions_session"] for user in runner.users]
    assert len(set(sessions)) == 6
    for user in runner.users:
        assert state.sessions_issued[user.cookies["millions_session"]] == user.username


async def test_timeouts_are_failures(fake_app: FakeApp) -> None:
    server = fake_app(Faults(delay_s=1.0))
    report = await LoadRunner(
        config(server.url, users=2, request_timeout_s=0.2, duration_s=0.5)
    ).run()
    assert report.requests >= 2
    assert report.errors == {"timeout": report.requests}
    assert report.max_ms >= 200


async def test_unreachable_target_fails_setup_without_hanging() -> None:
    # A bound but never-listening socket: connections to it are refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as reserved:
        reserved.bind(("127.0.60.3", 0))
        url = f"http://127.0.60.3:{reserved.getsockname()[1]}"
        started = time.monotonic()
        report = await LoadRunner(config(url, users=3, duration_s=5.0)).run()
    assert time.monotonic() - started < 3.0
    assert report.users_ready == 0
    assert report.setup_failures == report.setup_requests == 3
    assert report.setup_errors == {"connect": 3}
    assert report.requests == 0
    assert report.duration_s == 0.0


async def test_open_loop_holds_the_rate(fake_app: FakeApp) -> None:
    server = fake_app()
    report = await LoadRunner(config(server.url, users=8, rate=150.0, duration_s=1.5)).run()
    expected = 150.0 * 1.5
    assert expected * 0.7 <= report.requests <= expected * 1.3
    assert report.dropped_requests == 0
    assert report.target_rate == 150.0


async def test_open_loop_counts_dropped_requests_when_users_are_busy(
    fake_app: FakeApp,
) -> None:
    server = fake_app(Faults(delay_s=0.1))
    report = await LoadRunner(config(server.url, users=2, rate=50.0, duration_s=1.0)).run()
    # Two users at ~0.1 s each serve ~20 of the 50 scheduled requests; the rest are dropped.
    assert report.dropped_requests > 10
    assert report.requests + report.dropped_requests == pytest.approx(50, abs=3)
    assert report.requests <= 25


async def test_stop_ends_the_run_early(fake_app: FakeApp) -> None:
    server = fake_app()
    runner = LoadRunner(config(server.url, duration_s=30.0, think_time_s=0.05))
    run = asyncio.ensure_future(runner.run())
    await wait_for(lambda: runner.snapshot().requests >= 10)
    snapshot = runner.snapshot()
    assert snapshot.phase == "running"
    assert snapshot.users_logged_in == 4
    stopped_at = time.monotonic()
    runner.stop()
    report = await run
    assert time.monotonic() - stopped_at < 1.0
    assert report.stopped_early
    assert report.duration_s < 5.0
    assert report.requests == server.state.main_requests
    assert runner.snapshot().phase == "done"


async def test_stop_during_setup_skips_the_main_phase(fake_app: FakeApp) -> None:
    server = fake_app()
    runner = LoadRunner(config(server.url, users=50, setup_concurrency=1))
    run = asyncio.ensure_future(runner.run())
    await wait_for(lambda: runner.snapshot().setup_requests >= 2)
    runner.stop()
    report = await run
    assert report.stopped_early
    assert report.requests == 0 == server.state.main_requests
    assert report.users_ready < 50


async def test_snapshot_tracks_live_rate(fake_app: FakeApp) -> None:
    server = fake_app()
    runner = LoadRunner(config(server.url, duration_s=1.6))
    run = asyncio.ensure_future(runner.run())
    await wait_for(lambda: runner.snapshot().elapsed_s >= 1.1)
    snapshot = runner.snapshot()
    report = await run
    assert snapshot.rps > 0
    assert snapshot.p50_ms > 0
    assert snapshot.requests <= report.requests
    assert snapshot.users_ready == 4


async def test_a_runner_runs_once(fake_app: FakeApp) -> None:
    server = fake_app()
    runner = LoadRunner(config(server.url, duration_s=0.2))
    await runner.run()
    with pytest.raises(RuntimeError, match="runs once"):
        await runner.run()


async def test_cancelling_run_leaves_nothing_running(fake_app: FakeApp) -> None:
    server = fake_app()
    runner = LoadRunner(config(server.url, duration_s=30.0))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runner.run(), timeout=0.5)
    assert runner._tasks == set()
    assert runner.snapshot().phase == "done"


async def test_a_bug_in_a_user_task_fails_the_run(
    fake_app: FakeApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = fake_app()
    runner = LoadRunner(config(server.url, duration_s=5.0))

    async def broken(user: object) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(runner, "_act", broken)
    started = time.monotonic()
    with pytest.raises(KeyError, match="bug"):
        await runner.run()
    assert time.monotonic() - started < 3.0
