"""The geo DNS server in a running two-DC topology (127.0.77.x and 127.0.78.x, DNS on
127.0.77.53, client networks in 127.0.79.x): answers by region, drain and undrain, failover
when a DC's load balancer dies, and `millions load` resolving the site through it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from topology_harness import Topology, millions, running_topology, wait_for

pytestmark = pytest.mark.timeout(150)

DNS = ("127.0.77.53", 1053)
US_CLIENT, EU_CLIENT = "127.0.79.10", "127.0.79.200"
US_LB, EU_LB = "127.0.77.1", "127.0.78.1"
CONFIG = """
[dcs.us-east]
subnet = "127.0.77"
web = 1
clients = "127.0.79.0/25"

[dcs.eu-west]
subnet = "127.0.78"
web = 1
clients = "127.0.79.128/25"

[lb]
health_interval_s = 0.2

[supervisor]
restart_backoff_s = 0.1

[dns]
host = "127.0.77.53"
"""


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    with running_topology(tmp_path, CONFIG) as topo:
        yield topo


def answer(name: str, source: str) -> str:
    query = dns.message.make_query(name, "A")
    response = dns.query.udp(query, DNS[0], port=DNS[1], source=source, timeout=2)
    assert response.rcode() == dns.rcode.NOERROR
    return str(response.answer[0][0])


def test_dns_answers_by_region_follows_drains_and_a_dead_dc(topology: Topology) -> None:
    status = topology.status()
    assert status["dns"]["state"] == "running" and status["dns"]["dc"] == ""
    assert {name for name in status if name.startswith("worker-")} == {
        "worker-us-east-1",
        "worker-eu-west-1",
    }
    assert status["worker-eu-west-1"]["address"] == "127.0.78.101:9100"
    assert answer("www.millions.test", US_CLIENT) == US_LB
    assert answer("www.millions.test", EU_CLIENT) == EU_LB
    assert answer("cdn.millions.test", US_CLIENT) == "127.0.77.2"
    assert answer("cdn.millions.test", EU_CLIENT) == "127.0.78.2"

    drained = topology.cli("dc", "drain", "us-east")
    assert drained.returncode == 0, drained.stderr
    assert answer("www.millions.test", US_CLIENT) == EU_LB
    assert topology.cli("dc", "undrain", "us-east").returncode == 0
    assert answer("www.millions.test", US_CLIENT) == US_LB
    unknown = topology.cli("dc", "drain", "mars")
    assert unknown.returncode == 2 and "mars" in unknown.stderr

    # users resolve the site's name through the DNS, from their region's network
    load = millions("load", "--users", "4", "--duration", "2", "--json", "-c", str(topology.config))
    assert load.returncode == 0, load.stderr
    report = json.loads(load.stdout)
    assert report["failed_requests"] == 0 and report["requests"] > 20
    served = set(report["served_by"])
    assert served == {"web-us-east-1", "web-eu-west-1"}, served

    # us-east's load balancer dies: within a few checks the DNS sends us users to eu-west
    killed_at = time.monotonic()
    assert topology.cli("kill", "lb-us-east", "--no-restart").returncode == 0
    wait_for(lambda: answer("www.millions.test", US_CLIENT) == EU_LB, 10, "DNS failover")
    assert time.monotonic() - killed_at < 5.0
    assert answer("cdn.millions.test", US_CLIENT) == "127.0.78.2"
