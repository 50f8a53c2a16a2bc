"""Real worker processes (`millions.workers.run`): killed with SIGKILL mid-task, and
stopped with SIGTERM while a handler runs. Nothing may be lost; duplicates are counted."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from queue_support import TEST_CONFIG, Engine, receive_one
from worker_process_support import EventLog, start_worker, stop, wait_for

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def _worker_config(
    engine: Engine, grace_s: float = 10.0, visibility_timeout_s: float = 10.0
) -> dict[str, object]:
    return {
        **TEST_CONFIG,
        "url": engine.url,
        "visibility_timeout_s": visibility_timeout_s,
        "workers": {"concurrency": 4, "grace_s": grace_s},
    }


async def test_a_worker_killed_mid_task_loses_nothing(
    engine: Engine, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    name = engine.new_queue_name()
    queue = engine.open()
    hang = await queue.publish(name, {"mode": "hang_first"})
    quick = [await queue.publish(name, {"mode": "quick"}) for _ in range(3)]
    events = EventLog(tmp_path / "events.log")

    # SQLite redelivers the killed worker's lease when it expires (1 s here); RabbitMQ
    # as soon as the dead connection's channel closes.
    config = _worker_config(engine, visibility_timeout_s=1.0)
    first = start_worker(tmp_path, name, config, events, tag="first")
    processes.append(first)
    wait_for(
        lambda: events.has("start", hang, 1) and all(events.has("done", q) for q in quick),
        20,
        "the first worker to start the hanging task and finish the quick ones",
    )
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(timeout=10) == -signal.SIGKILL

    second = start_worker(tmp_path, name, config, events, tag="second")
    processes.append(second)
    wait_for(lambda: events.has("done", hang), 20, "the killed task to be redelivered")
    assert stop(second) == 0

    starts, dones = events.count("start"), events.count("done")
    assert [n for kind, mid, n in events.lines() if mid == hang] == [1, 2, 2]  # start 1, 2; done 2
    assert dones[hang] == 1
    for message_id in quick:  # counted, not assumed: each at least once, never lost
        assert 1 <= dones[message_id] <= starts[message_id]
    stats = await engine.open().stats(name)
    assert (stats.ready, stats.dead) == (0, 0)
    assert stats.in_flight in (0, None)


async def test_sigterm_lets_the_running_task_finish(
    engine: Engine, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    name = engine.new_queue_name()
    queue = engine.open()
    slow = await queue.publish(name, {"mode": "slow", "seconds": 1.0})
    events = EventLog(tmp_path / "events.log")
    worker = start_worker(tmp_path, name, _worker_config(engine), events)
    processes.append(worker)
    wait_for(lambda: events.has("start", slow), 20, "the task to start")
    signalled = time.monotonic()
    assert stop(worker) == 0
    assert time.monotonic() - signalled < 8
    assert events.count("done")[slow] == 1, "the running task finishes after SIGTERM"
    stats = await engine.open().stats(name)
    assert (stats.ready, stats.dead) == (0, 0), "and it was acknowledged"
    assert stats.in_flight in (0, None)


async def test_sigterm_releases_a_task_that_outlives_the_grace_period(
    engine: Engine, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    name = engine.new_queue_name()
    queue = engine.open()
    slow = await queue.publish(name, {"mode": "slow", "seconds": 60})
    events = EventLog(tmp_path / "events.log")
    worker = start_worker(tmp_path, name, _worker_config(engine, grace_s=0.5), events)
    processes.append(worker)
    wait_for(lambda: events.has("start", slow), 20, "the task to start")
    signalled = time.monotonic()
    assert stop(worker) == 0
    assert time.monotonic() - signalled < 8
    assert events.count("done")[slow] == 0
    again = await receive_one(queue, name, timeout_s=3)
    assert (again.message_id, again.attempt) == (slow, 1), "released without counting"
    assert await queue.ack(again)
