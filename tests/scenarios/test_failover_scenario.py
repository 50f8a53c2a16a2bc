"""`millions scenario failover --json` end to end: a data center dies under load from both
regions and comes back; the DNS switches within 3 s and every user is served again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from millions.scenarios.failover import passed


@pytest.mark.timeout(300)
def test_failover_scenario_switches_dns_in_time_and_serves_everyone_again() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "millions", "scenario", "failover", "--json"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed_dc"] == "eu-west"
    assert 0 < report["dns_failover_s"] <= 3.0
    assert report["dns_failover_s"] <= report["recovery_s"] < 30
    assert report["failback_s"] >= report["dns_failback_s"] > 0
    assert report["failed_requests"] >= 0
    served = report["served_by"]
    assert any(name.startswith("web-eu-west-") for name in served)
    assert any(name.startswith("web-us-east-") for name in served)
    events = [event["event"] for event in report["events"]]
    assert events[0].startswith("every process of eu-west killed")
    assert events[-1].startswith("eu users served by eu-west again")


def test_the_failover_verdict_needs_a_dns_switch_within_three_seconds() -> None:
    assert passed({"dns_failover_s": 2.9, "requests": 10})
    assert not passed({"dns_failover_s": 3.2, "requests": 10})
    assert not passed({"dns_failover_s": 1.0, "requests": 0})
