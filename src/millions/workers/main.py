"""The worker process: `run()` blocks until SIGTERM or SIGINT, then stops gracefully.

Signals: the first SIGTERM/SIGINT stops taking messages and gives running handlers the
grace period (`workers.grace_s`) to finish; what does not finish is released back to
the queue without counting the attempt. A second signal releases at once. Exit is
normal (code 0) either way, so the supervisor sees a clean stop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from millions.queue import QueueConfig, open_queue
from millions.queue.base import MessageQueue
from millions.telemetry import logs
from millions.workers.metrics import MetricsServer, WorkerMetrics, check_loopback
from millions.workers.registry import TaskRegistry, load_registry
from millions.workers.worker import Worker

log = logging.getLogger("millions.workers")


def run(
    tasks: str | TaskRegistry,
    config: QueueConfig,
    *,
    run_dir: Path | None = None,
    metrics_listen: tuple[str, int] | None = None,
    name: str = "worker",
    log_file: Path | None = None,
    concurrency: int | None = None,
) -> None:
    """Run one worker process until SIGTERM/SIGINT (blocking).

    `tasks` is a `TaskRegistry` or its import path (`"myapp.tasks:tasks"`); every task
    of it is consumed from the queue of the same name. The queue is `config.url` (empty:
    `<run_dir>/queue.sqlite3`); `concurrency` overrides `config.workers.concurrency`.
    `/metrics` and `/healthz` are served on `metrics_listen` (a loopback address).

    Raises `TaskImportError`, `QueueURLError` or `ValueError` (bad arguments) before
    anything starts; the caller reports them and exits with code 2.
    """
    logs.configure(name, log_file)
    registry = tasks if isinstance(tasks, TaskRegistry) else load_registry(tasks)
    if not registry.names:
        raise ValueError("the task registry has no tasks")
    config.resolved_url(run_dir)
    if metrics_listen is not None:
        check_loopback(metrics_listen[0])
    slots = concurrency if concurrency is not None else config.workers.concurrency
    if slots < 1:
        raise ValueError(f"concurrency must be at least 1, got {slots}")
    uvloop.run(_serve(registry, config, run_dir, metrics_listen, slots))


async def _serve(
    registry: TaskRegistry,
    config: QueueConfig,
    run_dir: Path | None,
    metrics_listen: tuple[str, int] | None,
    concurrency: int,
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()

    def on_signal() -> None:
        (force if stop.is_set() else stop).set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal)

    queue = open_queue(config, run_dir, prefetch=concurrency)
    metrics = WorkerMetrics()
    worker = Worker(
        queue,
        registry,
        concurrency=concurrency,
        grace_s=config.workers.grace_s,
        timeout_for={name: handler_timeout(config, name) for name in registry.names},
        metrics=metrics,
    )
    server: MetricsServer | None = None
    if metrics_listen is not None:
        server = MetricsServer(
            metrics, stats_refresher(queue, registry, metrics), health_reporter(worker)
        )
        await server.start(*metrics_listen)
    log.info(
        "worker started",
        extra={"tasks": registry.names, "concurrency": concurrency, "metrics": metrics_listen},
    )
    try:
        await worker.run(stop, force)
    finally:
        if server is not None:
            await server.stop()
        await queue.close()
        log.info("worker stopped")


def handler_timeout(config: QueueConfig, queue: str) -> float:
    """A handler may run for its queue's visibility timeout less a margin, so that its
    failure is reported (with backoff) before the lease runs out on its own."""
    visibility = config.visibility_timeout_for(queue)
    return visibility - min(1.0, visibility * 0.1)


def stats_refresher(
    queue: MessageQueue, registry: TaskRegistry, metrics: WorkerMetrics
) -> Callable[[], Awaitable[None]]:
    """What `/metrics` runs before rendering: the stats of every task's queue."""

    async def refresh() -> None:
        for name in registry.names:
            metrics.observe_stats(await queue.stats(name))

    return refresh


def health_reporter(worker: Worker) -> Callable[[], dict[str, object]]:
    """What `/healthz` reports: ok while taking work, stopping once SIGTERM arrived."""

    def health() -> dict[str, object]:
        return {
            "status": "stopping" if worker.stopping else "ok",
            "in_flight": worker.in_flight,
            "concurrency": worker.concurrency,
            "tasks": worker.tasks.names,
        }

    return health
