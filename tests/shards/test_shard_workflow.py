"""What cleanup and reverse may do to an operation in each phase."""

from __future__ import annotations

import pytest

from millions.shards.errors import OperationError
from millions.shards.workflow import Operation, Phase, plan_cleanup, plan_reverse

NOW = 10_000.0


def operation(phase: Phase, updated_ago_s: float = 1.0) -> Operation:
    return Operation(
        id="move-1",
        kind="move",
        key_range="40-80",
        source="s1",
        target="s2",
        phase=phase,
        owner="host:1",
        started_at=NOW - 100,
        updated_at=NOW - updated_ago_s,
    )


@pytest.mark.parametrize(
    ("phase", "delete_from", "final"),
    [
        ("switched", "s1", "completed"),
        ("reversed", "s2", "cancelled"),
        ("failed", "s2", "cancelled"),
    ],
)
def test_cleanup_deletes_the_copy_that_does_not_serve(
    phase: Phase, delete_from: str, final: str
) -> None:
    plan = plan_cleanup(operation(phase), NOW)
    assert (plan.delete_from, plan.final_phase) == (delete_from, final)


def test_a_running_operation_is_left_alone_until_its_heartbeat_stops() -> None:
    with pytest.raises(OperationError, match="wait for it"):
        plan_cleanup(operation("copying"), NOW)
    with pytest.raises(OperationError, match="wait for it"):
        plan_reverse(operation("verifying"), NOW)
    plan = plan_cleanup(operation("copying", updated_ago_s=60), NOW)
    assert (plan.delete_from, plan.final_phase) == ("s2", "cancelled")


def test_an_interrupted_cutover_must_be_reversed_before_cleanup() -> None:
    with pytest.raises(OperationError, match="run reverse first"):
        plan_cleanup(operation("cutting_over", updated_ago_s=60), NOW)
    plan = plan_reverse(operation("cutting_over", updated_ago_s=60), NOW)
    assert plan.restore and (plan.from_shard, plan.to_shard) == ("s2", "s1")


def test_reverse_toggles_between_switched_and_reversed() -> None:
    back = plan_reverse(operation("switched"), NOW)
    assert (back.from_shard, back.to_shard, back.final_phase) == ("s2", "s1", "reversed")
    forth = plan_reverse(operation("reversed"), NOW)
    assert (forth.from_shard, forth.to_shard, forth.final_phase) == ("s1", "s2", "switched")
    assert not back.restore and not forth.restore


@pytest.mark.parametrize("phase", ["completed", "cancelled"])
def test_finished_operations_cannot_be_touched(phase: Phase) -> None:
    with pytest.raises(OperationError, match="already"):
        plan_cleanup(operation(phase), NOW)
    with pytest.raises(OperationError, match="already"):
        plan_reverse(operation(phase), NOW)


def test_an_operation_that_never_switched_cannot_be_reversed() -> None:
    with pytest.raises(OperationError, match="run cleanup to cancel"):
        plan_reverse(operation("failed"), NOW)


def test_operations_survive_json() -> None:
    op = operation("switched")
    op.pauses_s.append(0.004)
    op.digests["users"] = [3, 12345]
    op.note(NOW, "hello")
    again = Operation.from_json(op.to_json())
    assert again == op and again.serving == "s2" and operation("reversed").serving == "s1"
