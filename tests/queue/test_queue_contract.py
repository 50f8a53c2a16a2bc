"""The MessageQueue contract, run against every engine (sqlite, rabbitmq)."""

from __future__ import annotations

import asyncio
import time

import pytest
from queue_support import Engine, receive_all, receive_one, wait_until

from millions.queue.base import Delivery
from millions.queue.config import QueueOverride
from millions.queue.messages import (
    MAX_DELAY_S,
    MessageError,
    MessageTooLargeError,
    UnserializableMessageError,
)

pytestmark = pytest.mark.timeout(30)

PAYLOAD = {
    "photo_id": 7,
    "name": 'Zoë \u2603 "quoted" \\ back',
    "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
}


async def test_publish_then_receive_returns_the_payload_once(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    message_id = await queue.publish(name, PAYLOAD)
    delivery = await receive_one(queue, name)
    assert delivery.message_id == message_id
    assert delivery.payload == PAYLOAD
    assert (delivery.attempt, delivery.max_attempts) == (1, 3)
    assert delivery.idempotency_key == message_id
    assert abs(delivery.published_at - time.time()) < 5
    assert await queue.ack(delivery)
    assert await queue.receive(name, wait_s=0.3) == []


async def test_receive_on_an_empty_queue_waits_then_returns_nothing(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    started = time.monotonic()
    assert await queue.receive(name, max_messages=5, wait_s=0.3) == []
    assert time.monotonic() - started >= 0.29


async def test_every_published_message_is_delivered(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    ids = await asyncio.gather(*(queue.publish(name, {"n": n}) for n in range(40)))
    assert len(set(ids)) == 40
    deliveries = await receive_all(queue, name, 40)
    assert sorted(d.payload["n"] for d in deliveries) == list(range(40))
    assert {d.message_id for d in deliveries} == set(ids)


async def test_a_leased_message_is_hidden_from_other_consumers(engine: Engine) -> None:
    first, second, name = engine.open(), engine.open(), engine.new_queue_name()
    await first.publish(name, {"only": True})
    delivery = await receive_one(first, name)
    assert await second.receive(name, wait_s=0.4) == []
    assert await first.ack(delivery)
    assert await second.receive(name, wait_s=0.2) == []


async def test_unacknowledged_message_comes_back_after_the_visibility_timeout(
    engine: Engine,
) -> None:
    name = engine.new_queue_name()
    queue = engine.open(engine.config(queues={name: QueueOverride(visibility_timeout_s=0.5)}))
    await queue.publish(name, {"job": 1})
    first = await receive_one(queue, name)
    leased_at = time.monotonic()
    again = await receive_one(queue, name, timeout_s=5)
    assert time.monotonic() - leased_at >= 0.45
    assert again.message_id == first.message_id
    assert again.attempt == 2
    assert not await queue.ack(first), "an answer after the lease expired must not count"
    assert await queue.nack(first, "late") == "lost"
    assert await queue.ack(again)
    assert await queue.receive(name, wait_s=0.7) == []


async def test_the_idempotency_key_stays_the_same_on_every_delivery(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    message_id = await queue.publish(name, {"order": 1}, idempotency_key="order-1-confirmation")
    keys = []
    for _ in range(3):
        delivery = await receive_one(queue, name)
        keys.append((delivery.message_id, delivery.idempotency_key))
        if delivery.attempt < 3:
            assert await queue.nack(delivery, "try again") == "retried"
        else:
            assert await queue.ack(delivery)
    assert keys == [(message_id, "order-1-confirmation")] * 3


async def test_failures_back_off_then_dead_letter_after_max_attempts(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    message_id = await queue.publish(name, {"always": "fails"})
    results, attempts = [], []
    failed_at = 0.0
    for attempt in range(1, 4):
        delivery = await receive_one(queue, name)
        if attempt > 1:
            # equal jitter: the first retry waits at least half of base (0.1 s) ...
            minimum = min(0.2, 0.1 * 2 ** (attempt - 2)) / 2
            assert time.monotonic() - failed_at >= minimum - 0.01
        attempts.append(delivery.attempt)
        failed_at = time.monotonic()
        results.append(await queue.nack(delivery, f"boom {attempt}"))
    assert attempts == [1, 2, 3]
    assert results == ["retried", "retried", "dead_lettered"]
    assert await queue.receive(name, wait_s=0.5) == []
    [letter] = await queue.dead_letters(name)
    assert letter.message_id == message_id
    assert letter.error == "boom 3"
    assert letter.attempts == 3
    assert letter.body == b'{"always":"fails"}'
    stats = await engine.open().stats(name)
    assert (stats.ready, stats.dead) == (0, 1)


async def test_a_retry_is_not_delivered_before_its_backoff(engine: Engine) -> None:
    name = engine.new_queue_name()
    queue = engine.open(engine.config(backoff_base_s=1.0, backoff_cap_s=1.0))
    await queue.publish(name, {"n": 1})
    delivery = await receive_one(queue, name)
    nacked_at = time.monotonic()  # before the call: the backoff starts inside it
    assert await queue.nack(delivery, "boom") == "retried"
    assert await queue.receive(name, wait_s=0.3) == []
    again = await receive_one(queue, name, timeout_s=5)
    assert time.monotonic() - nacked_at >= 0.5  # equal jitter: at least half of 1 s
    assert again.attempt == 2
    assert await queue.ack(again)


async def test_a_permanent_failure_is_dead_lettered_at_once(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    await queue.publish(name, {"bad": "input"})
    delivery = await receive_one(queue, name)
    assert await queue.nack(delivery, "ValueError: bad input", retry=False) == "dead_lettered"
    [letter] = await queue.dead_letters(name)
    assert (letter.attempts, letter.error) == (1, "ValueError: bad input")


async def test_max_attempts_per_message_and_per_queue(engine: Engine) -> None:
    name, other = engine.new_queue_name(), engine.new_queue_name()
    queue = engine.open(engine.config(queues={other: QueueOverride(max_attempts=1)}))
    await queue.publish(name, {"once": True}, max_attempts=1)
    await queue.publish(other, {"queue": "limit"})
    await queue.publish(name, {"default": True})
    once = await receive_one(queue, name)
    assert once.payload == {"once": True} and once.max_attempts == 1
    assert await queue.nack(once, "boom") == "dead_lettered"
    limited = await receive_one(queue, other)
    assert limited.max_attempts == 1
    assert await queue.nack(limited, "boom") == "dead_lettered"
    default = await receive_one(queue, name)
    assert default.max_attempts == 3
    assert await queue.nack(default, "boom") == "retried"


async def test_release_gives_a_message_back_without_counting_the_attempt(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    await queue.publish(name, {"n": 1})
    delivery = await receive_one(queue, name)
    assert await queue.release(delivery)
    assert not await queue.release(delivery)
    again = await receive_one(queue, name, timeout_s=2)
    assert (again.message_id, again.attempt) == (delivery.message_id, 1)
    assert await queue.ack(again)


async def test_a_message_never_answered_ends_in_the_dead_letter_queue(engine: Engine) -> None:
    """A message whose consumer dies every time (poison) must not loop forever."""
    name = engine.new_queue_name()
    queue = engine.open(
        engine.config(max_attempts=2, queues={name: QueueOverride(visibility_timeout_s=0.3)})
    )
    message_id = await queue.publish(name, {"kills": "its consumer"})
    attempts = []

    async def dead_lettered() -> bool:
        for delivery in await queue.receive(name, wait_s=0.2):
            attempts.append(delivery.attempt)  # and never answered
        return len(await queue.dead_letters(name)) == 1

    await wait_until(dead_lettered, 10, "the message to be dead-lettered")
    assert attempts == [1, 2]
    [letter] = await queue.dead_letters(name)
    assert letter.message_id == message_id
    assert "without an acknowledgement" in letter.error
    assert letter.attempts == 2


async def test_a_delayed_message_is_not_delivered_before_its_time(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    published = time.monotonic()
    await queue.publish(name, {"later": True}, delay_s=0.8)
    await queue.publish(name, {"now": True})
    first = await receive_one(queue, name)
    assert first.payload == {"now": True}
    assert await queue.ack(first)
    stats = await engine.open().stats(name)
    assert (stats.ready, stats.delayed) == (0, 1)
    later = await receive_one(queue, name, timeout_s=5)
    assert time.monotonic() - published >= 0.8
    assert later.payload == {"later": True}
    assert await queue.ack(later)


async def test_an_oversized_message_is_refused_naming_the_limit(engine: Engine) -> None:
    name = engine.new_queue_name()
    queue = engine.open(engine.config(max_message_bytes=1024))
    exactly = "x" * 1022  # 1024 bytes with its quotes
    await queue.publish(name, exactly)
    with pytest.raises(MessageTooLargeError) as caught:
        await queue.publish(name, exactly + "x")
    assert "1025 bytes" in str(caught.value) and "1024-byte limit" in str(caught.value)
    assert caught.value.limit == 1024
    with pytest.raises(MessageTooLargeError):
        await queue.publish(name, {"text": "é" * 600})  # 2 bytes each in UTF-8
    [delivery] = await receive_all(queue, name, 1)
    assert delivery.payload == exactly


def _cycle() -> list[object]:
    cycle: list[object] = []
    cycle.append(cycle)
    return cycle


@pytest.mark.parametrize(
    "payload",
    [{1, 2}, b"bytes", float("nan"), {"when": object()}, _cycle()],
    ids=["set", "bytes", "nan", "object", "cycle"],
)
async def test_an_unserializable_message_is_refused(engine: Engine, payload: object) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    with pytest.raises(UnserializableMessageError, match="must be JSON"):
        await queue.publish(name, payload)
    assert isinstance(UnserializableMessageError("x"), MessageError)
    stats = await queue.stats(name)
    assert stats.ready == 0


async def test_bad_arguments_are_refused_before_anything_is_stored(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    for bad_name in ("", "has space", "ünïcode", "-leading", "x.dead", "a.delay.01"):
        with pytest.raises(ValueError, match="queue name"):
            await queue.publish(bad_name, {})
    for delay in (-1, MAX_DELAY_S + 1, float("nan")):
        with pytest.raises(ValueError, match="delay_s"):
            await queue.publish(name, {}, delay_s=delay)
    with pytest.raises(ValueError, match="idempotency_key"):
        await queue.publish(name, {}, idempotency_key="")
    with pytest.raises(ValueError, match="max_attempts"):
        await queue.publish(name, {}, max_attempts=0)
    with pytest.raises(ValueError, match="max_messages"):
        await queue.receive(name, max_messages=0)
    assert (await queue.stats(name)).ready == 0


async def test_undecodable_stored_bytes_are_dead_lettered_and_skipped(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    await queue.publish(name, {"first": True})
    bad_bodies = [b"\xff\xfe not utf-8", b"{not json", b"", b"[" * 100_000]
    for body in bad_bodies:
        await engine.inject_raw(name, body)
    await queue.publish(name, {"last": True})
    delivered = await receive_all(queue, name, 2)
    assert [d.payload for d in delivered] == [{"first": True}, {"last": True}]
    letters = await queue.dead_letters(name)
    assert sorted(letter.body for letter in letters) == sorted(bad_bodies)
    assert all(letter.error.startswith("undecodable message:") for letter in letters)


async def test_dead_letters_are_listed_redriven_by_id_and_purged(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    ids = [await queue.publish(name, {"n": n}) for n in range(3)]
    for _ in ids:
        delivery = await receive_one(queue, name)
        assert await queue.nack(delivery, f"failed {delivery.payload['n']}", retry=False)
    letters = await queue.dead_letters(name)
    assert sorted(letter.message_id for letter in letters) == sorted(ids)
    assert len(await queue.dead_letters(name, limit=2)) == 2
    assert len(await queue.dead_letters(name)) == 3, "listing must not remove anything"

    assert await queue.redrive(name, [ids[1], "not-an-id"]) == 1
    again = await receive_one(queue, name)
    assert (again.message_id, again.payload, again.attempt) == (ids[1], {"n": 1}, 1)
    assert await queue.ack(again)
    assert sorted(letter.message_id for letter in await queue.dead_letters(name)) == sorted(
        [ids[0], ids[2]]
    )
    assert await queue.purge_dead_letters(name) == 2
    assert await queue.dead_letters(name) == []
    assert (await queue.stats(name)).dead == 0


async def test_redrive_all_delivers_every_dead_letter_again(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    for n in range(3):
        await queue.publish(name, {"n": n}, idempotency_key=f"key-{n}")
    for _ in range(3):
        assert await queue.nack(await receive_one(queue, name), "x", retry=False)
    assert await queue.redrive(name) == 3
    redriven = await receive_all(queue, name, 3)
    assert sorted((d.idempotency_key, d.attempt) for d in redriven) == [
        ("key-0", 1),
        ("key-1", 1),
        ("key-2", 1),
    ]


async def test_stats_count_ready_delayed_and_dead(engine: Engine) -> None:
    consumer, name = engine.open(), engine.new_queue_name()
    await consumer.publish(name, {"dies": True})
    assert await consumer.nack(await receive_one(consumer, name), "x", retry=False)
    # A RabbitMQ consumer holds up to `prefetch` pushed messages that no longer count
    # as ready; with none running, the broker's count is exact.
    await consumer.close()
    queue = engine.open()
    for n in range(2):
        await queue.publish(name, {"ready": n})
    await queue.publish(name, {"delayed": True}, delay_s=30)
    stats = await queue.stats(name)
    assert (stats.queue, stats.ready, stats.delayed, stats.dead) == (name, 2, 1, 1)
    assert stats.in_flight in (0, None)
    if stats.oldest_age_s is not None:
        assert 0 <= stats.oldest_age_s < 10
    assert set(stats.to_dict()) >= {"ready", "in_flight", "delayed", "dead", "oldest_age_s"}
    assert name in await queue.queue_names()


async def test_stats_of_an_unknown_queue_are_zero(engine: Engine) -> None:
    stats = await engine.open().stats(engine.new_queue_name())
    assert (stats.ready, stats.dead) == (0, 0)
    assert stats.delayed in (0, None) and stats.in_flight in (0, None)
    assert stats.oldest_age_s in (0.0, None)


async def test_delete_queue_removes_messages_and_dead_letters(engine: Engine) -> None:
    queue, name = engine.open(), engine.new_queue_name()
    await queue.publish(name, {"dead": True})
    assert await queue.nack(await receive_one(queue, name), "x", retry=False)
    await queue.publish(name, {"ready": True})
    await queue.publish(name, {"delayed": True}, delay_s=60)
    await queue.delete_queue(name)
    stats = await engine.open().stats(name)
    assert (stats.ready, stats.dead) == (0, 0)
    assert stats.delayed in (0, None)
    assert await queue.receive(name, wait_s=0.2) == []


async def test_closing_a_consumer_returns_its_unanswered_deliveries(engine: Engine) -> None:
    name = engine.new_queue_name()
    config = engine.config(visibility_timeout_s=30)
    consumer = engine.open(config)
    await consumer.publish(name, {"held": True})
    held = await receive_one(consumer, name)
    await consumer.close()
    other = engine.open(config)
    started = time.monotonic()
    again: Delivery = await receive_one(other, name, timeout_s=5)
    assert time.monotonic() - started < 5, "well before the 30 s visibility timeout"
    assert (again.message_id, again.attempt) == (held.message_id, 2)
    assert await other.ack(again)


async def test_a_delivery_from_another_engine_is_refused(engine: Engine) -> None:
    queue = engine.open()
    foreign = Delivery("q", "id", {}, 1, 3, "id", 0.0, receipt=object())
    with pytest.raises(ValueError, match="not received from"):
        await queue.ack(foreign)
