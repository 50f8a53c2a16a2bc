"""One consumer process of the queue benchmark (started by bench.py, not by hand).

    python bench/queue/consumers.py SYSTEM --queue Q --messages N --prefetch C --out DIR
        (--path FILE | --url AMQP_URL)

SYSTEM is `sqlite` or `rabbitmq` (a `millions.workers.Worker` with concurrency C on the
millions engine) or `aio-pika` (a plain `queue.iterator()` loop, prefetch C). The handler
is a no-op that records the latency; the message is acknowledged after it returns. The
process exits once both phases (see phases.py) are acknowledged in full.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aio_pika
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from phases import PhaseClock

from millions.queue import Delivery, MessageQueue, NackResult, QueueConfig
from millions.queue.rabbitmq import RabbitQueue
from millions.queue.sqlite import SqliteQueue
from millions.workers.main import handler_timeout
from millions.workers.registry import TaskRegistry
from millions.workers.worker import Worker


class AckClock:
    """The engine under test, with every successful ack reported to the phase clock."""

    def __init__(self, queue: MessageQueue, clock: PhaseClock, done: asyncio.Event) -> None:
        self.queue = queue
        self.clock = clock
        self.done = done

    async def receive(
        self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[Delivery]:
        return await self.queue.receive(queue, max_messages=max_messages, wait_s=wait_s)

    async def ack(self, delivery: Delivery) -> bool:
        acked = await self.queue.ack(delivery)
        if acked:
            self.clock.acked_one(delivery.payload)
            if self.clock.finished:
                self.done.set()
        return acked

    async def nack(self, delivery: Delivery, error: str, *, retry: bool = True) -> NackResult:
        return await self.queue.nack(delivery, error, retry=retry)

    async def release(self, delivery: Delivery) -> bool:
        return await self.queue.release(delivery)


async def run_worker(args: argparse.Namespace, clock: PhaseClock) -> None:
    engine: MessageQueue
    config = QueueConfig()
    if args.system == "sqlite":
        engine = SqliteQueue(args.path, config)
    else:
        engine = RabbitQueue(args.url, config, prefetch=args.prefetch)
    done = asyncio.Event()
    tasks = TaskRegistry()

    @tasks.task(args.queue)
    async def noop(delivery: Delivery) -> None:
        clock.started(delivery.payload)

    worker = Worker(
        AckClock(engine, clock, done),  # type: ignore[arg-type]
        tasks,
        concurrency=args.prefetch,
        grace_s=10.0,
        timeout_for={args.queue: handler_timeout(config, args.queue)},  # as `millions worker`
    )
    try:
        await worker.run(done)
    finally:
        await engine.close()


async def run_aio_pika(args: argparse.Namespace, clock: PhaseClock) -> None:
    connection = await aio_pika.connect(args.url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=args.prefetch)
        queue = await channel.declare_queue(args.queue, durable=True)
        async with queue.iterator() as messages:
            async for message in messages:
                body: dict[str, Any] = json.loads(message.body)
                clock.started(body)  # the no-op handler
                await message.ack()
                clock.acked_one(body)
                if clock.finished:
                    break


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("system", choices=["sqlite", "rabbitmq", "aio-pika"])
    parser.add_argument("--queue", required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--prefetch", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--path", type=Path)
    parser.add_argument("--url")
    args = parser.parse_args()
    clock = PhaseClock(args.messages, args.out)
    run = run_aio_pika if args.system == "aio-pika" else run_worker
    uvloop.run(run(args, clock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
