"""Cross-DC shard copies in a running two-DC topology (127.0.67.x and 127.0.68.x): each
DC runs a replicator, `dc fail` cuts a DC's primaries off, `dc failover` promotes the
replicas and counts the writes lost, `dc restore` resyncs the DC and switches its shards
back, and no acknowledged account is lost on the way."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from topology_harness import running_topology, wait_for

pytestmark = pytest.mark.timeout(180)

US_LB = "http://127.0.67.1:8080"
CONFIG = """
[dcs.us-east]
subnet = "127.0.67"
web = 1

[dcs.eu-west]
subnet = "127.0.68"
web = 1

[lb]
health_interval_s = 0.2

[edge]
enabled = false

[dns]
host = "127.0.67.53"

[replication]
failover_after_s = 0
"""
PASSWORD = "correct horse"


def sign_up(client: httpx.Client, name: str) -> None:
    response = client.post("/api/signup", json={"username": name, "password": PASSWORD})
    assert response.status_code == 201, response.text
    client.cookies.clear()


def test_failover_promotes_replicas_and_restore_switches_back(tmp_path: Path) -> None:
    with running_topology(tmp_path, CONFIG) as topology:
        status = topology.status()
        for dc, host in (("us-east", "127.0.67.9"), ("eu-west", "127.0.68.9")):
            replicator = status[f"replicator-{dc}"]
            assert replicator["state"] == "running" and replicator["address"] == f"{host}:9109"
            metrics = httpx.get(f"http://{host}:9109/metrics", timeout=5).text
            assert "millions_replication_lag_changes" in metrics
        names = [f"before{i}" for i in range(12)]
        with httpx.Client(base_url=US_LB, timeout=15) as client:
            for name in names:
                sign_up(client, name)

        failed = topology.cli("dc", "fail", "eu-west")
        assert failed.returncode == 0, failed.stderr
        promoted = topology.cli("dc", "failover", "eu-west")
        assert promoted.returncode == 0, promoted.stderr
        assert "failover of eu-west" in promoted.stdout
        assert "primary now in us-east" in promoted.stdout
        lost = int(promoted.stdout.split("writes lost: ")[-1].split()[0])
        assert lost >= 0
        state = json.loads(topology.cli("status", "--json").stdout)
        assert state["failovers"]["eu-west"]["writes_lost"] == lost
        shown = topology.cli("status").stdout
        assert "eu-west failed over" in shown and "millions dc restore eu-west" in shown

        with httpx.Client(base_url=US_LB, timeout=15) as client:
            during = [f"during{i}" for i in range(12)]  # every shard takes writes again
            for name in during:
                sign_up(client, name)

        restored = topology.cli("dc", "restore", "eu-west")
        assert restored.returncode == 0, restored.stderr
        assert "switched back" in restored.stdout
        wait_for(lambda: topology.status()["lb-eu-west"]["state"] == "running", 20, "eu-west's LB")
        with httpx.Client(base_url=US_LB, timeout=15) as client:
            for name in (*(names if lost == 0 else []), *during):
                login = client.post("/api/login", json={"username": name, "password": PASSWORD})
                assert login.status_code == 200, (name, login.text)
                client.cookies.clear()
        unknown = topology.cli("dc", "failover", "mars")
        assert unknown.returncode == 1 and "no data center named 'mars'" in unknown.stderr
