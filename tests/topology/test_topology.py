"""The whole topology as real processes: up, status, kill, scale, down.

These tests drive the public CLI (`millions up --detach`, `status --json`, `kill`,
`scale`, `down`) against a one-DC topology on 127.0.71.x, and a logged-in user through
the load balancer with httpx.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from topology_harness import Topology, pid_alive, running_topology, wait_for

pytestmark = pytest.mark.timeout(120)

LB = "http://127.0.71.1:8080"
CONFIG = """
[dcs.test-dc]
subnet = "127.0.71"
web = 2

[lb]
health_interval_s = 0.2

[supervisor]
restart_backoff_s = 0.1

[dns]
host = "127.0.71.53"
"""


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with running_topology(tmp_path, CONFIG) as topo:
        yield topo


@dataclass
class UserLoad:
    """One logged-in user issuing GET /api/me back to back through the load balancer."""

    username: str
    statuses: Counter[int] = field(default_factory=Counter)
    wrong_user: int = 0
    errors: list[str] = field(default_factory=list)
    served_by: Counter[str] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, client: httpx.Client) -> None:
        while not self.stop.is_set():
            try:
                response = client.get(f"{LB}/api/me")
            except httpx.HTTPError as exc:
                self.errors.append(repr(exc))
                continue
            self.statuses[response.status_code] += 1
            self.served_by[response.headers.get("x-served-by", "?")] += 1
            if response.status_code == 200 and response.json()["username"] != self.username:
                self.wrong_user += 1

    @property
    def requests(self) -> int:
        return sum(self.statuses.values()) + len(self.errors)


def logged_in_client(username: str) -> httpx.Client:
    client = httpx.Client(timeout=10)
    response = client.post(
        f"{LB}/api/signup", json={"username": username, "password": "correct horse"}
    )
    assert response.status_code == 201, response.text
    return client


def run_load(users: int, during: Callable[[list[UserLoad]], None]) -> list[UserLoad]:
    loads = [UserLoad(f"user_{i}_{os.getpid()}") for i in range(users)]
    clients = [logged_in_client(load.username) for load in loads]
    threads = [
        threading.Thread(target=u.run, args=(c,)) for u, c in zip(loads, clients, strict=True)
    ]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(u.requests >= 20 for u in loads), 30, "load to start")
        during(loads)
    finally:
        for load in loads:
            load.stop.set()
        for thread in threads:
            thread.join(timeout=15)
        for client in clients:
            client.close()
    return loads


def assert_no_failures(loads: list[UserLoad]) -> None:
    for load in loads:
        assert load.errors == [], load.errors[:3]
        assert set(load.statuses) == {200}, load.statuses  # 401 would mean logged out
        assert load.wrong_user == 0


def test_up_status_kill_and_down_leave_no_process(topology: Topology) -> None:
    status = topology.status()
    assert sorted(status) == [
        "dns",
        "edge-test",
        "lb-test-dc",
        "web-test-dc-1",
        "web-test-dc-2",
        "worker-test-dc-1",
    ]
    assert {c["state"] for c in status.values()} == {"running"}
    assert status["web-test-dc-2"]["address"] == "127.0.71.12:8000"
    old_pid = int(status["web-test-dc-1"]["pid"])  # type: ignore[call-overload]

    killed = topology.cli("kill", "web-test-dc-1")
    assert killed.returncode == 0, killed.stderr
    wait_for(lambda: not pid_alive(old_pid), 5, "the killed process to be gone")

    def restarted() -> bool:
        web = topology.status()["web-test-dc-1"]
        return web["state"] == "running" and web["restarts"] == 1 and web["pid"] != old_pid

    wait_for(restarted, 20, "web-test-dc-1 to be restarted")

    left_dead = topology.cli("kill", "web-test-dc-2", "--no-restart")
    assert left_dead.returncode == 0
    wait_for(lambda: topology.status()["web-test-dc-2"]["state"] == "down", 10, "down")

    unknown = topology.cli("kill", "web-nowhere")
    assert unknown.returncode == 1
    assert "no component named 'web-nowhere'" in unknown.stderr

    pids = topology.pids()
    supervisor = json.loads((topology.run_dir / "control.json").read_text())["pid"]
    assert topology.cli("down").returncode == 0
    wait_for(lambda: not any(pid_alive(p) for p in [*pids, supervisor]), 15, "all processes gone")
    gone = topology.cli("status")
    assert gone.returncode == 1
    assert "no topology is running" in gone.stderr


def test_logged_in_users_survive_sigkill_of_a_web_server(topology: Topology) -> None:
    def kill_one(loads: list[UserLoad]) -> None:
        before = sum(u.requests for u in loads)
        assert topology.cli("kill", "web-test-dc-1").returncode == 0
        wait_for(lambda: sum(u.requests for u in loads) > before + 300, 30, "load after the kill")

    loads = run_load(4, kill_one)
    assert_no_failures(loads)
    served = sum((u.served_by for u in loads), Counter())
    assert served["web-test-dc-1"] > 0 and served["web-test-dc-2"] > 0, served


def test_scale_up_and_down_under_load_fails_no_request(topology: Topology) -> None:
    def scale(loads: list[UserLoad]) -> None:
        up = topology.cli("scale", "test-dc", "web=4")
        assert up.returncode == 0, up.stderr
        assert len(topology.status()) == 8  # DNS, an edge, a load balancer, 4 web, a worker
        wait_for(
            lambda: sum(u.served_by["web-test-dc-4"] for u in loads) > 20,
            20,
            "the new server to take traffic",
        )
        down = topology.cli("scale", "test-dc", "web=2")
        assert down.returncode == 0, down.stderr
        assert "web-test-dc-3" in down.stdout and "web-test-dc-4" in down.stdout
        before = sum(u.requests for u in loads)
        wait_for(lambda: sum(u.requests for u in loads) > before + 200, 30, "load after")

    loads = run_load(4, scale)
    assert_no_failures(loads)
    assert sorted(topology.status()) == [
        "dns",
        "edge-test",
        "lb-test-dc",
        "web-test-dc-1",
        "web-test-dc-2",
        "worker-test-dc-1",
    ]
    bad = topology.cli("scale", "test-dc", "db=3")
    assert bad.returncode == 2
    missing = topology.cli("scale", "mars", "web=1")
    assert missing.returncode == 1 and "no data center named 'mars'" in missing.stderr


def test_foreground_up_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    config = tmp_path / "millions.toml"
    config.write_text(CONFIG.replace("127.0.71", "127.0.72"))
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "millions",
            "up",
            "--config",
            str(config),
            "--run-dir",
            str(run_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        state_file = run_dir / "state.json"

        def running() -> bool:
            try:
                return json.loads(state_file.read_text())["phase"] == "running"
            except (OSError, ValueError, KeyError):
                return False

        wait_for(running, 60, "the topology to be running")
        pids = [c["pid"] for c in json.loads(state_file.read_text())["components"]]
        assert len(pids) == 6 and all(pid_alive(p) for p in pids)  # 2 web, a worker, lb, edge, dns
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        assert process.returncode == 0, output
        for name in ("lb-test-dc", "web-test-dc-1", "127.0.72.1:8080", "pid"):
            assert name in output
        assert "stopped: every component exited" in output
        assert not any(pid_alive(p) for p in pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_children_die_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "millions.toml"
    config.write_text(CONFIG.replace("127.0.71", "127.0.73"))
    topo = Topology(config, tmp_path / "run")
    assert topo.cli("up", "--detach").returncode == 0
    pids = topo.pids()
    supervisor = json.loads((topo.run_dir / "control.json").read_text())["pid"]
    os.kill(supervisor, signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in pids), 15, "children to die with the supervisor")
    # a second `up` on the same run dir works once the old supervisor is gone
    assert topo.cli("up", "--detach").returncode == 0
    assert topo.cli("down").returncode == 0


def test_an_app_that_cannot_be_imported_fails_start_up_fast_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "millions.toml"
    config.write_text('app = "no_such_module_xyz:app"\n' + CONFIG.replace("127.0.71", "127.0.74"))
    topo = Topology(config, tmp_path / "run")
    started = time.monotonic()
    result = topo.cli("up", "--detach")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "config error: app: cannot import module 'no_such_module_xyz'" in result.stdout
    assert time.monotonic() - started < 20
    assert topo.cli("status").returncode == 1, "nothing left running"


def test_a_failed_data_center_stays_down_until_restored(topology: Topology) -> None:
    before = topology.status()
    old_pids = {name: c["pid"] for name, c in before.items() if c.get("dc") == "test-dc"}
    assert sorted(old_pids) == [
        "edge-test",
        "lb-test-dc",
        "web-test-dc-1",
        "web-test-dc-2",
        "worker-test-dc-1",
    ]

    failed = topology.cli("dc", "fail", "test-dc")
    assert failed.returncode == 0, failed.stderr
    assert "left down" in failed.stdout
    wait_for(
        lambda: all(topology.status()[name]["state"] == "down" for name in old_pids),
        10,
        "every component of the DC to be down",
    )
    assert not any(pid_alive(int(pid)) for pid in old_pids.values())  # type: ignore[call-overload]
    assert topology.status()["dns"]["state"] == "running"  # not part of any DC

    restored = topology.cli("dc", "restore", "test-dc")
    assert restored.returncode == 0, restored.stderr
    after = topology.status()
    for name, old_pid in old_pids.items():
        assert after[name]["state"] == "running" and after[name]["pid"] != old_pid, name
    assert httpx.get(f"{LB}/api/me", timeout=5).status_code == 401  # served again

    unknown = topology.cli("dc", "fail", "nowhere")
    assert unknown.returncode == 1
    assert "no data center named 'nowhere'" in unknown.stderr
