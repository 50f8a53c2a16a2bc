"""Worker processes for the tests: `millions.workers.run()` in a subprocess, and the
event log its handlers write (see queue_worker_tasks.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent

WORKER_SCRIPT = """
import json, sys
from pathlib import Path
from millions.queue.config import QueueConfig
from millions.workers import run
args = json.loads(sys.argv[1])
metrics = tuple(args["metrics"]) if args["metrics"] else None
run("queue_worker_tasks:tasks", QueueConfig.model_validate(args["config"]),
    metrics_listen=metrics, name="worker-test", log_file=Path(args["log"]))
"""


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class EventLog:
    path: Path

    def lines(self) -> list[tuple[str, str, int]]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            event, message_id, attempt = line.split()
            entries.append((event, message_id, int(attempt)))
        return entries

    def count(self, event: str) -> Counter[str]:
        return Counter(message_id for kind, message_id, _ in self.lines() if kind == event)

    def has(self, event: str, message_id: str, attempt: int | None = None) -> bool:
        return any(
            kind == event and mid == message_id and (attempt is None or n == attempt)
            for kind, mid, n in self.lines()
        )


def start_worker(
    tmp_path: Path,
    queue_name: str,
    config: dict[str, Any],
    events: EventLog,
    metrics: tuple[str, int] | None = None,
    tag: str = "worker",
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "MILLIONS_TEST_QUEUE": queue_name,
        "MILLIONS_TEST_EVENTS": str(events.path),
    }
    args = {"config": config, "metrics": metrics, "log": str(tmp_path / f"{tag}.log")}
    with open(tmp_path / f"{tag}.err", "wb") as errors:
        return subprocess.Popen(
            [sys.executable, "-c", WORKER_SCRIPT, json.dumps(args)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )


def wait_for(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.02)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM and wait; kill if it does not exit in time (and fail the caller)."""
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"worker did not stop within {timeout_s} s of SIGTERM") from None
