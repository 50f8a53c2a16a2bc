"""The load balancer as a real process in front of real backend processes."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from lb_support import (
    Backend,
    Load,
    LoadBalancerProcess,
    free_port,
    start_lb,
    wait_for,
    write_backends,
)

pytestmark = pytest.mark.timeout(90)


class Cluster:
    """Tracks every process a test starts and stops them all."""

    def __init__(self) -> None:
        self.backends: list[Backend] = []
        self.lbs: list[LoadBalancerProcess] = []

    def backend(self, host: str, name: str) -> Backend:
        backend = Backend(host, free_port(host), name)
        backend.start()
        self.backends.append(backend)
        return backend

    def lb(self, host: str, **kwargs: object) -> LoadBalancerProcess:
        lb = start_lb(host, **kwargs)  # type: ignore[arg-type]
        self.lbs.append(lb)
        return lb

    def stop(self) -> None:
        for lb in self.lbs:
            lb.process.stop()
        for backend in self.backends:
            if backend.process is not None:
                backend.process.stop()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    started = Cluster()
    yield started
    started.stop()


def test_killed_backend_is_invisible_to_clients(cluster: Cluster, tmp_path: Path) -> None:
    """(a) SIGKILL one of two backends under steady load: zero failed requests; the passive
    failure marks it down at once; active checks bring the restarted one back."""
    b1 = cluster.backend("127.0.51.11", "b1")
    b2 = cluster.backend("127.0.51.12", "b2")
    lb = cluster.lb(
        "127.0.51.1", backends=[b1.address, b2.address], rise=2, fall=3, health_interval_s=1.0
    )
    load = Load(lb.url + "/name")
    with load.running():
        wait_for(lambda: load.count("b1") > 20 and load.count("b2") > 20, 10, "traffic on both")
        b1.kill()
        # passive detection: far sooner than three failed checks a second apart
        killed_at = time.monotonic()
        wait_for(lambda: lb.state(b1.address) == "down", 5, "b1 marked down")
        assert time.monotonic() - killed_at < 1.0
        before = load.count("b2")
        wait_for(lambda: load.count("b2") > before + 50, 10, "traffic on b2 alone")
        b1.start()
        wait_for(lambda: lb.state(b1.address) == "up", 10, "b1 back up")
        back = load.count("b1")
        wait_for(lambda: load.count("b1") > back + 20, 10, "traffic on b1 again")
    assert load.failures == [], load.failures[:5]
    metrics = httpx.get(lb.ops_url + "/metrics").text
    passive = [
        line
        for line in metrics.splitlines()
        if line.startswith("millions_lb_passive_failures_total")
    ]
    assert passive and float(passive[0].split()[-1]) >= 1


def test_backends_file_changes_under_load(cluster: Cluster, tmp_path: Path) -> None:
    """(b) 2 -> 4 -> 2 backends via the file and SIGHUP under load: zero failures, new
    servers get traffic, removed ones finish their slow requests, then are forgotten."""
    backends = [cluster.backend(f"127.0.52.{11 + i}", f"b{i + 1}") for i in range(4)]
    file = tmp_path / "backends.json"
    write_backends(file, [b.address for b in backends[:2]])
    lb = cluster.lb("127.0.52.1", backends_file=file, drain_timeout_s=10)
    load = Load(lb.url + "/name")
    with load.running():
        wait_for(lambda: load.count("b1") > 10 and load.count("b2") > 10, 10, "b1 and b2 busy")
        write_backends(file, [b.address for b in backends])
        lb.process.signal(signal.SIGHUP)
        wait_for(lambda: load.count("b3") > 10 and load.count("b4") > 10, 10, "b3, b4 busy")

        with ThreadPoolExecutor(16) as pool:
            slow = [pool.submit(httpx.get, lb.url + "/slow?ms=1500", timeout=10) for _ in range(16)]
            wait_for(
                lambda: all(int(e["in_flight"]) >= 2 for e in lb.backends().values()),
                5,
                "slow requests on every backend",
            )
            write_backends(file, [b.address for b in backends[2:]])
            lb.process.signal(signal.SIGHUP)
            wait_for(lambda: lb.state(backends[0].address) == "draining", 5, "b1 draining")
            assert lb.state(backends[1].address) == "draining"
            served = {f.result().text for f in slow}
            assert all(f.result().status_code == 200 for f in slow)
        assert {"b1", "b2"} <= served  # the removed ones finished their requests
        wait_for(
            lambda: set(lb.backends()) == {b.address for b in backends[2:]}, 5, "b1, b2 forgotten"
        )
        counts = (load.count("b1"), load.count("b2"))
        later = load.count("b3")
        wait_for(lambda: load.count("b3") > later + 20, 10, "more traffic")
        assert (load.count("b1"), load.count("b2")) == counts
    assert load.failures == [], load.failures[:5]


def test_least_outstanding_prefers_the_idle_backend(cluster: Cluster) -> None:
    b1 = cluster.backend("127.0.53.11", "b1")
    b2 = cluster.backend("127.0.53.12", "b2")
    lb = cluster.lb("127.0.53.1", backends=[b1.address, b2.address])
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, lb.url + "/slow?ms=1500", timeout=10)
        wait_for(
            lambda: sum(int(e["in_flight"]) for e in lb.backends().values()) == 1,
            5,
            "slow request in flight",
        )
        busy = next(a for a, e in lb.backends().items() if int(e["in_flight"]) == 1)
        idle_name = "b2" if busy == b1.address else "b1"
        with httpx.Client() as client:
            names = [client.get(lb.url + "/name").text for _ in range(8)]
        assert names == [idle_name] * 8
        assert slow.result().status_code == 200


def test_forwarded_headers_and_streaming_through_the_lb(cluster: Cluster) -> None:
    b1 = cluster.backend("127.0.53.21", "b1")
    lb = cluster.lb("127.0.53.2", backends=[b1.address])
    echo = httpx.get(
        lb.url + "/echo",
        headers={"X-Request-Id": "req-1", "Connection": "keep-alive, X-Drop", "X-Drop": "1"},
    ).json()
    headers = {k.lower(): v for k, v in echo["headers"]}
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-request-id"] == "req-1"
    assert headers["via"] == "1.1 lb-test"
    assert "x-drop" not in headers
    size = 20 * 1024 * 1024
    with httpx.stream("GET", lb.url + f"/big?bytes={size}&chunked=1", timeout=30) as response:
        assert response.headers["transfer-encoding"] == "chunked"
        assert sum(len(piece) for piece in response.iter_raw()) == size

    def chunks() -> Iterator[bytes]:
        for i in range(50):
            yield bytes([i]) * 10000

    uploaded = httpx.post(lb.url + "/upload", content=chunks(), timeout=30).json()
    assert uploaded["bytes"] == 500000


def test_ops_endpoints_and_no_healthy_backend(cluster: Cluster) -> None:
    b1 = cluster.backend("127.0.53.31", "b1")
    dead = f"127.0.53.32:{free_port('127.0.53.32')}"
    lb = cluster.lb("127.0.53.3", backends=[b1.address, dead])
    wait_for(lambda: lb.state(dead) == "down", 5, "dead backend down")
    health = httpx.get(lb.ops_url + "/healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "backends_up": 1, "backends": 2}
    httpx.get(lb.url + "/name")
    listed = lb.backends()
    assert listed[b1.address]["state"] == "up" and int(listed[b1.address]["requests"]) >= 1
    metrics = httpx.get(lb.ops_url + "/metrics").text
    for name in (
        'millions_lb_requests_total{status_class="2xx"}',
        "millions_lb_request_seconds_bucket",
        f'millions_lb_backend_up{{backend="{b1.address}"}} 1.0',
        f'millions_lb_backend_up{{backend="{dead}"}} 0.0',
        "millions_lb_backend_in_flight",
        "millions_lb_retries_total",
        "millions_lb_bad_requests_total",
        "millions_lb_active_connections",
    ):
        assert name in metrics, name

    # now the only healthy backend fails its checks
    httpx.post(f"http://{b1.address}/health/fail")
    wait_for(lambda: lb.state(b1.address) == "down", 5, "b1 down")
    health = httpx.get(lb.ops_url + "/healthz")
    assert health.status_code == 503 and health.json()["status"] == "no healthy backend"
    started = time.monotonic()
    response = httpx.get(lb.url + "/name")
    assert response.status_code == 503 and time.monotonic() - started < 0.5


def test_sigterm_finishes_requests_in_flight(cluster: Cluster) -> None:
    b1 = cluster.backend("127.0.53.41", "b1")
    lb = cluster.lb("127.0.53.4", backends=[b1.address])
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(httpx.get, lb.url + "/slow?ms=700", timeout=10)
        wait_for(lambda: int(lb.backends()[b1.address]["in_flight"]) == 1, 5, "in flight")
        lb.process.signal(signal.SIGTERM)
        assert slow.result().status_code == 200
    assert lb.process.popen.wait(10) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(lb.url + "/name")
