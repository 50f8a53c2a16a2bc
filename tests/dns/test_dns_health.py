"""The health state machine: down after `fall` failures in a row, up after `rise` passes."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from millions.dns.health import HealthBoard, TargetHealth, TargetKind, observe


def run(results: list[bool], rise: int = 2, fall: int = 2) -> list[bool]:
    state = TargetHealth()
    ups = []
    for passed in results:
        state = observe(state, passed, rise, fall)
        ups.append(state.up)
    return ups


def test_two_failures_take_a_target_down_and_two_passes_bring_it_back() -> None:
    assert run([False]) == [True]
    assert run([False, False]) == [True, False]
    assert run([False, True, False, True]) == [True] * 4  # never two in a row
    assert run([False, False, True, False, True, True]) == [True, False, False, False, False, True]


def test_counters() -> None:
    state = TargetHealth()
    for passed in [True, False, False, True]:
        state = observe(state, passed, rise=2, fall=2)
    assert replace(state) == TargetHealth(
        up=False, streak=1, checks=4, failures=2, last_passed=True
    )


@given(
    results=st.lists(st.booleans(), max_size=60),
    rise=st.integers(1, 5),
    fall=st.integers(1, 5),
)
def test_matches_a_reference_model(results: list[bool], rise: int, fall: int) -> None:
    """A target's state flips exactly when the last `fall` (or `rise`) results since the
    last flip all disagree with it."""
    up = True
    since_flip: list[bool] = []
    expected = []
    for passed in results:
        since_flip.append(passed)
        needed = rise if not up else fall
        tail = since_flip[-needed:]
        if len(tail) == needed and all(r != up for r in tail):
            up = not up
            since_flip = []
        expected.append(up)
    assert run(results, rise, fall) == expected


def test_board_reports_changes_and_views() -> None:
    board = HealthBoard(["us-east", "eu-west"], ["edge-us"], rise=2, fall=2)
    assert board.view().dcs == {"us-east": True, "eu-west": True}
    assert not board.record(TargetKind.DC, "us-east", False)
    assert board.record(TargetKind.DC, "us-east", False)
    assert not board.record(TargetKind.DC, "us-east", False)
    assert board.view().dcs == {"us-east": False, "eu-west": True}
    assert board.view().edges == {"edge-us": True}
    assert not board.record(TargetKind.EDGE, "edge-us", True)
