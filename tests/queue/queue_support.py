"""Engines and helpers for the queue tests: every engine opened on isolated data
(a temporary SQLite file, uniquely named RabbitMQ queues) and cleaned up afterwards.

Service gating comes from tests/services.py.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika

from millions.queue.base import Delivery, MessageQueue
from millions.queue.config import QueueConfig
from millions.queue.rabbitmq import RabbitQueue
from millions.queue.sqlite import SqliteQueue
from services import require_service as require_service

RABBITMQ_URL = os.environ.get("MILLIONS_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
ENGINE_NAMES = ("sqlite", "rabbitmq")

#: Short timings so expiry, backoff and delays show within a test's time.
TEST_CONFIG: dict[str, Any] = {
    "visibility_timeout_s": 1.0,
    "max_attempts": 3,
    "backoff_base_s": 0.1,
    "backoff_cap_s": 0.2,
}


@dataclass
class Engine:
    """Opens queues of one engine; every `open()` is another process on the same data."""

    name: str
    tmp_path: Path
    opened: list[MessageQueue] = field(default_factory=list)
    queue_names: list[str] = field(default_factory=list)

    def new_queue_name(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.queue_names.append(name)
        return name

    @property
    def url(self) -> str:
        if self.name.startswith("rabbitmq"):
            return RABBITMQ_URL
        return f"sqlite://{self.tmp_path / 'queue.sqlite3'}"

    def config(self, **overrides: Any) -> QueueConfig:
        settings = {**TEST_CONFIG, "url": self.url, **overrides}
        if self.name == "rabbitmq-quorum":
            settings["rabbitmq_quorum"] = True
        return QueueConfig.model_validate(settings)

    def open(self, config: QueueConfig | None = None, *, prefetch: int = 10) -> MessageQueue:
        config = config or self.config()
        queue: MessageQueue
        if self.name == "sqlite":
            queue = SqliteQueue(self.tmp_path / "queue.sqlite3", config, poll_interval_s=0.02)
        else:
            queue = RabbitQueue(RABBITMQ_URL, config, prefetch=prefetch)
        self.opened.append(queue)
        return queue

    async def inject_raw(self, queue: str, body: bytes) -> None:
        """Store bytes as a message the way a corrupt row or a foreign publisher would."""
        if self.name == "sqlite":
            import sqlite3

            now = time.time()
            db = sqlite3.connect(self.tmp_path / "queue.sqlite3")
            try:
                db.execute(
                    "INSERT INTO messages (message_id, queue, body, idempotency_key, attempts,"
                    " published_at, ready_since, available_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                    (uuid.uuid4().hex, queue, body, "raw", now, now, now),
                )
                db.commit()
            finally:
                db.close()
            return
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            await channel.default_exchange.publish(
                aio_pika.Message(body, message_id=uuid.uuid4().hex), routing_key=queue
            )
        finally:
            await connection.close()

    async def cleanup(self) -> None:
        for queue in self.opened:
            await queue.close()
        if self.name.startswith("rabbitmq") and self.queue_names:
            admin = RabbitQueue(RABBITMQ_URL)
            try:
                for name in self.queue_names:
                    await admin.delete_queue(name)
            finally:
                await admin.close()


def require_engine(name: str) -> None:
    if name.startswith("rabbitmq"):
        require_service("rabbitmq")


async def receive_one(queue: MessageQueue, name: str, timeout_s: float = 5.0) -> Delivery:
    """The next delivery of `name`, waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        deliveries = await queue.receive(
            name, max_messages=1, wait_s=min(0.5, deadline - time.monotonic())
        )
        if deliveries:
            assert len(deliveries) == 1
            return deliveries[0]
    raise AssertionError(f"no message on {name} within {timeout_s} s")


async def receive_all(
    queue: MessageQueue, name: str, count: int, timeout_s: float = 10.0
) -> list[Delivery]:
    """Exactly `count` deliveries (acknowledged as they come), or an AssertionError."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        batch = await queue.receive(name, max_messages=count - len(got), wait_s=0.5)
        for delivery in batch:
            assert await queue.ack(delivery)
        got.extend(batch)
    assert len(got) == count, f"got {len(got)} of {count} messages within {timeout_s} s"
    return got


async def wait_until(
    predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05
) -> None:
    """Poll an async or plain predicate until it is true."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        await asyncio.sleep(interval_s)
