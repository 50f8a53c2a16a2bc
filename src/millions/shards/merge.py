"""Merging the rows of a scatter query: ORDER BY, LIMIT and count/sum/min/max across shards.

Each shard runs the same query (restricted to its own ranges); the router merges the
results. Order keys are column names, `-column` for descending; NULL sorts first in
ascending order (as in SQLite) and last in descending order, whatever the engine. Aggregates
combine one row per shard: partial counts and sums add up, minima and maxima compare, NULL
(a shard with no rows) is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

from millions.shards.rows import Row

Aggregate = Literal["count", "sum", "min", "max"]
AGGREGATES: tuple[str, ...] = ("count", "sum", "min", "max")


def parse_order_by(order_by: Sequence[str]) -> list[tuple[str, bool]]:
    """`["-created_at", "id"]` -> [("created_at", descending=True), ("id", False)]."""
    parsed: list[tuple[str, bool]] = []
    for item in order_by:
        descending = item.startswith("-")
        column = item.removeprefix("-")
        if not column:
            raise ValueError(f"order_by item {item!r} names no column")
        parsed.append((column, descending))
    return parsed


class _Ordered:
    """A sort key for one value that puts NULL first and refuses to compare mixed types."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Ordered) -> bool:
        if self.value is None or other.value is None:
            return self.value is None and other.value is not None
        try:
            return bool(self.value < other.value)
        except TypeError:
            raise ValueError(
                f"cannot order {type(self.value).__name__} against {type(other.value).__name__}"
            ) from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Ordered) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


def _sort_key(column: str) -> Callable[[Row], _Ordered]:
    return lambda row: _Ordered(row[column])


def order_rows(rows: list[Row], order_by: Sequence[str]) -> list[Row]:
    """Rows sorted by the order keys (a stable sort per key, last key first)."""
    for column, descending in reversed(parse_order_by(order_by)):
        missing = next((row for row in rows if column not in row), None)
        if missing is not None:
            raise ValueError(f"order_by column {column!r} is not in the query's result")
        rows.sort(key=_sort_key(column), reverse=descending)
    return rows


def combine_aggregates(parts: Sequence[Row], aggregate: Mapping[str, Aggregate]) -> Row:
    """One row from one partial-aggregate row per shard."""
    combined: Row = {}
    for column, function in aggregate.items():
        if function not in AGGREGATES:
            raise ValueError(
                f"aggregate {function!r} for {column!r} must be one of {', '.join(AGGREGATES)}"
            )
        values = []
        for row in parts:
            if column not in row:
                raise ValueError(f"aggregate column {column!r} is not in the query's result")
            if row[column] is not None:
                values.append(row[column])
        if function in ("count", "sum"):
            combined[column] = sum(values) if values or function == "count" else None
        elif function == "min":
            combined[column] = min(values) if values else None
        else:
            combined[column] = max(values) if values else None
    return combined


def merge_results(
    parts: Sequence[list[Row]],
    *,
    order_by: Sequence[str] = (),
    limit: int | None = None,
    aggregate: Mapping[str, Aggregate] | None = None,
) -> list[Row]:
    """The scatter query's answer from each shard's rows."""
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    if aggregate:
        for rows in parts:
            if len(rows) > 1:
                raise ValueError(
                    "an aggregate scatter query must return one row per shard "
                    f"(a shard returned {len(rows)})"
                )
        rows = [combine_aggregates([r for rows in parts for r in rows], aggregate)]
    else:
        rows = [row for rows in parts for row in rows]
    if order_by:
        rows = order_rows(rows, order_by)
    return rows if limit is None else rows[:limit]
