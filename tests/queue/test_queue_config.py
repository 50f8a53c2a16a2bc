"""The `[queue]` config section: defaults, bounds, unknown keys, per-queue overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from millions.queue.config import QueueConfig, QueueOverride, WorkersConfig


def test_defaults_are_an_embedded_queue_in_the_run_directory(tmp_path: Path) -> None:
    config = QueueConfig()
    assert (config.max_attempts, config.visibility_timeout_s) == (5, 30.0)
    assert config.max_message_bytes == 1 << 20
    assert (config.workers.min_workers, config.workers.max_workers) == (1, 4)
    url = config.resolved_url(tmp_path)
    assert (url.engine, url.path) == ("sqlite", tmp_path / "queue.sqlite3")


def test_an_explicit_url_wins_over_the_run_directory(tmp_path: Path) -> None:
    config = QueueConfig(url="amqp://guest:guest@127.0.0.1:5672/")
    assert config.resolved_url(tmp_path).engine == "rabbitmq"


def test_overrides_apply_per_queue() -> None:
    config = QueueConfig.model_validate(
        {
            "max_attempts": 4,
            "visibility_timeout_s": 20,
            "queues": {"photo.process": {"max_attempts": 8, "visibility_timeout_s": 120}},
        }
    )
    assert config.max_attempts_for("photo.process") == 8
    assert config.visibility_timeout_for("photo.process") == 120
    assert config.max_attempts_for("mail.send") == 4
    assert config.visibility_timeout_for("mail.send") == 20
    partial = QueueConfig(queues={"a": QueueOverride(max_attempts=2)})
    assert partial.visibility_timeout_for("a") == 30.0


@pytest.mark.parametrize(
    ("data", "location", "problem"),
    [
        ({"colour": "blue"}, "colour", "Extra inputs"),
        ({"workers": {"threads": 3}}, "workers.threads", "Extra inputs"),
        ({"url": "redis://127.0.0.1"}, "url", "unsupported queue URL"),
        ({"max_attempts": 0}, "max_attempts", "greater than or equal to 1"),
        ({"visibility_timeout_s": 0}, "visibility_timeout_s", "greater than or equal"),
        ({"max_message_bytes": 17 << 20}, "max_message_bytes", "less than or equal"),
        ({"backoff_base_s": 10, "backoff_cap_s": 5}, "", "backoff_cap_s (5.0) is below"),
        ({"queues": {"bad name": {}}}, "queues", "queue name"),
        ({"workers": {"min_workers": 5, "max_workers": 2}}, "workers", "above max_workers"),
        ({"workers": {"concurrency": 0}}, "workers.concurrency", "greater than or equal"),
    ],
)
def test_bad_settings_name_the_key_and_the_problem(
    data: dict[str, object], location: str, problem: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        QueueConfig.model_validate(data)
    error = caught.value.errors()[0]
    assert ".".join(str(part) for part in error["loc"]) == location
    assert problem in error["msg"]


def test_the_config_is_frozen() -> None:
    with pytest.raises(ValidationError):
        WorkersConfig().concurrency = 9
