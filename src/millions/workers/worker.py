"""The worker loop: take messages from the registered tasks' queues and run their handlers.

At most `concurrency` handlers run at once; the loop asks the queue only for as many
messages as there are free slots, so nothing waits leased inside the process. A slot
frees when its handler returns, while the acknowledgement is still on its way (at most
`concurrency` of those at a time): the next receive then goes to the queue together with
those acks, and the SQLite engine writes both in one group commit. Queues
are polled in turn (a quick look at each, and a long-poll once all the others were
empty), so one busy queue does not starve another.

A handler that returns is acknowledged; one that raises is failed (retried with backoff,
dead-lettered after its last attempt; `PermanentFailure` at once); one that runs past
its time limit (`timeout_for`; the worker process gives each queue its visibility timeout
less a margin) is cancelled and failed, before its lease runs out and the message is
delivered elsewhere anyway.

Stopping (`stop` set, e.g. by SIGTERM): take no more messages, let running handlers
finish within `grace_s`, then cancel the rest and release their messages back to the
queue without counting the attempt. A plain-function handler runs in a thread that
cannot be interrupted; if it is still running when released, its effect may also
happen on the redelivery, which is what idempotency keys are for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from millions.queue.base import Delivery, MessageQueue, NackResult, QueueError
from millions.workers.metrics import WorkerMetrics
from millions.workers.registry import PermanentFailure, Task, TaskRegistry

log = logging.getLogger("millions.workers")

#: Longest a receive waits for a message: also how quickly the loop notices a stop.
POLL_S = 0.5
#: Pause after the queue failed (unreachable broker, locked file) before asking again.
ERROR_PAUSE_S = 1.0


class Worker:
    """Runs the handlers of `tasks` on messages from `queue`."""

    def __init__(
        self,
        queue: MessageQueue,
        tasks: TaskRegistry,
        *,
        concurrency: int,
        grace_s: float,
        timeout_for: dict[str, float] | None = None,
        metrics: WorkerMetrics | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        if not tasks.names:
            raise ValueError("the task registry has no tasks")
        self.queue = queue
        self.tasks = tasks
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.timeout_for = timeout_for or {}
        self.metrics = metrics or WorkerMetrics()
        self.poll_s = poll_s
        self.stopping = False
        self._running: set[asyncio.Task[None]] = set()
        self._handling = 0  # handlers not yet returned (the rest of _running is answering)
        self._slot_freed = asyncio.Event()
        self._children: dict[str, tuple[Any, Any]] = {}
        self.metrics.concurrency.set(concurrency)
        # Read at scrape time, so handling a message does not update it twice.
        self.metrics.in_flight.set_function(lambda: len(self._running))

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def run(self, stop: asyncio.Event, force: asyncio.Event | None = None) -> None:
        """Work until `stop` is set, then shut down gracefully (see module docstring).

        Setting `force` during the grace period releases the unfinished messages at once.
        """
        names = self.tasks.names
        misses = 0
        turn = 0
        stop_waiter = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                free = min(
                    self.concurrency - self._handling,
                    2 * self.concurrency - len(self._running),
                )
                if free <= 0:
                    self._slot_freed.clear()
                    slot_waiter = asyncio.ensure_future(self._slot_freed.wait())
                    await asyncio.wait(
                        {slot_waiter, stop_waiter}, return_when=asyncio.FIRST_COMPLETED
                    )
                    slot_waiter.cancel()
                    continue
                name = names[turn % len(names)]
                turn += 1
                # Long-poll once every other queue was found empty (with one queue:
                # always; a long-poll returns at once when messages are waiting).
                wait_s = self.poll_s if misses >= len(names) - 1 else 0.0
                try:
                    deliveries = await self.queue.receive(name, max_messages=free, wait_s=wait_s)
                except QueueError as exc:
                    log.error("cannot receive", extra={"queue": name, "error": str(exc)})
                    await asyncio.wait({stop_waiter}, timeout=ERROR_PAUSE_S)
                    continue
                misses = 0 if deliveries else misses + 1
                for delivery in deliveries:
                    self._start(self.tasks.get(name), delivery)
        finally:
            stop_waiter.cancel()
            self.stopping = True
            await self._drain(force)

    def _start(self, task: Task, delivery: Delivery) -> None:
        handler = asyncio.get_running_loop().create_task(self._handle(task, delivery))
        self._running.add(handler)
        self._handling += 1

        def done(finished: asyncio.Task[None]) -> None:
            if not finished.cancelled() and finished.exception() is not None:
                log.error(
                    "handling failed unexpectedly",
                    exc_info=finished.exception(),
                    extra={"task": task.name, "message_id": delivery.message_id},
                )
            self._running.discard(finished)
            self._slot_freed.set()

        handler.add_done_callback(done)

    def _task_metrics(self, name: str) -> tuple[Any, Any]:
        """The task's latency histogram and processed counter, looked up once, not per
        message (`labels` takes a lock and builds a key every call)."""
        children = self._children.get(name)
        if children is None:
            children = (self.metrics.latency.labels(name), self.metrics.processed.labels(name))
            self._children[name] = children
        return children

    async def _drain(self, force: asyncio.Event | None) -> None:
        """Let running handlers finish within the grace period; release the rest."""
        if not self._running:
            return
        log.info("stopping: waiting for handlers", extra={"in_flight": len(self._running)})
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(self._running))}
        if force is not None:
            waiters.add(asyncio.ensure_future(force.wait()))
        await asyncio.wait(waiters, timeout=self.grace_s, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()
        unfinished = list(self._running)
        if unfinished:
            log.warning("grace period over: releasing", extra={"unfinished": len(unfinished)})
            for handler in unfinished:
                handler.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)

    async def _handle(self, task: Task, delivery: Delivery) -> None:
        timeout_s = self.timeout_for.get(task.name)
        started = time.perf_counter()
        error: str | None = None
        retryable = True
        try:
            async with asyncio.timeout(timeout_s) as deadline:
                await task(delivery)
        except asyncio.CancelledError:
            await self._release(task, delivery)
            raise
        except PermanentFailure as exc:
            error, retryable = f"PermanentFailure: {exc}", False
        except TimeoutError as exc:
            if deadline.expired():
                error = f"timed out after {timeout_s:g} s"
            else:
                error = f"TimeoutError: {exc}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._task_metrics(task.name)[0].observe(time.perf_counter() - started)
            self._handling -= 1
            self._slot_freed.set()
        if error is None:
            await self._ack(task, delivery)
        else:
            await self._fail(task, delivery, error, retryable)

    async def _ack(self, task: Task, delivery: Delivery) -> None:
        try:
            acked = await self.queue.ack(delivery)
        except QueueError as exc:
            log.error("ack failed", extra={"message_id": delivery.message_id, "error": str(exc)})
            return
        if acked:
            self._task_metrics(task.name)[1].inc()
        else:
            self.metrics.lost.labels(task.name).inc()
            log.warning(
                "handled after the lease expired; the message is redelivered",
                extra={"task": task.name, "message_id": delivery.message_id},
            )

    async def _fail(self, task: Task, delivery: Delivery, error: str, retryable: bool) -> None:
        log.warning(
            "task failed",
            extra={
                "task": task.name,
                "message_id": delivery.message_id,
                "attempt": delivery.attempt,
                "error": error,
            },
        )
        try:
            result: NackResult = await self.queue.nack(delivery, error, retry=retryable)
        except QueueError as exc:
            log.error("nack failed", extra={"message_id": delivery.message_id, "error": str(exc)})
            return
        if result == "retried":
            self.metrics.retried.labels(task.name).inc()
        elif result == "dead_lettered":
            self.metrics.failed.labels(task.name).inc()
        else:
            self.metrics.lost.labels(task.name).inc()

    async def _release(self, task: Task, delivery: Delivery) -> None:
        with contextlib.suppress(QueueError):
            if await self.queue.release(delivery):
                self.metrics.released.labels(task.name).inc()
                log.info(
                    "released unfinished",
                    extra={"task": task.name, "message_id": delivery.message_id},
                )
