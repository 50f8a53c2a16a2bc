"""Keyspace ranges: which slice of the 64-bit hash space of shard keys a shard owns.

A shard key (a user id, a username) hashes to a 64-bit *keyspace id*; shards own ranges of
keyspace ids, never individual keys, so a range can move or split without looking at keys.
Ranges are named the Vitess way: `start-end`, each bound the hex of the leading bytes of a
keyspace id, an empty bound meaning the start (0) or the end (2**64) of the keyspace. `-80`
is the lower half, `80-` the upper half, `40-80` a quarter and `-` the whole keyspace.

Keys hash with BLAKE2b (8-byte digest): stable across processes, machines and Python
versions, unlike `hash()`. An int key hashes as its decimal text, so `7` and `"7"` (a user id
taken from a URL) land on the same shard.

Databases store keyspace ids as signed 64-bit integers (`stored_hash`): shifting by 2**63
keeps the order, so a range is still one `BETWEEN`-style predicate in SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

KEYSPACE_END = 1 << 64
SIGNED_OFFSET = 1 << 63
HEX_DIGITS = 16

ShardKey = int | str


class KeyRangeError(ValueError):
    """A key range name or bound that does not describe a range of the keyspace."""


def key_text(key: ShardKey) -> str:
    """The canonical text of a shard key: what is hashed, cached and reported."""
    if isinstance(key, bool) or not isinstance(key, int | str):
        raise TypeError(f"a shard key is an int or a str, not {type(key).__name__}")
    return str(key)


@functools.lru_cache(maxsize=1 << 16, typed=True)
def key_hash(key: ShardKey) -> int:
    """The keyspace id of `key`: an unsigned 64-bit integer. Remembered for the most
    recent keys: every routed operation hashes its key, and the hash costs more than the
    rest of the routing decision (`typed`: True and 1 stay apart, so a bool is refused)."""
    digest = hashlib.blake2b(key_text(key).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def stored_hash(keyspace_id: int) -> int:
    """The signed 64-bit form of a keyspace id, as kept in a `key_hash` column."""
    return keyspace_id - SIGNED_OFFSET


def from_stored_hash(value: int) -> int:
    """The keyspace id of a stored (signed) `key_hash` value."""
    return value + SIGNED_OFFSET


def _bound_name(value: int) -> str:
    if value in (0, KEYSPACE_END):
        return ""
    text = f"{value:016x}"
    while text.endswith("00"):
        text = text[:-2]
    return text


def _parse_bound(text: str, *, empty: int, side: str) -> int:
    if not text:
        return empty
    if len(text) % 2 or len(text) > HEX_DIGITS:
        raise KeyRangeError(
            f"{side} bound {text!r} must be whole bytes of hex, 2 to 16 digits (e.g. 40 or 4080)"
        )
    try:
        value = int(text, 16)
    except ValueError:
        raise KeyRangeError(f"{side} bound {text!r} is not hex") from None
    return value << (4 * (HEX_DIGITS - len(text)))


def parse_keyspace_id(text: str) -> int:
    """A keyspace id written like a range bound: leading hex bytes (`60` is 0x60 << 56)."""
    value = text.strip().lower().removeprefix("0x")
    if not value:
        raise KeyRangeError("a keyspace id needs at least one byte of hex, e.g. 60")
    return _parse_bound(value, empty=0, side="keyspace id")


@dataclass(frozen=True, order=True)
class KeyRange:
    """The keyspace ids `start <= id < end`; `end` may be 2**64 (the end of the keyspace)."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end <= KEYSPACE_END:
            raise KeyRangeError(
                f"not a key range: start {self.start:#x} must be below end {self.end:#x}"
                " within 0..2**64"
            )

    @classmethod
    def parse(cls, text: str) -> KeyRange:
        """A range from its Vitess-style name such as `-80`, `80-`, `40-80` or `-`."""
        name = text.strip().lower()
        if name.count("-") != 1:
            raise KeyRangeError(f"key range {text!r} must look like -80, 80-, 40-80 or -")
        low, high = name.split("-")
        start = _parse_bound(low, empty=0, side="start")
        end = _parse_bound(high, empty=KEYSPACE_END, side="end")
        if start >= end:
            raise KeyRangeError(f"key range {text!r} is empty: its start is not below its end")
        return cls(start, end)

    @classmethod
    def full(cls) -> KeyRange:
        return cls(0, KEYSPACE_END)

    @functools.cached_property
    def name(self) -> str:
        """Computed once: the router names a key's range on every sampled operation."""
        return f"{_bound_name(self.start)}-{_bound_name(self.end)}"

    def __str__(self) -> str:
        return self.name

    @property
    def width(self) -> int:
        return self.end - self.start

    def contains(self, keyspace_id: int) -> bool:
        return self.start <= keyspace_id < self.end

    def covers(self, other: KeyRange) -> bool:
        """True when every id of `other` is in this range."""
        return self.start <= other.start and other.end <= self.end

    def overlaps(self, other: KeyRange) -> bool:
        return self.start < other.end and other.start < self.end

    def split(self, at: int | None = None) -> tuple[KeyRange, KeyRange]:
        """Two adjacent ranges `[start, at)` and `[at, end)`; `at` defaults to the middle."""
        if at is None:
            at = (self.start + self.end) // 2
        if not self.start < at < self.end:
            raise KeyRangeError(f"cannot split {self.name} at {at:#x}: not strictly inside it")
        return KeyRange(self.start, at), KeyRange(at, self.end)

    def stored_bounds(self) -> tuple[int, int | None]:
        """The range as signed `key_hash` bounds: `low <= key_hash < high` (None: no upper)."""
        high = None if self.end == KEYSPACE_END else stored_hash(self.end)
        return stored_hash(self.start), high


def normalize(ranges: Iterable[KeyRange]) -> tuple[KeyRange, ...]:
    """Sorted ranges with overlapping or adjacent ones merged."""
    merged: list[KeyRange] = []
    for item in sorted(ranges):
        if merged and item.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = KeyRange(last.start, max(last.end, item.end))
        else:
            merged.append(item)
    return tuple(merged)


def add_range(ranges: Sequence[KeyRange], extra: KeyRange) -> tuple[KeyRange, ...]:
    """The union of `ranges` and `extra`, normalized."""
    return normalize([*ranges, extra])


def subtract_range(ranges: Sequence[KeyRange], removed: KeyRange) -> tuple[KeyRange, ...]:
    """`ranges` without the ids of `removed`, normalized."""
    kept: list[KeyRange] = []
    for item in ranges:
        if not item.overlaps(removed):
            kept.append(item)
            continue
        if item.start < removed.start:
            kept.append(KeyRange(item.start, removed.start))
        if removed.end < item.end:
            kept.append(KeyRange(removed.end, item.end))
    return normalize(kept)


def covers_all(ranges: Sequence[KeyRange], target: KeyRange) -> bool:
    """True when the union of `ranges` contains every id of `target`."""
    return any(item.covers(target) for item in normalize(ranges))


def even_split(count: int) -> tuple[KeyRange, ...]:
    """The keyspace cut into `count` adjacent ranges of (nearly) equal width."""
    if count < 1:
        raise ValueError("at least one range is needed")
    bounds = [i * KEYSPACE_END // count for i in range(count + 1)]
    return tuple(KeyRange(low, high) for low, high in itertools.pairwise(bounds))
