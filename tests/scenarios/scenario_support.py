"""Running `millions scenario NAME --json` as users do, for the scenario tests."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_scenario(name: str, timeout_s: float) -> tuple[int, dict[str, Any]]:
    """(exit status, the JSON report) of one scenario run in its own process."""
    result = subprocess.run(
        [sys.executable, "-m", "millions", "scenario", name, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.stdout.strip(), result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return result.returncode, report
