"""Driving a real topology through the public CLI, shared by the topology tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


def millions(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "millions", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@dataclass
class Topology:
    config: Path
    run_dir: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return millions(*args, "--config", str(self.config), "--run-dir", str(self.run_dir))

    def status(self) -> dict[str, dict[str, object]]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return {c["name"]: c for c in json.loads(result.stdout)["components"]}

    def pids(self) -> list[int]:
        return [int(c["pid"]) for c in self.status().values() if c["pid"]]  # type: ignore[call-overload]


@contextmanager
def running_topology(tmp_path: Path, config_text: str) -> Iterator[Topology]:
    """The topology of `config_text`, started with `up --detach`; `down` afterwards."""
    config = tmp_path / "millions.toml"
    config.write_text(config_text)
    topo = Topology(config, tmp_path / "run")
    started = topo.cli("up", "--detach")
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield topo
    finally:
        topo.cli("down")
