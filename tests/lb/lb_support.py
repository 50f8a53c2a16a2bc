"""Real processes for load balancer tests: aiohttp backends and `millions.lb.main.run()`
in subprocesses on 127.0.51.x-127.0.53.x, a threaded load client, and polling helpers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).parent

LB_SCRIPT = """
import json, sys
from pathlib import Path
from millions.lb.main import run
from millions.topology.config import LoadBalancerConfig
args = json.loads(sys.argv[1])
run((args["host"], args["port"]), (args["host"], args["ops_port"]),
    LoadBalancerConfig(**args["config"]), backends=args["backends"],
    backends_file=Path(args["file"]) if args["file"] else None, name="lb-test",
    log_file=Path(args["log"]) if args["log"] else None)
"""


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class Process:
    popen: subprocess.Popen[bytes]

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signum)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Backend:
    host: str
    port: int
    name: str
    process: Process | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> None:
        popen = subprocess.Popen(
            [sys.executable, str(HERE / "backend_app.py"), self.host, str(self.port), self.name],
            stdout=subprocess.DEVNULL,
        )
        self.process = Process(popen)
        wait_for(lambda: http_ok(f"http://{self.address}/healthz"), 15, f"{self.name} up")

    def kill(self) -> None:
        assert self.process is not None
        self.process.signal(signal.SIGKILL)
        self.process.popen.wait(5)


@dataclass
class LoadBalancerProcess:
    host: str
    port: int
    ops_port: int
    process: Process

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ops_url(self) -> str:
        return f"http://{self.host}:{self.ops_port}"

    def backends(self) -> dict[str, dict[str, object]]:
        listed = httpx.get(self.ops_url + "/backends", timeout=2).json()
        return {b["address"]: b for b in listed}

    def state(self, address: str) -> str | None:
        entry = self.backends().get(address)
        return None if entry is None else str(entry["state"])


def start_lb(
    host: str,
    backends: list[str] | None = None,
    backends_file: Path | None = None,
    log: Path | None = None,
    wait_healthy: bool = True,
    **config: object,
) -> LoadBalancerProcess:
    port, ops_port = free_port(host), free_port(host)
    args = {
        "host": host,
        "port": port,
        "ops_port": ops_port,
        "config": {"health_interval_s": 0.1, "health_timeout_s": 0.5, **config},
        "backends": backends,
        "file": str(backends_file) if backends_file else None,
        "log": str(log) if log else None,
    }
    popen = subprocess.Popen([sys.executable, "-c", LB_SCRIPT, json.dumps(args)])
    lb = LoadBalancerProcess(host, port, ops_port, Process(popen))
    if wait_healthy:
        wait_for(lambda: http_ok(lb.ops_url + "/healthz"), 15, "load balancer healthy")
    else:
        wait_for(lambda: _answers(lb.ops_url + "/healthz"), 15, "load balancer listening")
    return lb


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=0.5)
    except httpx.HTTPError:
        return False
    return True


def write_backends(path: Path, addresses: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"backends": addresses}))
    tmp.replace(path)


@dataclass
class Load:
    """Threads sending GET requests through the load balancer until stopped."""

    url: str
    threads: int = 4
    served_by: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    total: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _worker(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.failures.append(repr(exc))
                    continue
                with self._lock:
                    self.total += 1
                    if response.status_code == 200:
                        self.served_by[response.text] += 1
                    else:
                        self.failures.append(f"{response.status_code} {response.text[:80]}")

    def count(self, name: str) -> int:
        with self._lock:
            return self.served_by[name]

    @contextmanager
    def running(self) -> Iterator[Load]:
        workers = [threading.Thread(target=self._worker) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        try:
            yield self
        finally:
            self._stop.set()
            for worker in workers:
                worker.join(15)
