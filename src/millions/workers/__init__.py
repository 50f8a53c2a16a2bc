"""Workers: processes that run task handlers on messages from the queue.

    tasks = TaskRegistry()

    @tasks.task("photo.process")
    async def process(delivery: Delivery) -> None:
        ...

`run("myapp.tasks:tasks", queue_config, ...)` is a worker process; `decide_workers` is
the autoscaler's pure decision.
"""

from __future__ import annotations

from millions.workers.autoscale import (
    QueueLoad,
    Recommendation,
    ScalingDecision,
    ScalingPolicy,
    decide_workers,
    trim_history,
)
from millions.workers.main import run
from millions.workers.metrics import MetricsServer, WorkerMetrics
from millions.workers.registry import (
    PermanentFailure,
    Task,
    TaskImportError,
    TaskRegistry,
    load_registry,
)
from millions.workers.worker import Worker

__all__ = [
    "MetricsServer",
    "PermanentFailure",
    "QueueLoad",
    "Recommendation",
    "ScalingDecision",
    "ScalingPolicy",
    "Task",
    "TaskImportError",
    "TaskRegistry",
    "Worker",
    "WorkerMetrics",
    "decide_workers",
    "load_registry",
    "run",
    "trim_history",
]
