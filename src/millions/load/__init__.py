"""Simulated users driving the topology, with honest numbers.

`LoadRunner(LoadConfig(...)).run()` signs users up, drives a weighted mix of page views,
API calls and uploads (closed loop or open-loop paced) and returns a `LoadReport`:
requests, failures by kind, users who lost their session, latency percentiles and which
server answered. `run_with_progress` shows it live; `render_report` prints the result.
"""

from millions.load.config import ACTIONS, DEFAULT_MIX, LoadConfig
from millions.load.histogram import LatencyHistogram
from millions.load.progress import render_report, run_with_progress
from millions.load.runner import LoadRunner
from millions.load.stats import ActionStats, LoadReport, LoadSnapshot
from millions.load.targets import target_for_user

__all__ = [
    "ACTIONS",
    "DEFAULT_MIX",
    "ActionStats",
    "LatencyHistogram",
    "LoadConfig",
    "LoadReport",
    "LoadRunner",
    "LoadSnapshot",
    "render_report",
    "run_with_progress",
    "target_for_user",
]
