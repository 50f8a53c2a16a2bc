"""The queue tier's config: the `[queue]` section of millions.toml (with `[queue.workers]`
and per-queue overrides under `[queue.queues."photo.process"]`).

Validated in full by pydantic before anything starts; unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from millions.queue.messages import DEFAULT_MAX_MESSAGE_BYTES, MAX_DELAY_S, check_queue_name
from millions.queue.urls import QueueURL, QueueURLError, parse_queue_url

DEFAULT_FILE_NAME = "queue.sqlite3"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class QueueOverride(_Section):
    """Settings for one queue that differ from the tier's defaults."""

    max_attempts: int | None = Field(default=None, ge=1, le=1000)
    visibility_timeout_s: float | None = Field(default=None, ge=0.1, le=12 * 3600)


class WorkersConfig(_Section):
    """Worker processes: how many, how busy each may be, and how the autoscaler moves."""

    min_workers: int = Field(default=1, ge=0, le=200, description="autoscaler floor")
    max_workers: int = Field(default=4, ge=1, le=200, description="autoscaler ceiling")
    concurrency: int = Field(
        default=4, ge=1, le=1000, description="messages handled at once per worker process"
    )
    grace_s: float = Field(
        default=10.0, gt=0, le=600, description="time in-flight tasks get to finish on SIGTERM"
    )
    target_drain_s: float = Field(
        default=30.0, gt=0, le=3600, description="autoscaler: clear a backlog within this time"
    )
    max_age_s: float = Field(
        default=60.0, gt=0, le=86400, description="autoscaler: add a worker when older"
    )
    scale_up_cooldown_s: float = Field(default=5.0, ge=0, le=3600)
    scale_down_window_s: float = Field(
        default=60.0, ge=0, le=3600, description="scale down to the highest need seen this long"
    )

    @model_validator(mode="after")
    def _min_not_above_max(self) -> WorkersConfig:
        if self.min_workers > self.max_workers:
            raise ValueError(
                f"min_workers ({self.min_workers}) is above max_workers ({self.max_workers})"
            )
        return self


class QueueConfig(_Section):
    """The message queue: engine, delivery guarantees and limits."""

    url: str = Field(
        default="",
        description="sqlite:///path/queue.db or amqp://user:pass@host:5672/vhost "
        f"(default: <run_dir>/{DEFAULT_FILE_NAME})",
    )
    visibility_timeout_s: float = Field(
        default=30.0,
        ge=0.1,
        le=12 * 3600,
        description="an unacknowledged delivery is given to another consumer after this",
    )
    max_attempts: int = Field(
        default=5, ge=1, le=1000, description="deliveries before a message is dead-lettered"
    )
    backoff_base_s: float = Field(default=1.0, gt=0, le=MAX_DELAY_S)
    backoff_cap_s: float = Field(default=300.0, gt=0, le=MAX_DELAY_S)
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=256, le=16 << 20)
    rabbitmq_quorum: bool = Field(
        default=False, description="RabbitMQ: declare queues as replicated quorum queues"
    )
    queues: dict[str, QueueOverride] = Field(default_factory=dict)
    workers: WorkersConfig = WorkersConfig()

    @field_validator("url")
    @classmethod
    def _url_parses(cls, url: str) -> str:
        if url:
            try:
                parse_queue_url(url)
            except QueueURLError as exc:
                raise ValueError(str(exc)) from None
        return url

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, queues: dict[str, QueueOverride]) -> dict[str, QueueOverride]:
        for name in queues:
            check_queue_name(name)
        return queues

    @model_validator(mode="after")
    def _backoff_order(self) -> QueueConfig:
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError(
                f"backoff_cap_s ({self.backoff_cap_s}) is below backoff_base_s "
                f"({self.backoff_base_s})"
            )
        return self

    def max_attempts_for(self, queue: str) -> int:
        override = self.queues.get(queue)
        if override is not None and override.max_attempts is not None:
            return override.max_attempts
        return self.max_attempts

    def visibility_timeout_for(self, queue: str) -> float:
        override = self.queues.get(queue)
        if override is not None and override.visibility_timeout_s is not None:
            return override.visibility_timeout_s
        return self.visibility_timeout_s

    def resolved_url(self, run_dir: Path | None = None) -> QueueURL:
        """The engine URL; an empty `url` means the SQLite file in `run_dir`."""
        if self.url:
            return parse_queue_url(self.url)
        if run_dir is None:
            raise QueueURLError("queue.url is empty and there is no run directory to default to")
        path = run_dir / DEFAULT_FILE_NAME
        return QueueURL("sqlite", f"sqlite://{path}", path)
