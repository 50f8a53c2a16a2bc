"""The Celery side of the queue benchmark: the app, its no-op task, and the ack clock.

bench.py imports `make_app` to publish; the worker it starts
(`celery -A celery_app worker -P solo ...`) imports this module with the run's settings in
`BENCH_*` environment variables and finds `app`. Settings for durability parity: durable
queue, persistent messages, publisher confirms (`confirm_publish`), `acks_late` (the ack
goes out after the task returns), no result backend, prefetch = the multiplier with the
solo pool's concurrency of 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from celery import Celery
from celery.worker.request import Request
from kombu import Exchange, Queue
from phases import PhaseClock


def make_app(url: str, queue: str, prefetch: int, publishers: int) -> Celery:
    app = Celery("bench_queue", broker=url)
    app.conf.update(
        task_queues=[Queue(queue, Exchange(queue), routing_key=queue, durable=True)],
        task_default_queue=queue,
        task_default_delivery_mode="persistent",
        task_acks_late=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={"confirm_publish": True},
        broker_pool_limit=publishers,
        broker_connection_retry_on_startup=True,
        worker_prefetch_multiplier=prefetch,
        worker_enable_remote_control=False,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


def install_ack_clock(clock: PhaseClock) -> None:
    """Report each acknowledgement (sent right after the task returns, in the solo pool)."""
    acknowledge = Request.acknowledge

    def timed_acknowledge(self: Request) -> None:
        acknowledge(self)
        clock.acked_one(self.args[0])

    Request.acknowledge = timed_acknowledge  # type: ignore[method-assign]


if "BENCH_QUEUE" in os.environ:
    _clock = PhaseClock(int(os.environ["BENCH_MESSAGES"]), Path(os.environ["BENCH_OUT"]))
    app = make_app(
        os.environ["BENCH_URL"], os.environ["BENCH_QUEUE"], int(os.environ["BENCH_PREFETCH"]), 1
    )
    install_ack_clock(_clock)

    @app.task(name="bench.noop")
    def noop(message: dict[str, Any]) -> None:
        _clock.started(message)
