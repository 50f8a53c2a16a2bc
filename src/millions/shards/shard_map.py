"""The shard map: which shard owns each range of the keyspace, at a version.

A map tiles the whole keyspace with ranges, each owned by one named shard (a shard may own
several). Adjacent ranges of the same shard are merged, so a shard's ranges read the same
whichever way they were reached (move `40-80` away and back and the owner has `-80` again).
Every change makes a new map with the version bumped; the metadata store keeps them all.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from millions.shards.keyspace import KEYSPACE_END, KeyRange, KeyRangeError, even_split


class ShardMapError(ValueError):
    """A map that does not tile the keyspace, or a change that cannot be made to it."""


def _merge_same_owner(entries: Sequence[tuple[KeyRange, str]]) -> tuple[tuple[KeyRange, str], ...]:
    merged: list[tuple[KeyRange, str]] = []
    for key_range, shard in entries:
        if merged and merged[-1][1] == shard and merged[-1][0].end == key_range.start:
            merged[-1] = (KeyRange(merged[-1][0].start, key_range.end), shard)
        else:
            merged.append((key_range, shard))
    return tuple(merged)


@dataclass(frozen=True)
class ShardMap:
    """Ranges tiling the keyspace, each with its owning shard, at `version` (>= 1)."""

    version: int
    entries: tuple[tuple[KeyRange, str], ...]
    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.version < 1:
            raise ShardMapError(f"map version must be >= 1, got {self.version}")
        entries = _merge_same_owner(sorted(self.entries))
        position = 0
        for key_range, shard in entries:
            if not shard:
                raise ShardMapError(f"range {key_range} has no shard")
            if key_range.start != position:
                problem = "overlaps" if key_range.start < position else "leaves a gap before"
                raise ShardMapError(f"range {key_range} {problem} the range before it")
            position = key_range.end
        if position != KEYSPACE_END:
            raise ShardMapError("the ranges do not reach the end of the keyspace")
        object.__setattr__(self, "entries", entries)
        object.__setattr__(self, "_starts", tuple(r.start for r, _ in entries))

    @classmethod
    def initial(cls, shards: Sequence[str]) -> ShardMap:
        """Version 1: the keyspace split evenly over `shards`, in order."""
        if not shards:
            raise ShardMapError("at least one shard is needed")
        if len(set(shards)) != len(shards):
            raise ShardMapError("shard names must be unique")
        return cls(1, tuple(zip(even_split(len(shards)), shards, strict=True)))

    def entry_for(self, keyspace_id: int) -> tuple[KeyRange, str]:
        """The (range, shard) that owns `keyspace_id`."""
        if not 0 <= keyspace_id < KEYSPACE_END:
            raise ShardMapError(f"{keyspace_id:#x} is not a 64-bit keyspace id")
        return self.entries[bisect.bisect_right(self._starts, keyspace_id) - 1]

    def shard_for(self, keyspace_id: int) -> str:
        return self.entry_for(keyspace_id)[1]

    def shards(self) -> tuple[str, ...]:
        """Shards that own at least one range, in keyspace order of their first range."""
        return tuple(dict.fromkeys(shard for _, shard in self.entries))

    def ranges_of(self, shard: str) -> tuple[KeyRange, ...]:
        return tuple(key_range for key_range, owner in self.entries if owner == shard)

    def owner_of(self, key_range: KeyRange) -> str:
        """The one shard owning all of `key_range`; ShardMapError when it spans several."""
        entry_range, shard = self.entry_for(key_range.start)
        if not entry_range.covers(key_range):
            raise ShardMapError(
                f"range {key_range} spans more than one shard's range; "
                f"{entry_range} is owned by {shard}"
            )
        return shard

    def reassign(self, key_range: KeyRange, to_shard: str) -> ShardMap:
        """The next version, with `key_range` (inside one owner's range) owned by `to_shard`."""
        self.owner_of(key_range)
        entries: list[tuple[KeyRange, str]] = []
        for entry_range, shard in self.entries:
            if not entry_range.overlaps(key_range):
                entries.append((entry_range, shard))
                continue
            if entry_range.start < key_range.start:
                entries.append((KeyRange(entry_range.start, key_range.start), shard))
            entries.append((key_range, to_shard))
            if key_range.end < entry_range.end:
                entries.append((KeyRange(key_range.end, entry_range.end), shard))
        return ShardMap(self.version + 1, tuple(entries))

    def bumped(self) -> ShardMap:
        """The next version with the same assignment (releases routers waiting on a fence)."""
        return ShardMap(self.version + 1, self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "ranges": {key_range.name: shard for key_range, shard in self.entries},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShardMap:
        try:
            version = data["version"]
            ranges = data["ranges"]
            if not isinstance(version, int) or not isinstance(ranges, dict):
                raise ShardMapError("a map needs an int version and a ranges object")
            entries = tuple((KeyRange.parse(name), str(shard)) for name, shard in ranges.items())
        except (KeyError, TypeError, KeyRangeError) as exc:
            raise ShardMapError(f"not a shard map: {exc}") from None
        return cls(version, entries)

    @classmethod
    def from_json(cls, text: str) -> ShardMap:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ShardMapError(f"not a shard map: {exc}") from None
        if not isinstance(data, dict):
            raise ShardMapError("not a shard map: expected a JSON object")
        return cls.from_dict(data)
