"""`millions scenario reshard --json` end to end: 2 → 4 shards online under writes, with
nothing lost, duplicated or misplaced, and short write pauses."""

from __future__ import annotations

import pytest
from scenario_support import run_scenario

from millions.scenarios.reshard import passed


@pytest.mark.timeout(240)
def test_reshard_scenario_grows_to_four_shards_losing_and_duplicating_nothing() -> None:
    code, report = run_scenario("reshard", timeout_s=220)
    assert code == 0, report
    required = ("acknowledged", "found", "lost", "duplicated", "client_errors")
    for field in (*required, "max_write_pause_ms", "duration_s"):
        assert field in report
    assert report["acknowledged"] >= 300
    assert report["found"] == report["acknowledged"]
    assert (report["lost"], report["duplicated"], report["client_errors"]) == (0, 0, 0)
    assert report["misplaced_rows"] == 0 and report["duplicated_rows"] == 0
    assert 0 < report["max_write_pause_ms"] <= 1000
    assert report["shards_after"] == 4
    assert [(op["from"], op["to"]) for op in report["operations"]] == [("s1", "s3"), ("s2", "s4")]
    assert all(op["rows_copied"] > 0 for op in report["operations"])
    assert report["rows_audited"] > report["acknowledged"]  # photos, owners, feeds, users...


def test_the_reshard_verdict_fails_on_any_loss_or_long_pause() -> None:
    good = {
        "acknowledged": 10,
        "lost": 0,
        "duplicated": 0,
        "client_errors": 0,
        "misplaced_rows": 0,
        "duplicated_rows": 0,
        "shards_after": 4,
        "max_write_pause_ms": 12.0,
    }
    assert passed(good)
    for key, bad in (
        ("lost", 1),
        ("duplicated", 1),
        ("client_errors", 2),
        ("misplaced_rows", 1),
        ("duplicated_rows", 3),
        ("shards_after", 3),
        ("max_write_pause_ms", 1000.1),
        ("acknowledged", 0),
    ):
        assert not passed({**good, key: bad}), key
