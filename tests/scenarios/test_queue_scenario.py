"""`millions scenario queue --json` end to end (nothing lost, no effect twice), and the
scenario's pure parts: the log records it counts, the images it uploads, its answers."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image
from scenario_support import run_scenario

from millions.scenarios.queue import (
    EffectRecords,
    acknowledged_id,
    base_jpeg,
    percentile_ms,
    read_effect_records,
    unique_jpeg,
)

REPORT_FIELDS = (
    "published",
    "processed",
    "lost",
    "duplicate_effects",
    "p50_ms",
    "p99_ms",
    "peak_depth",
    "worker_counts",
)


@pytest.mark.timeout(150)
def test_queue_scenario_loses_nothing_and_applies_no_effect_twice() -> None:
    code, report = run_scenario("queue", timeout_s=140)
    assert code == 0, report
    for field in REPORT_FIELDS:
        assert field in report
    assert report["lost"] == 0
    assert report["duplicate_effects"] == 0
    assert report["published"] >= 20
    assert report["processed"] == report["published"]
    assert report["effects_applied"] > 0
    assert 0 < report["p50_ms"] <= report["p99_ms"]
    assert report["peak_depth"] >= 0
    assert report["queue_at_end"]["dead"] == 0
    assert report["in_flight_at_kill"] >= 1
    # the web servers were down for a while: the client saw it and tried again
    assert report["unacknowledged"] > 0
    assert report["upload_attempts"] > report["published"]
    assert all({"t_s", "supervised", "alive"} <= set(c) for c in report["worker_counts"])
    events = [e["event"] for e in report["events"]]
    victim = events[1].split()[1]
    assert events[1].startswith(f"SIGKILL {victim}") and victim.startswith("worker-")
    assert events[2].startswith(f"{victim} restarted")
    # the killed worker's task came back and was handled before everything was killed
    assert events[3] == "a task handled on a redelivery after the worker kill"
    assert report["redelivered_after_worker_kill"] >= 1
    assert events[4].startswith("SIGKILL every web server")
    assert events[5].startswith("every web server and worker restarted")
    assert len(events) == 8


def record(message: str, photo_id: object, attempt: int = 1, ts: float = 1.0) -> str:
    return json.dumps({"ts": ts, "msg": message, "photo_id": photo_id, "attempt": attempt})


def test_effects_beyond_the_first_per_photo_are_duplicates() -> None:
    records = read_effect_records(
        [
            record("photo processed", 1),
            record("photo processed", 2),
            record("photo processed", 2, attempt=2, ts=5.0),
            record("photo processed", 3),
            record("photo processed", 3),
            record("photo processed", 3),
            record("photo needed no processing", 1, attempt=3, ts=7.0),
            record("worker started", None),
            json.dumps({"msg": "task failed", "message_id": "m1", "attempt": 1}),
            '{"ts": 1.0, "msg": "photo proc',  # cut short by SIGKILL
            "",
        ]
    )
    assert records.effects == {1: 1, 2: 2, 3: 3}
    assert records.duplicate_effects == 3
    assert records.no_ops == 1
    assert records.redelivered_at == [5.0, 7.0]
    assert records.unreadable == 1
    assert records.task_failures == 1


def test_inline_processing_by_a_web_server_is_counted_apart() -> None:
    new_style = json.dumps(
        {"msg": "queue unavailable; doing the work inline", "queue": "photo.process", "key": "8"}
    )
    records = read_effect_records(
        [record("queue unavailable; processing the photo inline", 9), new_style], EffectRecords()
    )
    assert records.inline == {9: 1, 8: 1}
    assert records.effects == {}


JSON_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
LOG_ENTRIES = st.fixed_dictionaries(
    {
        "msg": st.sampled_from(
            ["photo processed", "photo needed no processing", "queue unavailable; x"]
        )
        | st.text()
    },
    optional={
        "photo_id": JSON_VALUES,
        "attempt": JSON_VALUES,
        "ts": JSON_VALUES,
        "queue": st.just("photo.process") | st.text(),
        "key": st.text(),
    },
)


@given(st.lists(st.text() | LOG_ENTRIES.map(json.dumps)))
def test_any_log_text_is_counted_without_raising(lines: list[str]) -> None:
    records = read_effect_records(lines)
    assert records.duplicate_effects >= 0
    assert all(isinstance(photo_id, int) for photo_id in records.effects)


def test_unique_jpegs_decode_to_the_same_pixels_with_different_bytes() -> None:
    base = base_jpeg(64)
    first, second = unique_jpeg(base, "a/1"), unique_jpeg(base, "a/2")
    assert first != second
    with Image.open(io.BytesIO(first)) as one, Image.open(io.BytesIO(second)) as two:
        assert one.tobytes() == two.tobytes()
        assert one.size == (64, 64)
    with pytest.raises(ValueError):
        unique_jpeg(b"\x89PNG", "x")


def test_only_a_201_with_an_integer_id_is_an_acknowledgement() -> None:
    assert acknowledged_id(201, b'{"id": 7, "processed": false}') == 7
    assert acknowledged_id(200, b'{"id": 7}') is None
    assert acknowledged_id(201, b'{"id": "7"}') is None
    assert acknowledged_id(201, b'{"id": true}') is None
    assert acknowledged_id(201, b"<html>") is None
    assert acknowledged_id(None, b"") is None


def test_percentiles_are_nearest_rank_in_milliseconds() -> None:
    samples = [i / 1000 for i in range(1, 101)]
    assert percentile_ms(samples, 50) == 50.0
    assert percentile_ms(samples, 99) == 99.0
    assert percentile_ms([], 50) == 0.0
