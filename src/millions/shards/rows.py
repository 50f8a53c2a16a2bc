"""Row images as text, and row checksums: what the change log, the cache and VDiff share.

A row is a dict of column -> value where values are NULL, bool, int, float, str or bytes
(the types SQLite and PostgreSQL both return for the columns sharded tables use). Bytes are
tagged (`{"$b": base64}`) since JSON has no bytes; a column value is never a dict, so the tag
is unambiguous.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from millions.shards.errors import SchemaError

Row = dict[str, Any]
CHECKSUM_MODULUS = 1 << 64


def _encode_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    raise SchemaError(
        f"a sharded row holds a {type(value).__name__}; use NULL, int, float, str or bytes"
    )


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        return base64.b64decode(value["$b"])
    return value


def encode_row(row: Mapping[str, Any]) -> str:
    """A row as compact JSON text."""
    return json.dumps(
        {column: _encode_value(value) for column, value in row.items()},
        separators=(",", ":"),
        allow_nan=False,
    )


def decode_row(text: str) -> Row:
    return {column: _decode_value(value) for column, value in json.loads(text).items()}


def encode_rows(rows: Iterable[Mapping[str, Any]]) -> bytes:
    """A query result as bytes (the read cache's value)."""
    return json.dumps(
        [{column: _encode_value(value) for column, value in row.items()} for row in rows],
        separators=(",", ":"),
        allow_nan=False,
    ).encode("utf-8")


def decode_rows(data: bytes) -> list[Row]:
    return [
        {column: _decode_value(value) for column, value in row.items()} for row in json.loads(data)
    ]


def row_checksum(row: Mapping[str, Any]) -> int:
    """A 64-bit digest of a row, independent of column order."""
    text = json.dumps(
        sorted((column, _encode_value(value)) for column, value in row.items()),
        separators=(",", ":"),
        allow_nan=False,
    )
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class RangeDigest:
    """Row count and an order-independent checksum (sum of row digests mod 2**64)."""

    __slots__ = ("checksum", "rows")

    def __init__(self, rows: int = 0, checksum: int = 0) -> None:
        self.rows = rows
        self.checksum = checksum

    def add(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        self.checksum = (self.checksum + row_checksum(row)) % CHECKSUM_MODULUS

    def as_pair(self) -> tuple[int, int]:
        return self.rows, self.checksum

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RangeDigest) and self.as_pair() == other.as_pair()

    def __hash__(self) -> int:
        return hash(self.as_pair())

    def __repr__(self) -> str:
        return f"RangeDigest(rows={self.rows}, checksum={self.checksum:#018x})"
