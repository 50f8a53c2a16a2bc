"""The RabbitMQ queue engine (aio-pika): durable queues, publisher confirms, manual acks.

Topology per queue `Q`: the durable queue `Q` (a quorum queue with
`rabbitmq_quorum = true`), its dead-letter queue `Q.dead`, and the delay chain of
`millions.queue.delay_chain` for delayed publishes and retry backoff. `publish` waits for
the broker's confirm, so it returns once the broker has the persistent message.

Consuming: one channel per queue with a prefetch of `prefetch` (a worker uses its
concurrency); `receive` hands out what the broker has pushed. Messages pushed but not
yet handed out wait in this process (up to `prefetch`); the broker no longer counts them
as ready, and `close` gives them back without counting an attempt. Leases are kept on both
sides: the broker redelivers everything unacknowledged when the channel closes (the
consumer died), and this client gives a delivery back (`basic.nack`, requeue) when it
has not been answered within the visibility timeout (one timer per consumer, armed for
its oldest lease, not one per lease). The broker's own `consumer_timeout` should be at
least the visibility timeout; it is the backstop for a stuck client.

Acknowledgements are batched per event-loop pass: the acks made in one pass go out
together once the pass ends, as one `basic.ack(multiple=True)` over the longest run of
delivery tags that leaves nothing unanswered below it (every lower tag of the channel
is answered too; `plan_acks`), and single acks for the rest. `ack` waits until its
frame is handed to the connection, as aio-pika's own `ack` does, so a process that dies
after `ack` returned does not get the message redelivered. Requeues (`basic.nack`) go out
at once, and a tag counts as answered for a later `multiple` only once its nack is
written, so a `multiple` never covers a delivery meant to go back.

The hot paths use aio-pika's channels through their aiormq layer (`basic_publish`,
`basic_consume`, `basic_ack` with pamqp properties): no aio-pika `Message` or
`IncomingMessage` object and no extra task per message. A message carries its id
(a version-7 UUID, which holds the publish time) and the persistent delivery mode; the
headers table only what differs from the defaults (attempts, an idempotency key other
than the id, `max_attempts`, a publish time other than the id's).

Counting attempts. The broker does not count deliveries on classic queues, so the
count travels in a header, and every change of it is a new copy: a failure republishes
the message into the delay chain with the attempt recorded and then acknowledges the
original; a release republishes it unchanged. A delivery the broker marks
`redelivered` had been handed to a consumer that never answered (it died, or its lease
ran out): it is counted as an attempt by republishing it with the count raised (or
dead-lettering it when the attempts are used up). A message that crashes its consumer
therefore cannot loop forever on either queue type. Republish-then-ack can duplicate
a message if the process dies in between; delivery is at least once either way.

RabbitMQ reports neither unacknowledged counts nor message ages over AMQP (the
management plugin does), so `stats` leaves `in_flight`, `oldest_age_s` and the rates
as None. Nor can AMQP list queues: `queue_names` returns the queues this object used.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import aio_pika
import aio_pika.abc
import aiormq.abc
from aio_pika.exceptions import (
    AMQPError,
    ChannelClosed,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
)
from aiormq import spec

from millions.queue import delay_chain
from millions.queue.base import DeadLetter, Delivery, NackResult, QueueError, QueueStats
from millions.queue.config import QueueConfig
from millions.queue.messages import (
    MessageDecodeError,
    check_queue_name,
    checked_publish,
    decode_payload,
    error_text,
    message_id_time,
)
from millions.queue.retry import plan_failure
from millions.queue.urls import parse_queue_url

log = logging.getLogger("millions.queue")

ATTEMPTS = "x-millions-attempts"
MAX_ATTEMPTS = "x-millions-max-attempts"
IDEMPOTENCY_KEY = "x-millions-idempotency-key"
PUBLISHED_AT = "x-millions-published-at"
ERROR = "x-millions-error"
DEAD_AT = "x-millions-dead-at"
#: What the driver raises when the broker or the connection fails (a closed channel is
#: a `RuntimeError` in aiormq).
_DRIVER_ERRORS = (AMQPError, ChannelInvalidStateError, OSError, TimeoutError)
PERSISTENT = 2


@dataclass(frozen=True, slots=True)
class _Envelope:
    """What this engine knows about a message besides its body."""

    message_id: str
    attempts: int
    max_attempts: int | None
    idempotency_key: str
    published_at: float

    def headers(self, **extra: Any) -> dict[str, Any] | None:
        """Only what differs from what `_envelope` assumes when a header is missing (no
        attempts yet, the message id as the idempotency key, the publish time the id
        carries): usually no table at all for the client to encode and decode and the
        broker to store on every message."""
        headers: dict[str, Any] = {}
        published_ms = _to_ms(self.published_at)
        id_time = message_id_time(self.message_id)
        if id_time is None or _to_ms(id_time) != published_ms:
            headers[PUBLISHED_AT] = published_ms
        if self.attempts:
            headers[ATTEMPTS] = self.attempts
        if self.idempotency_key != self.message_id:
            headers[IDEMPOTENCY_KEY] = self.idempotency_key
        if self.max_attempts is not None:
            headers[MAX_ATTEMPTS] = self.max_attempts
        if extra:
            headers.update(extra)
        return headers or None

    def with_attempts(self, attempts: int) -> _Envelope:
        return _Envelope(
            self.message_id, attempts, self.max_attempts, self.idempotency_key, self.published_at
        )


def _int_header(headers: dict[str, Any], key: str, maximum: int = 1_000_000) -> int | None:
    value = headers.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum:
        return value
    return None


def _to_ms(timestamp: float) -> int:
    """Times travel as integer milliseconds: AMQP tables may narrow floats to 32 bits."""
    return round(timestamp * 1000)


def _envelope(
    headers: dict[str, Any] | None, message_id: str | None, stamp: datetime.datetime | None
) -> _Envelope:
    """Read our headers; anything missing or malformed (a foreign publisher) has a default.
    The publish time: our header, else the time a version-7 id carries, else the AMQP
    timestamp, else now."""
    if not message_id:
        message_id = f"amqp-{uuid.uuid4().hex}"
    if not headers:  # the common case: a first delivery of a message we published
        published = message_id_time(message_id)
        if published is None:
            published = stamp.timestamp() if stamp is not None else time.time()
        return _Envelope(message_id, 0, None, message_id, published)
    key = headers.get(IDEMPOTENCY_KEY)
    published_ms = _int_header(headers, PUBLISHED_AT, maximum=1 << 50)
    if published_ms is not None:
        published = published_ms / 1000
    else:
        published = message_id_time(message_id)
        if published is None:
            published = stamp.timestamp() if stamp is not None else time.time()
    max_attempts = _int_header(headers, MAX_ATTEMPTS)
    return _Envelope(
        message_id=message_id,
        attempts=_int_header(headers, ATTEMPTS) or 0,
        max_attempts=max_attempts if max_attempts and max_attempts <= 1000 else None,
        idempotency_key=key if isinstance(key, str) and key else message_id,
        published_at=float(published),
    )


def _incoming_envelope(message: aio_pika.abc.AbstractIncomingMessage) -> _Envelope:
    return _envelope(message.headers, message.message_id, message.timestamp)


def _delivered_envelope(message: aiormq.abc.DeliveredMessage) -> _Envelope:
    properties = message.header.properties
    return _envelope(properties.headers, properties.message_id, properties.timestamp)


def _deliver(message: aiormq.abc.DeliveredMessage) -> spec.Basic.Deliver:
    """A consumer's messages come with `basic.deliver` (aiormq types the field loosely)."""
    return cast(spec.Basic.Deliver, message.delivery)


def _tag(message: aiormq.abc.DeliveredMessage) -> int:
    """The delivery tag (always set on `basic.deliver`)."""
    return cast(int, _deliver(message).delivery_tag)


def plan_acks(
    unanswered: deque[int], answered: set[int], batch: Iterable[int]
) -> tuple[int, int, list[int]]:
    """Which frames acknowledge `batch` (delivery tags of one channel, acked together).

    `unanswered` holds the channel's delivery tags the broker still counts as
    unacknowledged, in delivery order; `answered` those of them whose answer is already
    written or in this batch. A `basic.ack(multiple=True)` with tag T acknowledges every
    unacknowledged tag up to T, so it may only cover a run from the oldest unanswered tag
    in which every tag is answered. Returns (T, how many tags of `batch` the multiple
    covers (0: no multiple), the tags of `batch` to acknowledge singly), and takes the
    covered run off `unanswered`/`answered`. T is always a tag of `batch`: the broker
    refuses a multiple whose own tag it does not hold unacknowledged.
    """
    batch_tags = set(batch)
    answered |= batch_tags
    upto = covered = 0
    while unanswered and unanswered[0] in answered:
        tag = unanswered.popleft()
        answered.discard(tag)
        if tag in batch_tags:
            batch_tags.discard(tag)
            upto = tag
            covered += 1
    return upto, covered, sorted(batch_tags)


@dataclass(eq=False, slots=True)
class _Lease:
    """The receipt of a RabbitMQ delivery: its channel and tag and its client-side lease."""

    consumer: _Consumer
    tag: int
    envelope: _Envelope
    body: bytes
    deadline: float
    settled: bool = False


@dataclass(eq=False)
class _Consumer:
    """One queue's consuming channel, its leases and its acknowledgement batching."""

    channel: aio_pika.abc.AbstractChannel
    underlay: aiormq.abc.AbstractChannel
    queue: str
    max_attempts: int
    visibility_s: float
    buffer: asyncio.Queue[aiormq.abc.DeliveredMessage | None] = field(default_factory=asyncio.Queue)
    tag: str = ""
    #: Unanswered leases, oldest (earliest deadline) first.
    leases: OrderedDict[_Lease, None] = field(default_factory=OrderedDict)
    #: The visibility-timeout timer, armed for the oldest lease's deadline.
    sweep: asyncio.TimerHandle | None = None
    #: Delivery tags the broker counts unacknowledged, in delivery order (see `plan_acks`).
    unanswered: deque[int] = field(default_factory=deque)
    answered: set[int] = field(default_factory=set)
    #: Acks not yet taken by the acker, and the future their batch resolves.
    acks: list[int] = field(default_factory=list)
    flushed: asyncio.Future[bool] | None = None
    #: The task writing this channel's acks (`RabbitQueue._acker`), and its wake-up.
    acker: asyncio.Task[None] | None = None
    ack_ready: asyncio.Event = field(default_factory=asyncio.Event)


class RabbitQueue:
    """A `MessageQueue` on a RabbitMQ broker."""

    def __init__(
        self,
        url: str,
        config: QueueConfig | None = None,
        *,
        prefetch: int = 1,
        connect_timeout_s: float = 5.0,
    ) -> None:
        parsed = parse_queue_url(url)
        if parsed.engine != "rabbitmq":
            raise ValueError(f"not an amqp:// URL: {parsed.redacted()}")
        if prefetch < 1:
            raise ValueError(f"prefetch must be at least 1, got {prefetch}")
        self.url = url
        self.display_url = parsed.redacted()
        self.config = config or QueueConfig()
        self.prefetch = prefetch
        self.connect_timeout_s = connect_timeout_s
        self._connection: aio_pika.abc.AbstractConnection | None = None
        #: The publishing channel's aiormq layer (publishes skip aio-pika's `Message`),
        #: and the aio-pika channel that owns it.
        self._publisher: aiormq.abc.AbstractChannel | None = None
        self._publisher_owner: aio_pika.abc.AbstractChannel | None = None
        self._admin: aio_pika.abc.AbstractChannel | None = None
        self._consumers: dict[str, _Consumer] = {}
        self._declared: set[str] = set()
        self._lock = asyncio.Lock()
        self._declare_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ackers: set[asyncio.Task[None]] = set()
        self._closed = False

    # -- publishing -------------------------------------------------------------------

    async def publish(
        self,
        queue: str,
        payload: Any,
        *,
        delay_s: float = 0.0,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
    ) -> str:
        message = checked_publish(
            queue, payload, delay_s, idempotency_key, max_attempts, self.config.max_message_bytes
        )
        message_id = message.message_id
        published = message_id_time(message_id)
        envelope = _Envelope(
            message_id,
            0,
            max_attempts,
            message.idempotency_key,
            time.time() if published is None else published,
        )
        if self._closed:
            raise QueueError(f"RabbitMQ queue {self.display_url} is closed")
        # The hot path: `_errors` inlined (an async context manager per message costs).
        try:
            try:
                if queue not in self._declared:
                    await self._declare(queue)
                await self._send(queue, message.body, envelope, message.delay_s)
            except _DRIVER_ERRORS as exc:
                raise self._failure(f"publish to {queue}", exc) from exc
        except QueueError:
            self._declared.discard(queue)  # declare again next time (it may have been deleted)
            raise
        return message_id

    async def _send(
        self, queue: str, body: bytes, envelope: _Envelope, delay_s: float, **headers: Any
    ) -> None:
        """Publish one copy (persistent, mandatory: an unroutable copy is an error, not
        silently dropped) and wait for the broker's confirm."""
        channel = self._publisher
        if channel is None or channel.is_closed:
            channel = await self._publisher_channel()
        properties = spec.Basic.Properties(
            delivery_mode=PERSISTENT,
            message_id=envelope.message_id,
            headers=envelope.headers(**headers),
        )
        units = delay_chain.delay_units(delay_s)
        if units == 0:
            exchange, routing_key = "", queue
        else:
            exchange = delay_chain.level_name(queue, delay_chain.entry_level(units))
            routing_key = delay_chain.routing_key(units)
        await channel.basic_publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            properties=properties,
            mandatory=True,
        )

    async def _bury(
        self, queue: str, lease_body: bytes, envelope: _Envelope, attempts: int, error: str
    ) -> None:
        await self._send(
            f"{queue}.dead",
            lease_body,
            envelope.with_attempts(attempts),
            0.0,
            **{ERROR: error_text(error), DEAD_AT: _to_ms(time.time())},
        )

    # -- consuming --------------------------------------------------------------------

    async def receive(
        self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[Delivery]:
        check_queue_name(queue)
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if self._closed:
            raise QueueError(f"RabbitMQ queue {self.display_url} is closed")
        deadline = time.monotonic() + max(wait_s, 0.0)
        deliveries: list[Delivery] = []
        try:  # `_errors` inlined: receive runs about once per message in a busy worker
            consumer = self._consumers.get(queue)
            if consumer is None or consumer.channel.is_closed:
                consumer = await self._consumer(queue)
            while len(deliveries) < max_messages:
                if deliveries or consumer.buffer.qsize():
                    try:
                        message = consumer.buffer.get_nowait()
                    except asyncio.QueueEmpty:
                        break
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    try:  # `timeout`, not `wait_for`: no extra task per wait
                        async with asyncio.timeout(remaining):
                            message = await consumer.buffer.get()
                    except TimeoutError:
                        break
                if message is None:  # the channel closed: its unacked messages went back
                    if self._consumers.get(queue) is consumer:
                        del self._consumers[queue]
                    if deliveries:
                        break
                    consumer = await self._consumer(queue)
                    continue
                delivery = self._lease(consumer, message)
                if delivery is None:
                    try:
                        await self._count_or_bury(consumer, message)
                    except _DRIVER_ERRORS:
                        await self._requeue(consumer, _tag(message))  # not left unanswered
                        raise
                else:
                    deliveries.append(delivery)
        except _DRIVER_ERRORS as exc:
            raise self._failure(f"receive from {queue}", exc) from exc
        return deliveries

    def _lease(self, consumer: _Consumer, message: aiormq.abc.DeliveredMessage) -> Delivery | None:
        """Lease a first delivery of a readable message; None for the others, which
        `_count_or_bury` handles."""
        if _deliver(message).redelivered:
            return None
        body = message.body
        try:
            payload = decode_payload(body)
        except MessageDecodeError:
            return None
        envelope = _delivered_envelope(message)
        loop = asyncio.get_running_loop()
        lease = _Lease(
            consumer,
            _tag(message),
            envelope,
            body,
            loop.time() + consumer.visibility_s,
        )
        consumer.leases[lease] = None
        if consumer.sweep is None:
            consumer.sweep = loop.call_at(lease.deadline, self._sweep, consumer)
        return Delivery(
            queue=consumer.queue,
            message_id=envelope.message_id,
            payload=payload,
            attempt=envelope.attempts + 1,
            max_attempts=envelope.max_attempts or consumer.max_attempts,
            idempotency_key=envelope.idempotency_key,
            published_at=envelope.published_at,
            receipt=lease,
        )

    async def _count_or_bury(
        self, consumer: _Consumer, message: aiormq.abc.DeliveredMessage
    ) -> None:
        """A redelivery is counted as an attempt (a new copy, or a dead letter when they
        are used up); an undecodable message is dead-lettered. Then the original is acked."""
        queue = consumer.queue
        envelope = _delivered_envelope(message)
        body = message.body
        if _deliver(message).redelivered:
            attempts = envelope.attempts + 1
            if attempts >= (envelope.max_attempts or consumer.max_attempts):
                await self._bury(
                    queue,
                    body,
                    envelope,
                    attempts,
                    f"delivered {attempts} times without an acknowledgement "
                    "(the consumer died or exceeded the visibility timeout)",
                )
            else:
                await self._send(queue, body, envelope.with_attempts(attempts), 0.0)
        else:
            try:
                decode_payload(body)
            except MessageDecodeError as exc:
                log.warning(
                    "undecodable message dead-lettered",
                    extra={"queue": queue, "message_id": envelope.message_id},
                )
                await self._bury(
                    queue, body, envelope, envelope.attempts, f"undecodable message: {exc}"
                )
        await self._ack_tag(consumer, _tag(message))

    def _sweep(self, consumer: _Consumer) -> None:
        """The oldest lease's visibility timeout passed: hand back every message whose
        lease ran out, and arm the timer for the next deadline."""
        consumer.sweep = None
        leases = consumer.leases
        loop = asyncio.get_running_loop()
        # Timers may fire a clock tick early; a millisecond's slack avoids re-arming.
        now = loop.time() + 0.001
        while leases:
            lease = next(iter(leases))
            if lease.deadline > now:
                consumer.sweep = loop.call_at(lease.deadline, self._sweep, consumer)
                return
            del leases[lease]
            lease.settled = True
            self._spawn(self._requeue(consumer, lease.tag))

    async def _requeue(self, consumer: _Consumer, tag: int) -> None:
        """Give a delivery back to the broker at once (`basic.nack`, requeue). Its tag
        counts as answered for a later `multiple` ack only once the nack is written."""
        with contextlib.suppress(*_DRIVER_ERRORS):
            await consumer.underlay.basic_nack(tag, requeue=True)
            consumer.answered.add(tag)

    def _spawn(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _settle(self, delivery: Delivery) -> _Lease | None:
        """Take the lease for answering; None when it was already answered or expired."""
        lease = delivery.receipt
        if not isinstance(lease, _Lease):
            raise ValueError("this delivery was not received from a RabbitMQ queue")
        if lease.settled:
            return None
        lease.settled = True
        lease.consumer.leases.pop(lease, None)
        return lease

    def _ack_tag(self, consumer: _Consumer, tag: int) -> asyncio.Future[bool]:
        """Queue an ack for the end of this event-loop pass; the future is True once its
        frame is written, False when the channel is gone (the broker then redelivers)."""
        future = consumer.flushed
        if future is None:
            loop = asyncio.get_running_loop()
            future = consumer.flushed = loop.create_future()
            if consumer.channel.is_closed:
                consumer.flushed = None
                future.set_result(False)
                return future
            consumer.ack_ready.set()  # the acker runs after the rest of this pass
            if consumer.acker is None:
                consumer.acker = loop.create_task(self._acker(consumer))
                self._ackers.add(consumer.acker)
                consumer.acker.add_done_callback(self._ackers.discard)
        consumer.acks.append(tag)
        # Shielded: one caller's cancellation must not cancel the others' flush.
        return asyncio.shield(future)

    @staticmethod
    async def _acker(consumer: _Consumer) -> None:
        """Write a consumer's acks, one batch at a time and in order, so a `multiple`
        never overtakes a single ack (see `plan_acks`). Acks made while a batch is being
        written form the next batch. Ends when the channel closes."""
        ready = consumer.ack_ready
        while True:
            await ready.wait()
            ready.clear()
            future, consumer.flushed = consumer.flushed, None
            tags, consumer.acks = consumer.acks, []
            if future is None:
                if consumer.channel.is_closed:
                    return
                continue
            upto, covered, singles = plan_acks(consumer.unanswered, consumer.answered, tags)
            written = True
            try:
                if upto:
                    await consumer.underlay.basic_ack(upto, multiple=covered > 1)
                for tag in singles:
                    await consumer.underlay.basic_ack(tag)
            except _DRIVER_ERRORS:
                written = False  # the channel is gone; the broker redelivers the messages
            future.set_result(written)

    async def ack(self, delivery: Delivery) -> bool:
        lease = self._settle(delivery)
        if lease is None:
            return False
        return await self._ack_tag(lease.consumer, lease.tag)

    async def nack(self, delivery: Delivery, error: str, *, retry: bool = True) -> NackResult:
        lease = self._settle(delivery)
        if lease is None:
            return "lost"
        plan = plan_failure(
            delivery.attempt,
            delivery.max_attempts,
            retry,
            self.config.backoff_base_s,
            self.config.backoff_cap_s,
            random.random(),
        )
        envelope = lease.envelope.with_attempts(delivery.attempt)
        try:
            if plan.dead_letter:
                await self._bury(delivery.queue, lease.body, envelope, delivery.attempt, error)
            else:
                await self._send(delivery.queue, lease.body, envelope, plan.delay_s)
        except _DRIVER_ERRORS as exc:
            await self._requeue(lease.consumer, lease.tag)
            raise QueueError(f"RabbitMQ {self.display_url}: nack {delivery.queue}: {exc}") from exc
        # If this ack is not written, the original comes back too (at least once).
        await self._ack_tag(lease.consumer, lease.tag)
        return "dead_lettered" if plan.dead_letter else "retried"

    async def release(self, delivery: Delivery) -> bool:
        lease = self._settle(delivery)
        if lease is None:
            return False
        return await self._give_back(lease.consumer, lease.tag, lease.envelope, lease.body)

    async def _give_back(
        self, consumer: _Consumer, tag: int, envelope: _Envelope, body: bytes
    ) -> bool:
        """Return a message without counting an attempt: an unchanged copy, then ack."""
        try:
            await self._send(consumer.queue, body, envelope, 0.0)
        except _DRIVER_ERRORS:
            await self._requeue(consumer, tag)  # counted as an attempt, but not lost
            return False
        await self._ack_tag(consumer, tag)
        return True

    # -- inspection and dead letters -----------------------------------------------------

    async def stats(self, queue: str) -> QueueStats:
        check_queue_name(queue)
        async with self._errors(f"stats of {queue}"):
            ready = await self._depth(queue)
            dead = await self._depth(f"{queue}.dead")
            delayed = 0
            for level in range(delay_chain.LEVELS):
                delayed += await self._depth(delay_chain.level_name(queue, level))
        return QueueStats(
            queue=queue,
            ready=ready,
            in_flight=None,
            delayed=delayed,
            dead=dead,
            oldest_age_s=None,
            publish_rate=None,
            ack_rate=None,
        )

    async def _depth(self, name: str) -> int:
        """Ready messages in `name` (0 when it does not exist)."""
        channel = await self._admin_channel()
        try:
            declared = await channel.declare_queue(name, passive=True)
        except ChannelNotFoundEntity:
            self._admin = None  # the 404 closed the channel
            return 0
        result = declared.declaration_result
        return int(result.message_count or 0)

    async def queue_names(self) -> list[str]:
        return sorted(self._declared)

    async def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        check_queue_name(queue)
        letters: list[DeadLetter] = []
        async with self._errors(f"list dead letters of {queue}"), self._scratch() as channel:
            try:
                dead = await channel.declare_queue(f"{queue}.dead", passive=True)
            except ChannelNotFoundEntity:
                return []
            # Taken without acknowledgement and put back when the channel closes.
            while len(letters) < limit:
                message = await dead.get(no_ack=False, fail=False)
                if message is None:
                    break
                letters.append(_dead_letter(queue, message))
        return letters

    async def redrive(self, queue: str, message_ids: Collection[str] | None = None) -> int:
        check_queue_name(queue)
        wanted = None if message_ids is None else set(message_ids)
        moved = 0
        async with self._errors(f"redrive dead letters of {queue}"), self._scratch() as channel:
            try:
                dead = await channel.declare_queue(f"{queue}.dead", passive=True)
            except ChannelNotFoundEntity:
                return 0
            await self._declare(queue)
            while True:
                message = await dead.get(no_ack=False, fail=False)
                if message is None:
                    break
                envelope = _incoming_envelope(message)
                if wanted is not None and envelope.message_id not in wanted:
                    continue  # left unacknowledged: back in place when the channel closes
                await self._send(queue, bytes(message.body), envelope.with_attempts(0), 0.0)
                await message.ack()
                moved += 1
        return moved

    async def purge_dead_letters(self, queue: str) -> int:
        check_queue_name(queue)
        async with self._errors(f"purge dead letters of {queue}"), self._scratch() as channel:
            try:
                dead = await channel.declare_queue(f"{queue}.dead", passive=True)
            except ChannelNotFoundEntity:
                return 0
            result = await dead.purge()
        return int(result.message_count or 0)

    async def delete_queue(self, queue: str) -> None:
        check_queue_name(queue)
        async with self._errors(f"delete {queue}"):
            consumer = self._consumers.pop(queue, None)
            if consumer is not None:
                await self._stop_consumer(consumer, give_back=False)
            channel = await self._admin_channel()
            names = [delay_chain.level_name(queue, level) for level in range(delay_chain.LEVELS)]
            for name in (queue, f"{queue}.dead", *names):
                await channel.queue_delete(name)
            for name in names:
                await channel.exchange_delete(name)
            self._declared.discard(queue)

    async def close(self) -> None:
        """Messages pushed but never handed out go back uncounted; unanswered deliveries
        return to the queue when the channel closes (their attempt counts)."""
        if self._closed:
            return
        self._closed = True
        for consumer in list(self._consumers.values()):
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._stop_consumer(consumer, give_back=True)
        self._consumers.clear()
        for task in list(self._tasks):
            with contextlib.suppress(Exception):
                await task
        for acker in list(self._ackers):  # those of channels still open: none after stops
            acker.cancel()
            with contextlib.suppress(BaseException):
                await acker
        if self._connection is not None:
            with contextlib.suppress(*_DRIVER_ERRORS):
                await self._connection.close()
        self._connection = None

    # -- connection, channels, topology ---------------------------------------------------

    @contextlib.asynccontextmanager
    async def _errors(self, what: str) -> AsyncIterator[None]:
        if self._closed:
            raise QueueError(f"RabbitMQ queue {self.display_url} is closed")
        try:
            yield
        except _DRIVER_ERRORS as exc:
            raise self._failure(what, exc) from exc

    def _failure(self, what: str, exc: BaseException) -> QueueError:
        """The `QueueError` for a driver error; a closed channel is opened afresh next time."""
        if isinstance(exc, ChannelClosed):
            self._publisher = None
            self._admin = None
        return QueueError(f"RabbitMQ {self.display_url}: {what}: {exc}")

    async def _connected(self) -> aio_pika.abc.AbstractConnection:
        async with self._lock:
            if self._connection is None or self._connection.is_closed:
                self._publisher = self._admin = None
                self._consumers.clear()  # their deliveries died with the connection
                try:
                    self._connection = await aio_pika.connect(
                        self.url, timeout=self.connect_timeout_s
                    )
                except _DRIVER_ERRORS as exc:
                    raise QueueError(
                        f"cannot reach RabbitMQ at {self.display_url}: {exc or type(exc).__name__}"
                    ) from exc
            return self._connection

    async def _publisher_channel(self) -> aiormq.abc.AbstractChannel:
        if self._publisher is None or self._publisher.is_closed:
            connection = await self._connected()
            owner = await connection.channel(publisher_confirms=True, on_return_raises=True)
            self._publisher_owner = owner
            self._publisher = await owner.get_underlay_channel()
        return self._publisher

    async def _admin_channel(self) -> aio_pika.abc.AbstractChannel:
        if self._admin is None or self._admin.is_closed:
            connection = await self._connected()
            self._admin = await connection.channel(publisher_confirms=False)
        return self._admin

    @contextlib.asynccontextmanager
    async def _scratch(self) -> AsyncIterator[aio_pika.abc.AbstractChannel]:
        connection = await self._connected()
        channel = await connection.channel(publisher_confirms=False)
        try:
            yield channel
        finally:
            if not channel.is_closed:
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await channel.close()

    async def _declare(self, queue: str) -> None:
        """Declare `queue`, its dead-letter queue and its delay chain (once per object;
        concurrent first publishes wait for one declaration instead of each making one)."""
        if queue in self._declared:
            return
        async with self._declare_lock:
            if queue not in self._declared:
                await self._declare_topology(queue)

    async def _declare_topology(self, queue: str) -> None:
        channel = await self._admin_channel()
        arguments: dict[str, Any] = {}
        if self.config.rabbitmq_quorum:
            arguments["x-queue-type"] = "quorum"
        try:
            main = await channel.declare_queue(queue, durable=True, arguments=arguments)
            await channel.declare_queue(f"{queue}.dead", durable=True, arguments=arguments)
        except aio_pika.exceptions.ChannelPreconditionFailed as exc:
            self._admin = None
            raise QueueError(
                f"queue {queue!r} exists on RabbitMQ with other settings "
                f"(rabbitmq_quorum = {str(self.config.rabbitmq_quorum).lower()} here): {exc}"
            ) from exc
        exchanges = []
        for level in range(delay_chain.LEVELS):
            name = delay_chain.level_name(queue, level)
            exchange = await channel.declare_exchange(
                name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            if level == 0:
                dead_letter = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": queue}
            else:
                dead_letter = {"x-dead-letter-exchange": delay_chain.level_name(queue, level - 1)}
            level_queue = await channel.declare_queue(
                name,
                durable=True,
                arguments={"x-message-ttl": delay_chain.level_ttl_ms(level), **dead_letter},
            )
            await level_queue.bind(exchange, delay_chain.bit_pattern(level, "1"))
            exchanges.append(exchange)
        await main.bind(exchanges[0], delay_chain.bit_pattern(0, "0"))
        for level in range(1, delay_chain.LEVELS):
            await exchanges[level - 1].bind(exchanges[level], delay_chain.bit_pattern(level, "0"))
        self._declared.add(queue)

    async def _consumer(self, queue: str) -> _Consumer:
        consumer = self._consumers.get(queue)
        if consumer is not None and not consumer.channel.is_closed:
            return consumer
        await self._declare(queue)
        connection = await self._connected()
        channel = await connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.prefetch)
        underlay = await channel.get_underlay_channel()
        consumer = _Consumer(
            channel,
            underlay,
            queue,
            max_attempts=self.config.max_attempts_for(queue),
            visibility_s=self.config.visibility_timeout_for(queue),
        )
        buffer, unanswered = consumer.buffer, consumer.unanswered

        def on_close(*_: Any) -> None:
            buffer.put_nowait(None)
            consumer.ack_ready.set()  # the acker answers what is left (False) and ends

        channel.close_callbacks.add(on_close)

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            unanswered.append(_tag(message))
            buffer.put_nowait(message)

        # On aiormq's channel: no aio-pika `IncomingMessage` and no second task per message.
        consume_ok = await underlay.basic_consume(queue, on_message, no_ack=False)
        consumer.tag = consume_ok.consumer_tag or ""
        self._consumers[queue] = consumer
        return consumer

    async def _stop_consumer(self, consumer: _Consumer, *, give_back: bool) -> None:
        if not consumer.channel.is_closed:
            await consumer.underlay.basic_cancel(consumer.tag)
        if consumer.sweep is not None:
            consumer.sweep.cancel()
            consumer.sweep = None
        for lease in consumer.leases:
            lease.settled = True
        consumer.leases.clear()
        while give_back:
            try:
                message = consumer.buffer.get_nowait()
            except asyncio.QueueEmpty:
                break
            if (
                message is not None
                and not _deliver(message).redelivered
                and not consumer.channel.is_closed
            ):
                tag = _tag(message)
                envelope = _delivered_envelope(message)
                await self._give_back(consumer, tag, envelope, message.body)
        # Acks already made go out before the channel closes (which ends the acker).
        if consumer.flushed is not None:
            await asyncio.shield(consumer.flushed)
        if not consumer.channel.is_closed:
            await consumer.channel.close()


def _dead_letter(queue: str, message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    envelope = _incoming_envelope(message)
    headers = dict(message.headers or {})
    error = headers.get(ERROR)
    dead_at_ms = _int_header(headers, DEAD_AT, maximum=1 << 50)
    return DeadLetter(
        queue=queue,
        message_id=envelope.message_id,
        body=bytes(message.body),
        attempts=envelope.attempts,
        error=error if isinstance(error, str) else "",
        idempotency_key=envelope.idempotency_key,
        published_at=envelope.published_at,
        dead_at=envelope.published_at if dead_at_ms is None else dead_at_ms / 1000,
    )
