"""The message queue: a durable buffer between producers (web servers) and workers.

`open_queue` picks the engine from the URL: `sqlite:///path` (embedded, the default)
or `amqp://...` (RabbitMQ). Engines are imported on demand so a process on SQLite never
loads the AMQP client.
"""

from __future__ import annotations

from pathlib import Path

from millions.queue.base import (
    DeadLetter,
    Delivery,
    MessageQueue,
    NackResult,
    QueueError,
    QueueStats,
)
from millions.queue.config import QueueConfig, QueueOverride, WorkersConfig
from millions.queue.messages import (
    MessageDecodeError,
    MessageError,
    MessageTooLargeError,
    UnserializableMessageError,
)
from millions.queue.urls import QueueURL, QueueURLError, parse_queue_url

__all__ = [
    "DeadLetter",
    "Delivery",
    "MessageDecodeError",
    "MessageError",
    "MessageQueue",
    "MessageTooLargeError",
    "NackResult",
    "QueueConfig",
    "QueueError",
    "QueueOverride",
    "QueueStats",
    "QueueURL",
    "QueueURLError",
    "UnserializableMessageError",
    "WorkersConfig",
    "open_queue",
    "parse_queue_url",
]


def open_queue(
    config: QueueConfig, run_dir: Path | None = None, *, prefetch: int = 1
) -> MessageQueue:
    """The queue named by `config.url` (empty: `<run_dir>/queue.sqlite3`).

    Nothing connects until first use. `prefetch` is how many messages RabbitMQ may push
    to this consumer ahead of `receive` (a worker passes its concurrency).
    """
    url = config.resolved_url(run_dir)
    if url.engine == "sqlite":
        from millions.queue.sqlite import SqliteQueue

        assert url.path is not None
        return SqliteQueue(url.path, config)
    from millions.queue.rabbitmq import RabbitQueue

    return RabbitQueue(url.url, config, prefetch=prefetch)
