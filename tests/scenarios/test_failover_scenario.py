"""`millions scenario failover --json` end to end: a data center dies under load from both
regions and comes back; the DNS switches within 3 s and every user is served again."""

from __future__ import annotations

import pytest
from scenario_support import run_scenario

from millions.scenarios.failover import passed


@pytest.mark.timeout(300)
def test_failover_scenario_switches_dns_in_time_and_serves_everyone_again() -> None:
    code, report = run_scenario("failover", timeout_s=280)
    assert code == 0, report
    assert report["failed_dc"] == "eu-west"
    assert 0 < report["dns_failover_s"] <= 3.0
    assert report["dns_failover_s"] <= report["recovery_s"] < 30
    assert report["failback_s"] >= report["dns_failback_s"] > 0
    assert report["failed_requests"] >= 0
    assert isinstance(report["writes_lost"], int) and report["writes_lost"] >= 0
    assert report["replication_lag_p99_ms"] >= 0
    assert report["failover_promoted"]  # eu-west's primaries moved to us-east
    assert set(report["failover_promoted"].values()) == {"us-east"}
    assert report["failback_caught_up_s"] > 0
    assert report["failback_write_pause_ms"] < 1000
    served = report["served_by"]
    assert any(name.startswith("web-eu-west-") for name in served)
    assert any(name.startswith("web-us-east-") for name in served)
    events = [event["event"] for event in report["events"]]
    assert events[0].startswith("replication lag sampled")
    assert events[1].startswith("every process of eu-west killed")
    assert any(event.startswith("replicas promoted automatically") for event in events)
    assert events[-1].startswith("eu users served by eu-west again")


def test_the_failover_verdict_needs_a_dns_switch_within_three_seconds() -> None:
    good = {"dns_failover_s": 2.9, "requests": 10, "writes_lost": 3}
    assert passed(good)
    assert not passed({**good, "dns_failover_s": 3.2})
    assert not passed({**good, "requests": 0})
    assert not passed({**good, "writes_lost": None})  # an uncounted loss is never a pass
