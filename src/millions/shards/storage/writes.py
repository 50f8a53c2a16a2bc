"""Row writes and changes as statements and change-log records, shared by both engines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from millions.shards import statements
from millions.shards.errors import SchemaError
from millions.shards.keyspace import from_stored_hash, stored_hash
from millions.shards.rows import Row, encode_row
from millions.shards.schema import HASH_COLUMN, ShardSchema, TableSpec
from millions.shards.storage.base import Change, RowWrite

ChangeRecord = tuple[int, str, str, str, str | None, float]


def pk_values(table: TableSpec, pk: Mapping[str, Any]) -> list[Any]:
    """The primary key values in declaration order; SchemaError when a column is missing."""
    missing = [c for c in table.primary_key if c not in pk]
    extra = [c for c in pk if c not in table.primary_key]
    if missing or extra:
        raise SchemaError(
            f"{table.name}: the primary key is ({', '.join(table.primary_key)}), "
            f"got ({', '.join(pk)})"
        )
    return [pk[c] for c in table.primary_key]


def write_statement(write: RowWrite) -> tuple[str, list[Any]]:
    """The statement (with `$n` placeholders) and parameters of one row write."""
    table = write.table
    if write.op in ("insert", "upsert"):
        columns = list(write.values)
        build = statements.insert if write.op == "insert" else statements.upsert
        return build(table, columns), [write.values[c] for c in columns]
    if write.op == "update":
        columns = list(write.values)
        return statements.update(table, columns), [
            *(write.values[c] for c in columns),
            *pk_values(table, write.pk),
        ]
    return statements.delete(table), pk_values(table, write.pk)


def change_record(write: RowWrite, image: Row, at: float) -> ChangeRecord:
    """(key_hash, table, op, pk, row image, at) of a change-log row for a row written."""
    pk = {c: image[c] for c in write.table.primary_key}
    row_text = None if write.op == "delete" else encode_row(image)
    return (
        stored_hash(write.keyspace_id),
        write.table.name,
        write.op,
        encode_row(pk),
        row_text,
        at,
    )


def replay_write(schema: ShardSchema, change: Change) -> RowWrite:
    """The write that brings another copy of the row to the state after `change`."""
    table = schema.table(change.table)
    if change.op == "delete":
        return RowWrite("delete", table, change.keyspace_id, pk=change.pk)
    if change.row is None:
        raise SchemaError(f"change {change.seq} ({change.op}) has no row image")
    return RowWrite("upsert", table, change.keyspace_id, values=change.row)


def copy_write(table: TableSpec, row: Row) -> RowWrite:
    """The write copying `row` (as read from another shard) to this one."""
    return RowWrite("upsert", table, from_stored_hash(int(row[HASH_COLUMN])), values=row)


def pk_after(table: TableSpec, rows: Sequence[Row]) -> list[Any] | None:
    """The primary key of the last row of a scan page (where the next page starts)."""
    return [rows[-1][c] for c in table.primary_key] if rows else None
