"""`millions scenario stateless --json` end to end: the design's promise is zero failures."""

from __future__ import annotations

import subprocess
import sys

import pytest
from scenario_support import run_scenario


@pytest.mark.timeout(240)
def test_stateless_scenario_reports_zero_failures_and_zero_logged_out_users() -> None:
    code, report = run_scenario("stateless", timeout_s=220)
    assert code == 0, report
    for field in ("requests", "failed_requests", "logged_out_users", "p50_ms", "p99_ms"):
        assert field in report
    assert report["failed_requests"] == 0, report["errors"]
    assert report["logged_out_users"] == 0
    assert report["requests"] > 1000
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    served = report["served_by"]
    # the killed server came back and the two added ones took traffic before draining
    assert {"web-us-east-1", "web-us-east-3", "web-us-east-4"} <= set(served)
    assert [e["event"].split()[0] for e in report["events"]] == [
        "SIGKILL",
        "web-us-east-1",
        "us-east",
        "us-east",
    ]


def test_unknown_scenario_lists_the_available_ones() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "millions", "scenario", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "available: stateless" in result.stderr
