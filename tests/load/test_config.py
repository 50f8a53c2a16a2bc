"""LoadConfig rejects bad values with one clear message; target choice is round-robin."""

from __future__ import annotations

from typing import Any

import pytest

from millions.load import ACTIONS, LoadConfig, target_for_user

TARGET = "http://127.0.60.1:8080"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"targets": []}, "targets: at least one"),
        ({"targets": ["127.0.60.1:8080"]}, "not an http"),
        ({"targets": ["http://127.0.60.1:8080/app"]}, "scheme://host"),
        ({"users": 0}, "users: must be at least 1"),
        ({"duration_s": 0}, "duration_s"),
        ({"duration_s": float("nan")}, "duration_s"),
        ({"rate": -5.0}, "rate"),
        ({"rate": 10.0, "think_time_s": 1.0}, "think_time_s: applies to closed loop"),
        ({"think_time_s": -1.0}, "think_time_s"),
        ({"mix": {"browse": 1.0, "dance": 2.0}}, "mix: unknown action"),
        ({"mix": {"browse": -1.0}}, "mix: weight"),
        ({"mix": {"browse": 0.0}}, "mix: at least one weight"),
        ({"upload_bytes": 10}, "upload_bytes"),
        ({"upload_format": "gif"}, "upload_format"),
        ({"request_timeout_s": 0}, "request_timeout_s"),
        ({"setup_concurrency": 0}, "setup_concurrency"),
    ],
)
def test_bad_values_name_the_field(overrides: dict[str, Any], message: str) -> None:
    settings: dict[str, Any] = {"targets": [TARGET], **overrides}
    with pytest.raises(ValueError, match=message):
        LoadConfig(**settings)


def test_defaults_are_valid_and_cover_every_action() -> None:
    config = LoadConfig(targets=[TARGET])
    names, cumulative = config.weighted_actions()
    assert names == list(ACTIONS)
    assert cumulative == sorted(cumulative)
    assert cumulative[-1] == sum(config.mix.values())


def test_weighted_actions_skips_zero_and_missing_weights() -> None:
    config = LoadConfig(targets=[TARGET], mix={"me": 2.0, "upload": 0.0, "browse": 1.0})
    assert config.weighted_actions() == (["browse", "me"], [1.0, 3.0])


def test_users_are_spread_round_robin_over_targets() -> None:
    targets = ["http://127.0.60.1:1/", "http://127.0.60.2:1"]
    chosen = [target_for_user(targets, n) for n in range(5)]
    assert chosen == [
        "http://127.0.60.1:1",
        "http://127.0.60.2:1",
        "http://127.0.60.1:1",
        "http://127.0.60.2:1",
        "http://127.0.60.1:1",
    ]
    with pytest.raises(ValueError):
        target_for_user([], 0)
