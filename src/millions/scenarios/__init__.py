"""Scripted fault demonstrations: each starts a fresh topology in its own run directory,
drives load, injects faults, stops everything and returns a report.

Each scenario's topology has loopback subnets of its own (127.0.201.x and up, see
`base.SUBNET_BASES`), so scenarios can run next to each other and next to a `millions up`
on the default addresses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from millions.topology.config import MillionsConfig


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    run: Callable[[MillionsConfig, Console, bool], Awaitable[dict[str, Any]]]
    passed: Callable[[dict[str, Any]], bool]


def registry() -> dict[str, Scenario]:
    from millions.scenarios import failover, queue, reshard, stateless

    scenarios = (stateless.SCENARIO, queue.SCENARIO, reshard.SCENARIO, failover.SCENARIO)
    return {s.name: s for s in scenarios}
