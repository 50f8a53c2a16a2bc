"""The queue interface: what producers and workers see, and what an engine implements.

Semantics every engine keeps (one contract suite checks them on each):

* `publish` returns only once the message is durable (committed to disk, or confirmed by
  the broker). It returns the message id.
* `receive` leases messages to the caller. A leased message is invisible to other
  consumers until it is acknowledged (`ack`: done, deleted), failed (`nack`: retried with
  backoff, or dead-lettered after `max_attempts` deliveries), released (`release`: back
  to the queue at once, the attempt not counted), or its lease runs out: after the
  visibility timeout, or when its consumer dies, it is delivered again.
  Delivery is therefore at least once: handlers make their effects idempotent with
  `Delivery.idempotency_key` (see `millions.queue.idempotency`).
* A message published with `delay_s` is not delivered before that time.
* Dead letters can be listed, re-driven (delivered afresh, attempts reset) and purged.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

#: What became of a failed delivery: retried after a backoff, dead-lettered, or nothing
#: because the lease had already been lost (the message was or will be redelivered).
NackResult = Literal["retried", "dead_lettered", "lost"]


class QueueError(Exception):
    """The queue engine failed or is unreachable; engines wrap their driver's errors."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of a message to a consumer.

    `attempt` is 1 on the first delivery and counts up with every delivery that ended
    without an acknowledgement. `idempotency_key` is the key given at publish, else the
    message id, and is the same on every redelivery.
    """

    queue: str
    message_id: str
    payload: Any
    attempt: int
    max_attempts: int
    idempotency_key: str
    published_at: float
    receipt: object = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that exhausted its attempts (or was rejected), kept for inspection.

    `body` is the stored bytes, which may not be valid JSON when that is why it died.
    """

    queue: str
    message_id: str
    body: bytes
    attempts: int
    error: str
    idempotency_key: str
    published_at: float
    dead_at: float

    def preview(self, limit: int = 120) -> str:
        """The body as text, shortened for tables."""
        text = self.body.decode("utf-8", "replace")
        return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A queue's current state. None marks what an engine cannot observe (RabbitMQ over
    AMQP reports no unacknowledged counts, message ages or rates).

    `oldest_age_s` is how long the oldest message waiting or in flight has been
    deliverable (0 when there is none); rates are per second over the last minute."""

    queue: str
    ready: int
    in_flight: int | None
    delayed: int | None
    dead: int
    oldest_age_s: float | None
    publish_rate: float | None
    ack_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "ready": self.ready,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "dead": self.dead,
            "oldest_age_s": self.oldest_age_s,
            "publish_rate": self.publish_rate,
            "ack_rate": self.ack_rate,
        }


class MessageQueue(Protocol):
    """A durable message queue. Every engine passes one contract suite."""

    async def publish(
        self,
        queue: str,
        payload: Any,
        *,
        delay_s: float = 0.0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        """Store a JSON `payload` durably; deliverable after `delay_s`. Returns its id.

        Raises `MessageTooLargeError` / `UnserializableMessageError` (both `MessageError`)
        before anything is stored; `max_attempts` overrides the queue's setting.
        """
        ...

    async def receive(
        self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[Delivery]:
        """Lease up to `max_messages` ready messages, waiting up to `wait_s` for the first.

        Returns as soon as at least one is leased; an empty list when none came in time.
        Messages whose bytes cannot be decoded are dead-lettered here, never returned.
        """
        ...

    async def ack(self, delivery: Delivery) -> bool:
        """The message is done: delete it. False when the lease was lost meanwhile."""
        ...

    async def nack(self, delivery: Delivery, error: str, *, retry: bool = True) -> NackResult:
        """The handling failed with `error`: retry after a backoff, or dead-letter when
        the attempts are used up or `retry` is False."""
        ...

    async def release(self, delivery: Delivery) -> bool:
        """Give the message back unhandled, ready at once, without counting the attempt."""
        ...

    async def stats(self, queue: str) -> QueueStats:
        """Counts and rates of `queue` (zeros for a queue never used)."""
        ...

    async def queue_names(self) -> list[str]:
        """Queues this store knows of, sorted."""
        ...

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """Up to `limit` dead letters of `queue`, oldest first, without removing them."""
        ...

    async def redrive(self, queue: str, message_ids: Collection[str] | None = None) -> int:
        """Deliver dead letters (all, or those ids) again with fresh attempts; the count."""
        ...

    async def purge_dead_letters(self, queue: str) -> int:
        """Drop every dead letter of `queue`; the count."""
        ...

    async def delete_queue(self, queue: str) -> None:
        """Remove the queue with its messages and dead letters."""
        ...

    async def close(self) -> None:
        """Give back unhandled leases without penalty and release connections/files."""
        ...
