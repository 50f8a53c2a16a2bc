"""Queue workers in a running topology (127.0.70.x): `up` starts one, an upload through
the load balancer is processed by it, `kill` restarts it; and the pure parts (addresses,
worker commands, the autoscaler's view of the queue) without starting anything.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image
from topology_harness import Topology, pid_alive, running_topology, wait_for

from millions.queue import QueueStats
from millions.topology.components import RunPaths, command, initial_specs, worker_spec
from millions.topology.config import MAX_WEB_INDEX, MAX_WORKER_INDEX, parse
from millions.topology.supervisor import queue_load, scaling_policy

pytestmark = pytest.mark.timeout(150)

LB = "http://127.0.70.1:8080"
CONFIG = """
[dcs.test-dc]
subnet = "127.0.70"
web = 1

[lb]
health_interval_s = 0.2

[supervisor]
restart_backoff_s = 0.1

[dns]
host = "127.0.70.53"

[queue.workers]
min_workers = 1
max_workers = 2
grace_s = 2.0
"""


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with running_topology(tmp_path, CONFIG) as topo:
        yield topo


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 40), (20, 120, 220)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_worker_processes_an_upload_and_is_restarted_after_a_kill(topology: Topology) -> None:
    status = topology.status()
    worker = status["worker-test-dc-1"]
    assert worker["state"] == "running" and worker["kind"] == "worker"
    assert worker["address"] == "127.0.70.101:9100"
    health = httpx.get("http://127.0.70.101:9100/healthz", timeout=5)
    assert health.status_code == 200
    assert health.json()["tasks"] == ["cdn.purge", "feed.fanout", "photo.process"]
    table = topology.cli("status")
    assert "worker-test-dc-1" in table.stdout

    with httpx.Client(base_url=LB, timeout=10) as client:
        signup = client.post("/api/signup", json={"username": "piper", "password": "pw-123456"})
        assert signup.status_code == 201, signup.text
        uploaded = client.post(
            "/api/photos", files={"photo": ("p.jpg", jpeg_bytes(), "image/jpeg")}
        )
        assert uploaded.status_code == 201, uploaded.text
        photo = uploaded.json()
        assert photo["processed"] is False and photo["variants"] == {}

        def processed() -> bool:
            return bool(client.get(f"/api/photos/{photo['id']}").json()["processed"])

        wait_for(processed, 30, "the worker to process the photo")
        variants = client.get(f"/api/photos/{photo['id']}").json()["variants"]
        assert set(variants) == {"thumb", "crop", "sharpen", "blur"}
        thumb = client.get(variants["thumb"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert Image.open(io.BytesIO(thumb.content)).size == (64, 40)
    log = (topology.run_dir / "logs" / "worker-test-dc-1.log").read_text()
    assert "photo processed" in log

    old_pid = int(worker["pid"])  # type: ignore[call-overload]
    assert topology.cli("kill", "worker-test-dc-1").returncode == 0

    def restarted() -> bool:
        current = topology.status()["worker-test-dc-1"]
        return current["state"] == "running" and current["pid"] not in (None, old_pid)

    wait_for(restarted, 20, "worker-test-dc-1 to be restarted")
    pids = topology.pids()
    assert topology.cli("down").returncode == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(pid_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(pid_alive(pid) for pid in pids)


def test_workers_and_web_servers_never_share_an_address() -> None:
    config = parse({"dcs": {"x": {"subnet": "127.1.9", "web": MAX_WEB_INDEX}}})
    web = {s.host for s in initial_specs(config) if s.kind == "web"}
    workers = {worker_spec(config, "x", i).host for i in range(1, MAX_WORKER_INDEX + 1)}
    assert len(workers) == MAX_WORKER_INDEX and not web & workers
    assert max(int(h.rsplit(".", 1)[1]) for h in workers) == 254
    with pytest.raises(ValueError, match="out of range"):
        worker_spec(config, "x", MAX_WORKER_INDEX + 1)


def test_worker_command_runs_the_configured_tasks_with_metrics_on_its_address() -> None:
    config = parse({"worker": {"tasks": "myapp.jobs:tasks", "metrics_port": 9200}})
    spec = worker_spec(config, "us-east", 3)
    argv = command(spec, RunPaths(Path("/run")), config)
    assert argv[argv.index("--tasks") + 1] == "myapp.jobs:tasks"
    assert argv[argv.index("--metrics") + 1] == "127.0.1.103:9200"
    assert argv[argv.index("--name") + 1] == "worker-us-east-3"
    assert argv[argv.index("--run-dir") + 1] == "/run"


def test_autoscaler_sees_capacity_only_while_there_is_a_backlog() -> None:
    def stats(ready: int, ack_rate: float | None) -> QueueStats:
        return QueueStats("photo.process", ready, 1, 0, 0, 3.0, 2.0, ack_rate)

    busy = queue_load(stats(ready=10, ack_rate=4.0), workers=2)
    assert (busy.depth, busy.per_worker_rate, busy.arrival_rate) == (10, 2.0, 2.0)
    assert queue_load(stats(ready=0, ack_rate=4.0), workers=2).per_worker_rate is None
    assert queue_load(stats(ready=5, ack_rate=None), workers=2).per_worker_rate is None
    policy = scaling_policy(parse({"queue": {"workers": {"min_workers": 0, "max_workers": 200}}}))
    assert (policy.min_workers, policy.max_workers) == (0, MAX_WORKER_INDEX)
