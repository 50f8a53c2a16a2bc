"""Scripted fault demonstrations: each starts a fresh topology in its own run directory,
drives load, injects faults, stops everything and returns a report.

Scenario topologies use their own loopback subnets (127.0.201.x, 127.0.202.x, ...), so
a scenario can run next to a `millions up` on the default addresses.
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
    from millions.scenarios import stateless

    return {s.name: s for s in (stateless.SCENARIO,)}
