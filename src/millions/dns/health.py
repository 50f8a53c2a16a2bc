"""Whether each data center and edge is up: a pure state machine fed by check results.

A target goes down after `fall` consecutive failed checks and up again after `rise`
consecutive passes (Route 53 and HAProxy count the same way), so one lost check does not
move traffic. Every target starts up: before the first checks have run, answering with
the configured preference beats answering with nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum


class TargetKind(Enum):
    DC = "dc"
    EDGE = "edge"


@dataclass(frozen=True, slots=True)
class TargetHealth:
    """The health of one target: `streak` counts consecutive results that disagree with
    `up` (failures while up, passes while down)."""

    up: bool = True
    streak: int = 0
    checks: int = 0
    failures: int = 0
    last_passed: bool | None = None


def observe(state: TargetHealth, passed: bool, rise: int, fall: int) -> TargetHealth:
    """The state after one more check result."""
    checks = state.checks + 1
    failures = state.failures + (0 if passed else 1)
    if passed == state.up:
        return replace(state, streak=0, checks=checks, failures=failures, last_passed=passed)
    streak = state.streak + 1
    if streak >= (rise if passed else fall):
        return TargetHealth(passed, 0, checks, failures, passed)
    return replace(state, streak=streak, checks=checks, failures=failures, last_passed=passed)


@dataclass(frozen=True, slots=True)
class HealthView:
    """Which targets are up, as the answer logic sees it (an immutable snapshot)."""

    dcs: Mapping[str, bool]
    edges: Mapping[str, bool]


class HealthBoard:
    """The health of every target; `record` returns whether a target changed state."""

    def __init__(self, dcs: list[str], edges: list[str], rise: int, fall: int) -> None:
        self.rise = rise
        self.fall = fall
        self.states: dict[TargetKind, dict[str, TargetHealth]] = {
            TargetKind.DC: {name: TargetHealth() for name in dcs},
            TargetKind.EDGE: {name: TargetHealth() for name in edges},
        }

    def record(self, kind: TargetKind, name: str, passed: bool) -> bool:
        states = self.states[kind]
        before = states[name]
        after = observe(before, passed, self.rise, self.fall)
        states[name] = after
        return after.up != before.up

    def view(self) -> HealthView:
        return HealthView(
            dcs={name: s.up for name, s in self.states[TargetKind.DC].items()},
            edges={name: s.up for name, s in self.states[TargetKind.EDGE].items()},
        )
