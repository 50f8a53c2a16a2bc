"""A resharding operation's record and the rules for what may happen to it next.

One operation (a split or a move of one key range from a source to a target shard) runs at
a time, Vitess-workflow style: copy, catch up, verify, cut over (`switched`: the target
serves the range). Until `cleanup` the source keeps its copy, so `reverse` can switch back
(`reversed`) and forth again. `cleanup` deletes the copy that no longer serves and ends the
operation (`completed` when the target serves, `cancelled` when the source does). The
record lives in the metadata store, so any process can see it and, if the process running
it died (no heartbeat for `STALE_AFTER_S`), cancel or reverse it.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from millions.shards.errors import OperationError

Phase = Literal[
    "copying",
    "catching_up",
    "verifying",
    "cutting_over",
    "switched",
    "reversed",
    "failed",
    "completed",
    "cancelled",
]
RUNNING: frozenset[str] = frozenset({"copying", "catching_up", "verifying", "cutting_over"})
FINISHED: frozenset[str] = frozenset({"completed", "cancelled"})
STALE_AFTER_S = 15.0


def this_process() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class Operation:
    """The persisted state of one split or move."""

    id: str
    kind: Literal["split", "move"]
    key_range: str
    source: str
    target: str
    phase: Phase
    owner: str
    started_at: float
    updated_at: float
    created_target: bool = False
    start_seq: int = 0
    switch_seq: int = 0
    rows_to_copy: int = 0
    rows_copied: int = 0
    changes_applied: int = 0
    digests: dict[str, list[int]] = field(default_factory=dict)
    pauses_s: list[float] = field(default_factory=list)
    map_version: int = 0
    error: str = ""
    events: list[list[Any]] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.phase not in FINISHED

    @property
    def serving(self) -> str:
        """The shard that serves the range now (by this operation's record)."""
        return self.target if self.phase in ("switched", "completed") else self.source

    def is_stale(self, now: float, stale_after_s: float = STALE_AFTER_S) -> bool:
        """True when a running phase has had no heartbeat for `stale_after_s`."""
        return self.phase in RUNNING and now - self.updated_at > stale_after_s

    def note(self, now: float, event: str) -> None:
        self.events.append([round(now, 3), event])

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Operation:
        data = json.loads(text)
        return cls(**data)


@dataclass(frozen=True)
class CleanupPlan:
    """Delete `key_range` rows from `delete_from`, then end the operation in `final_phase`."""

    delete_from: str
    final_phase: Phase


@dataclass(frozen=True)
class ReversePlan:
    """Switch the range from `from_shard` to `to_shard` (or, when `restore`, give an
    interrupted cutover's range back to the source)."""

    from_shard: str
    to_shard: str
    restore: bool
    final_phase: Phase


def _running_elsewhere(op: Operation, now: float, stale_after_s: float) -> OperationError:
    age = now - op.updated_at
    return OperationError(
        f"operation {op.id} ({op.kind} {op.key_range}) is {op.phase} in {op.owner}, "
        f"last heard {age:.0f}s ago; wait for it (it can be taken over after "
        f"{stale_after_s:.0f}s without a heartbeat)"
    )


def plan_cleanup(op: Operation, now: float, stale_after_s: float = STALE_AFTER_S) -> CleanupPlan:
    if not op.active:
        raise OperationError(f"operation {op.id} is already {op.phase}")
    if op.phase == "switched":
        return CleanupPlan(op.source, "completed")
    if op.phase in ("reversed", "failed"):
        return CleanupPlan(op.target, "cancelled")
    if not op.is_stale(now, stale_after_s):
        raise _running_elsewhere(op, now, stale_after_s)
    if op.phase == "cutting_over":
        raise OperationError(
            f"operation {op.id} was interrupted during its cutover; run reverse first "
            "to give the range back to the source"
        )
    return CleanupPlan(op.target, "cancelled")


def plan_reverse(op: Operation, now: float, stale_after_s: float = STALE_AFTER_S) -> ReversePlan:
    if not op.active:
        raise OperationError(f"operation {op.id} is already {op.phase}; nothing to reverse")
    if op.phase == "switched":
        return ReversePlan(op.target, op.source, restore=False, final_phase="reversed")
    if op.phase == "reversed":
        return ReversePlan(op.source, op.target, restore=False, final_phase="switched")
    if op.phase in RUNNING and not op.is_stale(now, stale_after_s):
        raise _running_elsewhere(op, now, stale_after_s)
    if op.phase == "cutting_over":
        return ReversePlan(op.target, op.source, restore=True, final_phase="reversed")
    raise OperationError(
        f"operation {op.id} never switched the map ({op.phase}); nothing to reverse — "
        "run cleanup to cancel it"
    )
