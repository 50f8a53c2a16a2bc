"""The worker loop in-process on the SQLite engine: outcomes, metrics, the concurrency
limit, handler timeouts, health, and the forced stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from queue_support import TEST_CONFIG, receive_one, wait_until
from worker_process_support import free_port

from millions.queue.base import Delivery
from millions.queue.config import QueueConfig
from millions.queue.sqlite import SqliteQueue
from millions.workers.main import handler_timeout, health_reporter, stats_refresher
from millions.workers.metrics import MetricsServer, WorkerMetrics, check_loopback
from millions.workers.registry import PermanentFailure, TaskRegistry
from millions.workers.worker import Worker

pytestmark = pytest.mark.timeout(30)

METRICS_HOST = "127.0.110.1"


@pytest.fixture
async def queue(tmp_path: Path) -> AsyncIterator[SqliteQueue]:
    config = QueueConfig(**{**TEST_CONFIG, "max_attempts": 2, "backoff_base_s": 0.05})
    queue = SqliteQueue(tmp_path / "queue.sqlite3", config, poll_interval_s=0.02)
    yield queue
    await queue.close()


class Running:
    """A worker running in the background of a test, stopped at the end."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.task = asyncio.create_task(worker.run(self.stop, self.force))

    async def finish(self, timeout_s: float = 10.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout_s)


def sample(metrics_text: str, name: str, labels: str = "") -> float:
    """The value of one sample in Prometheus text format."""
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in metrics_text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{wanted} not in metrics")


async def test_outcomes_are_acked_retried_dead_lettered_and_measured(queue: SqliteQueue) -> None:
    tasks = TaskRegistry()
    calls: dict[str, int] = {}

    def count(delivery: Delivery) -> None:
        calls[delivery.queue] = calls.get(delivery.queue, 0) + 1

    @tasks.task("ok")
    async def ok(delivery: Delivery) -> None:
        count(delivery)

    @tasks.task("blocking")
    def blocking(delivery: Delivery) -> None:
        assert threading.current_thread() is not threading.main_thread()
        count(delivery)

    @tasks.task("boom")
    async def boom(delivery: Delivery) -> None:
        count(delivery)
        raise ValueError("always")

    @tasks.task("perm")
    async def perm(delivery: Delivery) -> None:
        count(delivery)
        raise PermanentFailure("bad input")

    for name in ("ok", "ok", "blocking", "boom", "perm"):
        await queue.publish(name, {"to": name})
    metrics = WorkerMetrics()
    worker = Worker(queue, tasks, concurrency=4, grace_s=5, metrics=metrics, poll_s=0.05)
    server = MetricsServer(metrics, stats_refresher(queue, tasks, metrics), health_reporter(worker))
    port = free_port(METRICS_HOST)
    await server.start(METRICS_HOST, port)
    running = Running(worker)
    try:
        await wait_until(
            lambda: (
                calls == {"ok": 2, "blocking": 1, "boom": 2, "perm": 1} and worker.in_flight == 0
            ),
            10,
            "every task to run",
        )
        async with aiohttp.ClientSession() as http:
            response = await http.get(f"http://{METRICS_HOST}:{port}/metrics")
            text = await response.text()
            health = await http.get(f"http://{METRICS_HOST}:{port}/healthz")
            assert health.status == 200
            assert (await health.json())["status"] == "ok"
    finally:
        await running.finish()
        await server.stop()
    assert sample(text, "millions_worker_processed_total", 'task="ok"') == 2
    assert sample(text, "millions_worker_processed_total", 'task="blocking"') == 1
    assert sample(text, "millions_worker_retried_total", 'task="boom"') == 1
    assert sample(text, "millions_worker_failed_total", 'task="boom"') == 1
    assert sample(text, "millions_worker_failed_total", 'task="perm"') == 1
    assert sample(text, "millions_worker_task_seconds_count", 'task="boom"') == 2
    assert sample(text, "millions_queue_depth", 'queue="ok"') == 0
    assert sample(text, "millions_queue_dead_letters", 'queue="boom"') == 1
    assert sample(text, "millions_queue_dead_letters", 'queue="perm"') == 1
    assert sample(text, "millions_worker_concurrency") == 4
    assert sample(text, "millions_queue_oldest_message_age_seconds", 'queue="ok"') == 0
    [dead] = await queue.dead_letters("perm")
    assert dead.error == "PermanentFailure: bad input"
    [dead] = await queue.dead_letters("boom")
    assert dead.error == "ValueError: always"


async def test_no_more_than_concurrency_handlers_run_or_are_leased(queue: SqliteQueue) -> None:
    tasks = TaskRegistry()
    gate = asyncio.Event()
    running, peak, done = 0, 0, 0

    @tasks.task("work")
    async def work(delivery: Delivery) -> None:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await gate.wait()
        running -= 1
        done += 1

    for n in range(8):
        await queue.publish("work", {"n": n})
    background = Running(Worker(queue, tasks, concurrency=3, grace_s=5, poll_s=0.05))
    try:
        await wait_until(lambda: running == 3, 5, "three handlers to run")
        stats = await queue.stats("work")
        assert (stats.in_flight, stats.ready) == (3, 5), "leases only for free slots"
        gate.set()
        await wait_until(lambda: done == 8, 10, "all eight to finish")
    finally:
        gate.set()
        await background.finish()
    assert peak == 3


class SlowAcks:
    """The queue with every ack held until `acks_open` is set."""

    def __init__(self, queue: SqliteQueue) -> None:
        self.queue = queue
        self.acks_open = asyncio.Event()
        self.acks_waiting = 0

    async def receive(
        self, queue: str, *, max_messages: int = 1, wait_s: float = 0.0
    ) -> list[Delivery]:
        return await self.queue.receive(queue, max_messages=max_messages, wait_s=wait_s)

    async def ack(self, delivery: Delivery) -> bool:
        self.acks_waiting += 1
        await self.acks_open.wait()
        return await self.queue.ack(delivery)


async def test_a_slot_frees_when_its_handler_returns_and_acks_in_flight_are_bounded(
    queue: SqliteQueue,
) -> None:
    tasks = TaskRegistry()
    handled = 0

    @tasks.task("work")
    async def work(delivery: Delivery) -> None:
        nonlocal handled
        handled += 1

    for n in range(5):
        await queue.publish("work", {"n": n})
    slow = SlowAcks(queue)
    worker = Worker(slow, tasks, concurrency=2, grace_s=5, poll_s=0.05)  # type: ignore[arg-type]
    background = Running(worker)
    try:
        # The next messages are handled while the first acks are still being written, up
        # to `concurrency` acks waiting besides `concurrency` handlers.
        await wait_until(lambda: slow.acks_waiting == 4, 5, "four acks to wait")
        assert (handled, worker.in_flight) == (4, 4)
        stats = await queue.stats("work")
        assert (stats.in_flight, stats.ready) == (4, 1), "no lease beyond the bound"
        slow.acks_open.set()
        await wait_until(lambda: handled == 5 and worker.in_flight == 0, 10, "all five done")
    finally:
        slow.acks_open.set()
        await background.finish()
    assert (await queue.stats("work")).ready == 0


async def test_a_handler_past_the_visibility_timeout_is_cancelled_and_failed(
    queue: SqliteQueue,
) -> None:
    tasks = TaskRegistry()
    cancelled = asyncio.Event()

    @tasks.task("slow")
    async def slow(delivery: Delivery) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await queue.publish("slow", {}, max_attempts=1)
    worker = Worker(queue, tasks, concurrency=1, grace_s=5, timeout_for={"slow": 0.3})
    background = Running(worker)
    try:
        await wait_until(lambda: cancelled.is_set(), 5, "the handler to be cancelled")
        await wait_until(lambda: worker.in_flight == 0, 5, "the failure to be recorded")
    finally:
        await background.finish()
    [dead] = await queue.dead_letters("slow")
    assert dead.error == "timed out after 0.3 s"


async def test_stopping_reports_unhealthy_waits_then_force_releases(queue: SqliteQueue) -> None:
    tasks = TaskRegistry()
    started = asyncio.Event()

    @tasks.task("hang")
    async def hang(delivery: Delivery) -> None:
        started.set()
        await asyncio.Event().wait()

    message_id = await queue.publish("hang", {})
    worker = Worker(queue, tasks, concurrency=2, grace_s=60, poll_s=0.05)
    health = health_reporter(worker)
    background = Running(worker)
    await asyncio.wait_for(started.wait(), 5)
    assert health()["status"] == "ok"
    background.stop.set()
    await wait_until(lambda: worker.stopping, 5, "the worker to notice the stop")
    assert health()["status"] == "stopping"
    assert not background.task.done(), "it waits for the running handler"
    background.force.set()
    await asyncio.wait_for(background.task, 5)
    again = await receive_one(queue, "hang")
    assert (again.message_id, again.attempt) == (message_id, 1)


def test_handlers_get_the_visibility_timeout_less_a_margin() -> None:
    config = QueueConfig(visibility_timeout_s=30, queues={"quick": {"visibility_timeout_s": 0.5}})
    assert handler_timeout(config, "photos") == 29.0
    assert handler_timeout(config, "quick") == pytest.approx(0.45)


def test_the_metrics_listener_stays_on_loopback() -> None:
    assert check_loopback("127.0.110.5") == "127.0.110.5"
    assert check_loopback("::1") == "::1"
    for host in ("0.0.0.0", "10.0.0.1", "localhost", "example.com"):
        with pytest.raises(ValueError, match="loopback"):
            check_loopback(host)


async def test_a_worker_needs_tasks_and_a_positive_concurrency(queue: SqliteQueue) -> None:
    with pytest.raises(ValueError, match="no tasks"):
        Worker(queue, TaskRegistry(), concurrency=1, grace_s=1)
    tasks = TaskRegistry()
    noop: Callable[[Delivery], Awaitable[None]] = _noop
    tasks.task("x")(noop)
    with pytest.raises(ValueError, match="concurrency"):
        Worker(queue, tasks, concurrency=0, grace_s=1)


async def _noop(delivery: Delivery) -> Any:
    return None
