"""What only the RabbitMQ engine does: quorum queues, connection errors, foreign messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from queue_support import RABBITMQ_URL, TEST_CONFIG, receive_one, require_service

from millions.queue.base import QueueError
from millions.queue.config import QueueConfig
from millions.queue.rabbitmq import RabbitQueue

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
async def names() -> AsyncIterator[list[str]]:
    require_service("rabbitmq")
    created: list[str] = []
    yield created
    admin = RabbitQueue(RABBITMQ_URL)
    try:
        for name in created:
            await admin.delete_queue(name)
    finally:
        await admin.close()


def _name(names: list[str]) -> str:
    names.append(f"test-{uuid.uuid4().hex[:12]}")
    return names[-1]


async def test_quorum_queues_keep_the_same_semantics(names: list[str]) -> None:
    name = _name(names)
    queue = RabbitQueue(RABBITMQ_URL, QueueConfig(**TEST_CONFIG, rabbitmq_quorum=True))
    try:
        message_id = await queue.publish(name, {"n": 1})
        first = await receive_one(queue, name)
        assert await queue.nack(first, "boom") == "retried"
        second = await receive_one(queue, name)
        assert (second.message_id, second.attempt) == (message_id, 2)
        assert await queue.nack(second, "fatal", retry=False) == "dead_lettered"
        assert (await queue.stats(name)).dead == 1
        assert await queue.redrive(name) == 1
        third = await receive_one(queue, name)
        assert (third.message_id, third.attempt) == (message_id, 1)
        assert await queue.ack(third)
    finally:
        await queue.close()
    # The same name declared as a classic queue conflicts; the error says why.
    classic = RabbitQueue(RABBITMQ_URL, QueueConfig(**TEST_CONFIG))
    try:
        with pytest.raises(QueueError, match="other settings"):
            await classic.publish(name, {})
    finally:
        await classic.close()


async def test_a_foreign_message_without_our_headers_is_delivered(names: list[str]) -> None:
    name = _name(names)
    queue = RabbitQueue(RABBITMQ_URL, QueueConfig(**TEST_CONFIG))
    try:
        await queue.publish(name, {"declare": True})
        assert await queue.ack(await receive_one(queue, name))
        connection = await aio_pika.connect(RABBITMQ_URL)
        channel = await connection.channel()
        await channel.default_exchange.publish(
            aio_pika.Message(b'{"from": "elsewhere"}', headers={"x-millions-attempts": "junk"}),
            routing_key=name,
        )
        await connection.close()
        delivery = await receive_one(queue, name)
        assert delivery.payload == {"from": "elsewhere"}
        assert delivery.attempt == 1
        assert delivery.message_id  # aio-pika gives every message an id
        assert delivery.idempotency_key == delivery.message_id
        assert await queue.ack(delivery)
    finally:
        await queue.close()


async def test_a_queue_deleted_behind_our_back_is_declared_again(names: list[str]) -> None:
    name = _name(names)
    queue = RabbitQueue(RABBITMQ_URL, QueueConfig(**TEST_CONFIG))
    other = RabbitQueue(RABBITMQ_URL)
    try:
        await queue.publish(name, {"n": 1})
        await other.delete_queue(name)
        with pytest.raises(QueueError, match="publish to"):
            await queue.publish(name, {"n": 2})  # unroutable: refused, not silently lost
        await queue.publish(name, {"n": 3})
        delivery = await receive_one(queue, name)
        assert delivery.payload == {"n": 3}
        assert await queue.ack(delivery)
    finally:
        await queue.close()
        await other.close()


async def test_an_unreachable_broker_is_a_queue_error() -> None:
    queue = RabbitQueue("amqp://guest:secret@127.0.0.1:1/", connect_timeout_s=2)
    with pytest.raises(QueueError, match="cannot reach RabbitMQ") as caught:
        await queue.publish("photos", {})
    assert "secret" not in str(caught.value), "the password must not leak into errors"
    with pytest.raises(QueueError):
        await queue.stats("photos")
    await queue.close()


def test_a_non_amqp_url_is_refused() -> None:
    with pytest.raises(ValueError, match="amqp"):
        RabbitQueue("sqlite:///tmp/q.db")
    with pytest.raises(ValueError, match="prefetch"):
        RabbitQueue(RABBITMQ_URL, prefetch=0)
