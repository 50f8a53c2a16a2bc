"""Merging scatter results: ORDER BY, LIMIT, aggregates."""

from __future__ import annotations

from typing import Any

import pytest

from millions.shards.merge import merge_results


def test_rows_are_concatenated_ordered_and_limited() -> None:
    parts: list[list[dict[str, Any]]] = [
        [{"id": 5, "at": 2.0}, {"id": 1, "at": 9.0}],
        [{"id": 3, "at": 2.0}],
        [],
    ]
    assert [r["id"] for r in merge_results(parts)] == [5, 1, 3]
    ordered = merge_results(parts, order_by=["-at", "id"], limit=2)
    assert [r["id"] for r in ordered] == [1, 3]
    assert merge_results(parts, order_by=["id"], limit=0) == []


def test_null_sorts_first_ascending_and_last_descending() -> None:
    parts = [[{"v": 2}, {"v": None}], [{"v": 1}]]
    assert [r["v"] for r in merge_results(parts, order_by=["v"])] == [None, 1, 2]
    assert [r["v"] for r in merge_results(parts, order_by=["-v"])] == [2, 1, None]


def test_aggregates_combine_partial_results() -> None:
    parts = [
        [{"n": 3, "total": 30, "low": 1, "high": 9}],
        [{"n": 0, "total": None, "low": None, "high": None}],
        [{"n": 2, "total": 5, "low": -4, "high": 2}],
    ]
    aggregate = {"n": "count", "total": "sum", "low": "min", "high": "max"}
    assert merge_results(parts, aggregate=aggregate) == [  # type: ignore[arg-type]
        {"n": 5, "total": 35, "low": -4, "high": 9}
    ]
    empty = [[{"n": 0, "total": None, "low": None, "high": None}]]
    assert merge_results(empty, aggregate=aggregate) == [  # type: ignore[arg-type]
        {"n": 0, "total": None, "low": None, "high": None}
    ]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"order_by": ["missing"]}, "not in the query's result"),
        ({"order_by": ["-"]}, "names no column"),
        ({"aggregate": {"id": "avg"}}, "must be one of"),
        ({"aggregate": {"nope": "sum"}}, "not in the query's result"),
        ({"limit": -1}, "limit"),
    ],
)
def test_bad_merge_requests_are_refused(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        merge_results([[{"id": 1}]], **kwargs)


def test_aggregates_need_one_row_per_shard_and_types_must_compare() -> None:
    with pytest.raises(ValueError, match="one row per shard"):
        merge_results([[{"n": 1}, {"n": 2}]], aggregate={"n": "count"})
    with pytest.raises(ValueError, match="cannot order"):
        merge_results([[{"v": 1}], [{"v": "a"}]], order_by=["v"])
