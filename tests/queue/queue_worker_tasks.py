"""Task handlers run by worker subprocesses in the tests (`queue_worker_tasks:tasks`).

The queue name comes from MILLIONS_TEST_QUEUE (RabbitMQ tests need unique names); every
handler appends `start|done <message id> <attempt>` lines to MILLIONS_TEST_EVENTS with
O_APPEND writes, which survive the process being killed. What a handler does is chosen
by its payload's "mode":

* "quick": nothing;
* "hang_first": on attempt 1 wait forever (until the process is killed or stopped);
* "slow": sleep payload["seconds"] (a long-running task).
"""

from __future__ import annotations

import asyncio
import os

from millions.queue.base import Delivery
from millions.workers.registry import TaskRegistry

QUEUE = os.environ.get("MILLIONS_TEST_QUEUE", "work")
EVENTS = os.environ.get("MILLIONS_TEST_EVENTS", os.devnull)

tasks = TaskRegistry()


def record(event: str, delivery: Delivery) -> None:
    line = f"{event} {delivery.message_id} {delivery.attempt}\n".encode()
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@tasks.task(QUEUE)
async def work(delivery: Delivery) -> None:
    record("start", delivery)
    mode = delivery.payload.get("mode")
    if mode == "hang_first" and delivery.attempt == 1:
        await asyncio.Event().wait()
    elif mode == "slow":
        await asyncio.sleep(float(delivery.payload["seconds"]))
    record("done", delivery)
