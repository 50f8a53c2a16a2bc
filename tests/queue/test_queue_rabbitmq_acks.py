"""The RabbitMQ engine's batched acknowledgements and its visibility-timeout sweep.

`plan_acks` is checked on its own; the rest runs against the broker, with aiormq's
`basic_ack` recorded to see which frames went out.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections import deque
from collections.abc import AsyncIterator

import aio_pika
import aiormq
import pytest
from queue_support import RABBITMQ_URL, TEST_CONFIG, require_service, wait_until

from millions.queue.base import Delivery
from millions.queue.config import QueueConfig, QueueOverride
from millions.queue.messages import message_id_time, new_message_id
from millions.queue.rabbitmq import RabbitQueue, plan_acks

pytestmark = pytest.mark.timeout(30)


# -- plan_acks --------------------------------------------------------------------------


def test_a_contiguous_run_is_one_multiple_ack() -> None:
    unanswered, answered = deque([1, 2, 3, 4]), set[int]()
    assert plan_acks(unanswered, answered, [3, 1, 2, 4]) == (4, 4, [])
    assert not unanswered and not answered


def test_a_gap_falls_back_to_single_acks_above_it() -> None:
    unanswered, answered = deque([1, 2, 3, 4, 5]), set[int]()
    # 3 is still being handled: a multiple up to 4 or 5 would acknowledge it too.
    assert plan_acks(unanswered, answered, [1, 2, 4, 5]) == (2, 2, [4, 5])
    assert list(unanswered) == [3, 4, 5] and answered == {4, 5}
    # Once 3 is acked, the run from 3 up has no gap: 3 is covered, 4 and 5 were sent.
    assert plan_acks(unanswered, answered, [3]) == (3, 1, [])
    assert not unanswered and not answered


def test_nothing_below_an_unanswered_head_is_covered() -> None:
    unanswered, answered = deque([7, 8, 9]), set[int]()
    assert plan_acks(unanswered, answered, [8, 9]) == (0, 0, [8, 9])
    assert list(unanswered) == [7, 8, 9]


def test_a_run_may_pass_over_tags_answered_otherwise_but_ends_on_a_batch_tag() -> None:
    # 2 was requeued (its nack written) and 4 too: the run 1..4 is answered, but the
    # broker holds 4 no longer, so the multiple ends at 3, the last tag of this batch.
    unanswered, answered = deque([1, 2, 3, 4, 5]), {2, 4}
    assert plan_acks(unanswered, answered, [1, 3]) == (3, 2, [])
    assert list(unanswered) == [5] and not answered


# -- message ids carry the publish time -------------------------------------------------


def test_message_ids_are_version_7_uuids_holding_the_publish_time() -> None:
    message_id = new_message_id(1_700_000_000_123)
    parsed = uuid.UUID(message_id)
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert message_id_time(message_id) == 1_700_000_000.123
    assert message_id_time(uuid.uuid4().hex) is None
    assert message_id_time("not-an-id") is None
    assert len({new_message_id(5) for _ in range(1000)}) == 1000


# -- against the broker -----------------------------------------------------------------


@pytest.fixture
async def name() -> AsyncIterator[str]:
    require_service("rabbitmq")
    queue_name = f"test-{uuid.uuid4().hex[:12]}"
    yield queue_name
    admin = RabbitQueue(RABBITMQ_URL)
    try:
        await admin.delete_queue(queue_name)
    finally:
        await admin.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Every `basic.ack` frame written: (delivery tag, multiple)."""
    frames: list[tuple[int, bool]] = []
    original = aiormq.Channel.basic_ack

    async def basic_ack(
        self: aiormq.Channel, delivery_tag: int, multiple: bool = False, wait: bool = True
    ) -> None:
        frames.append((delivery_tag, multiple))
        await original(self, delivery_tag, multiple=multiple, wait=wait)

    monkeypatch.setattr(aiormq.Channel, "basic_ack", basic_ack)
    return frames


async def _leased(queue: RabbitQueue, name: str, count: int) -> list[Delivery]:
    for n in range(count):
        await queue.publish(name, {"n": n})
    got: list[Delivery] = []
    while len(got) < count:
        got += await queue.receive(name, max_messages=count - len(got), wait_s=5)
    assert [delivery.payload["n"] for delivery in got] == list(range(count))
    return got


async def _ready(name: str) -> int:
    admin = RabbitQueue(RABBITMQ_URL)
    try:
        return (await admin.stats(name)).ready
    finally:
        await admin.close()


async def test_acks_of_one_pass_go_out_as_one_multiple_ack(
    name: str, sent: list[tuple[int, bool]]
) -> None:
    queue = RabbitQueue(RABBITMQ_URL, QueueConfig(**TEST_CONFIG), prefetch=10)
    try:
        deliveries = await _leased(queue, name, 5)
        assert await asyncio.gather(*(queue.ack(d) for d in deliveries)) == [True] * 5
        assert sent == [(5, True)]
        assert not await queue.ack(deliveries[0]), "a second answer does not count"
    finally:
        await queue.close()
    assert await _ready(name) == 0, "all five acknowledged: nothing goes back on close"


async def test_a_gap_falls_back_to_single_acks(name: str, sent: list[tuple[int, bool]]) -> None:
    queue = RabbitQueue(RABBITMQ_URL, QueueConfig(**TEST_CONFIG), prefetch=10)
    try:
        first, second, third, fourth = await _leased(queue, name, 4)
        acked = await asyncio.gather(queue.ack(first), queue.ack(third), queue.ack(fourth))
        assert acked == [True, True, True]
        assert sent == [(1, False), (3, False), (4, False)]
        assert await queue.ack(second)
        assert sent[3:] == [(2, False)]
    finally:
        await queue.close()
    assert await _ready(name) == 0


async def test_an_expired_lease_goes_back_and_no_multiple_ack_covers_it(
    name: str, sent: list[tuple[int, bool]]
) -> None:
    config = QueueConfig(**TEST_CONFIG, queues={name: QueueOverride(visibility_timeout_s=0.5)})
    queue = RabbitQueue(RABBITMQ_URL, config, prefetch=10)
    try:
        first, second, third = await _leased(queue, name, 3)
        assert await asyncio.gather(queue.ack(first), queue.ack(third)) == [True, True]
        # The second's lease runs out: the sweep requeues it and it comes back counted.
        again = await queue.receive(name, wait_s=5)
        assert [(d.message_id, d.attempt) for d in again] == [(second.message_id, 2)]
        assert not await queue.ack(second), "its lease is gone"
        assert await queue.ack(again[0])
        assert all(tag != 2 for tag, _ in sent), "tag 2 was requeued, never acknowledged"
    finally:
        await queue.close()
    assert await _ready(name) == 0


CRASHING_CONSUMER = """
import asyncio, json, os, sys
from millions.queue.config import QueueConfig
from millions.queue.rabbitmq import RabbitQueue

async def main(url, name, count):
    queue = RabbitQueue(url, QueueConfig(), prefetch=count)
    got = []
    while len(got) < count:
        got += await queue.receive(name, max_messages=count - len(got), wait_s=5)
    acked = await asyncio.gather(*(queue.ack(delivery) for delivery in got))
    print(json.dumps(acked), flush=True)
    os._exit(0)  # dies without closing anything

asyncio.run(main(*json.loads(sys.argv[1])))
"""


async def test_a_consumer_that_dies_right_after_ack_returned_gets_nothing_redelivered(
    name: str,
) -> None:
    queue = RabbitQueue(RABBITMQ_URL, QueueConfig(**TEST_CONFIG))
    try:
        for n in range(20):
            await queue.publish(name, {"n": n})
        args = json.dumps([RABBITMQ_URL, name, 20])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-c", CRASHING_CONSUMER, args],
            capture_output=True,
            text=True,
            timeout=20,
            env=env,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == [True] * 20

        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()

            async def consumer_gone() -> bool:
                declared = await channel.declare_queue(name, passive=True)
                return declared.declaration_result.consumer_count == 0

            # Once the broker dropped the dead consumer, anything unacknowledged is ready
            # again.
            await wait_until(consumer_gone, 10, "the broker to drop the dead consumer")
        finally:
            await connection.close()
        assert (await queue.stats(name)).ready == 0
        assert await queue.receive(name, wait_s=0.5) == []
    finally:
        await queue.close()
