"""The accounting rules, without a network: outcomes, tallies, report, images."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest
from PIL import Image

from millions.load.images import generated_image
from millions.load.outcomes import (
    exception_failure,
    identity_failure,
    photo_list_failure,
    status_failure,
    upload_failure,
)
from millions.load.stats import ERROR_EXAMPLES_PER_KIND, LoadStats


@pytest.mark.parametrize(
    ("action", "status", "failure"),
    [
        ("browse", 200, None),
        ("upload", 201, None),
        ("upload", 200, "status_200"),
        ("me", 401, "logged_out"),
        ("list", 401, "logged_out"),
        ("upload", 401, "logged_out"),
        ("browse", 401, "status_401"),  # a public page never asks for a login
        ("view", 404, "status_404"),
        ("image", 503, "status_503"),
        ("me", 500, "status_500"),
        ("login", 401, "bad_credentials"),
        ("signup", 409, "username_taken"),
        ("browse", 302, "status_302"),
    ],
)
def test_status_failure(action: str, status: int, failure: str | None) -> None:
    assert status_failure(action, status) == failure


def test_exception_kinds() -> None:
    assert exception_failure(TimeoutError()) == "timeout"
    assert exception_failure(aiohttp.ServerDisconnectedError()) == "disconnected"
    assert exception_failure(aiohttp.ClientPayloadError("cut")) == "disconnected"
    assert exception_failure(aiohttp.ClientOSError(104, "reset")) == "disconnected"
    assert exception_failure(ConnectionRefusedError()) == "os_error"


def test_identity_and_body_checks() -> None:
    assert identity_failure({"id": 1, "username": "alice"}, "alice") is None
    assert identity_failure({"id": 2, "username": "bob"}, "alice") == "wrong_user"
    assert identity_failure(["alice"], "alice") == "bad_response"
    assert upload_failure({"id": 7, "url": "/x"}) is None
    assert upload_failure({"url": "/x"}) == "bad_response"
    assert photo_list_failure({"photos": [{"id": "a"}, {"id": 2}]}) is None
    assert photo_list_failure({"photos": [{"title": "no id"}]}) == "bad_response"
    assert photo_list_failure({"items": []}) == "bad_response"


def record(stats: LoadStats, *, user: int = 0, failure: str | None = None, **kw: object) -> None:
    args: dict[str, object] = {
        "setup": False,
        "user_id": user,
        "action": "me",
        "latency_s": 0.01,
        "status": 200 if failure is None else 500,
        "served_by": "web-us-east-1",
        "failure": failure,
        "message": "",
        "now": 100.0,
    }
    args.update(kw)
    stats.record(**args)  # type: ignore[arg-type]


def test_logged_out_counts_distinct_users_and_setup_is_separate() -> None:
    stats = LoadStats(users=3, duration_s=1.0, target_rate=None)
    record(stats, user=0, failure="logged_out", status=401)
    record(stats, user=0, failure="logged_out", status=401)
    record(stats, user=2, failure="logged_out", status=401)
    record(stats, user=1)
    record(stats, user=1, setup=True, action="signup", status=201)
    record(
        stats,
        user=1,
        setup=True,
        action="login",
        status=None,
        served_by=None,
        failure="connect",
        message="refused",
    )
    stats.main_duration_s = 2.0
    report = stats.report()
    assert report.logged_out_users == 2
    assert report.requests == 4
    assert report.failed_requests == 3
    assert report.errors == {"logged_out": 3}
    assert report.status_counts == {401: 3, 200: 1}
    assert report.served_by == {"web-us-east-1": 4}
    assert report.throughput_rps == 2.0
    assert report.setup_requests == 2
    assert report.setup_failures == 1
    assert report.setup_errors == {"connect": 1}
    assert report.setup_error_examples == {"connect": ["refused"]}
    assert report.actions["me"].requests == 4
    assert report.actions["me"].failed == 3


def test_error_examples_are_capped_and_distinct() -> None:
    stats = LoadStats(users=1, duration_s=1.0, target_rate=None)
    for n in range(10):
        record(stats, failure="status_500", message=f"boom {n % 5}")
    record(stats, failure="status_500", message="boom 0")
    examples = stats.report().error_examples["status_500"]
    assert examples == [f"boom {n}" for n in range(ERROR_EXAMPLES_PER_KIND)]


def test_missing_served_by_is_counted_visibly() -> None:
    stats = LoadStats(users=1, duration_s=1.0, target_rate=None)
    record(stats, served_by=None)
    assert stats.report().served_by == {"(none)": 1}


def test_report_is_json_serializable() -> None:
    stats = LoadStats(users=1, duration_s=1.0, target_rate=50.0)
    record(stats)
    record(stats, failure="status_500", message="boom")
    stats.main_duration_s = 1.0
    data = json.loads(json.dumps(stats.report().to_dict()))
    assert data["status_counts"] == {"200": 1, "500": 1}
    assert data["ok_requests"] == 1
    assert data["target_rate"] == 50.0
    assert data["actions"]["me"]["requests"] == 2


def test_snapshot_before_main_phase() -> None:
    stats = LoadStats(users=5, duration_s=3.0, target_rate=None)
    snap = stats.snapshot(now=1.0)
    assert (snap.phase, snap.elapsed_s, snap.requests, snap.p99_ms) == ("idle", 0.0, 0, 0.0)


@pytest.mark.parametrize(("fmt", "pil_format"), [("jpeg", "JPEG"), ("png", "PNG")])
def test_generated_images_are_valid_near_size_and_cached(fmt: str, pil_format: str) -> None:
    data = generated_image(20_000, fmt, 1)  # type: ignore[arg-type]
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == pil_format
        image.verify()
    assert 10_000 <= len(data) <= 30_000
    assert generated_image(20_000, fmt, 1) is data  # type: ignore[arg-type]
    assert generated_image(20_000, fmt, 2) != data  # type: ignore[arg-type]


def test_unknown_image_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="jpeg"):
        generated_image(2000, "gif", 0)  # type: ignore[arg-type]
