"""Where each shard's copies live, one per data center, and which copy is the primary.

The placement is a versioned record in the metadata store (like the shard map), so every
router, replicator and operator agrees which copy takes writes. The rules for changing it
— a promotion after a DC failure, a rejoin, a switchover — are pure functions here; the
drivers in `replicator` and `failover` do the I/O around them.

A shard's first copy is the registered one (`<shard dir>/<name>.sqlite3`, schema
`<prefix><name>`); its copies in the other data centers sit beside it
(`<shard dir>/<dc>/<name>.sqlite3`, schema `<prefix><name>__<dc>`).

Copy states:

- `primary`: takes routed writes (its fence owns the shard's ranges);
- `replica`: caught up with the primary's change log at least once; serves replica reads and
  may be promoted;
- `syncing`: being filled (snapshot copy + catch-up) and not yet caught up: neither;
- `failed`: in a data center that failed; its unreplicated tail was counted as lost at the
  promotion, and it waits for `rejoin` to become `syncing` again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from millions.shards.storage.base import ShardLocation

CopyState = Literal["primary", "replica", "syncing", "failed"]
COPY_STATES: tuple[CopyState, ...] = ("primary", "replica", "syncing", "failed")


class PlacementError(ValueError):
    """A placement change that the rules forbid (no such DC, nothing to promote...)."""


def replica_location(location: ShardLocation, dc: str) -> ShardLocation:
    """Where the copy of the shard registered at `location` lives in data center `dc`."""
    if location.engine == "sqlite":
        path = Path(location.path)
        return replace(location, path=str(path.parent / dc / path.name))
    suffix = "__" + "".join(c if c.isalnum() else "_" for c in dc.lower())
    return replace(location, schema=location.schema + suffix)


@dataclass(frozen=True)
class ShardCopy:
    """One data center's copy of a shard."""

    dc: str
    location: ShardLocation
    state: CopyState

    def to_dict(self) -> dict[str, Any]:
        return {"dc": self.dc, "location": self.location.to_dict(), "state": self.state}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardCopy:
        state = data["state"]
        if state not in COPY_STATES:
            raise PlacementError(f"unknown copy state {state!r}")
        return cls(str(data["dc"]), ShardLocation.from_dict(data["location"]), state)


@dataclass(frozen=True)
class ShardPlacement:
    """A shard's copies. `epoch` is the placement version at which the current primary
    became primary: replicas track the change log of `origin` (copy and epoch), so a
    position recorded against an earlier primary is never mistaken for one of this."""

    shard: str
    primary_dc: str
    epoch: int
    copies: tuple[ShardCopy, ...]

    @property
    def origin(self) -> str:
        return f"{self.shard}@{self.primary_dc}#{self.epoch}"

    @property
    def primary(self) -> ShardCopy:
        return self.copy_in(self.primary_dc)

    def copy_in(self, dc: str) -> ShardCopy:
        for copy in self.copies:
            if copy.dc == dc:
                return copy
        raise PlacementError(f"shard {self.shard} has no copy in data center {dc!r}")

    def with_state(self, dc: str, state: CopyState) -> ShardPlacement:
        self.copy_in(dc)
        copies = tuple(replace(c, state=state) if c.dc == dc else c for c in self.copies)
        return replace(self, copies=copies)

    def with_primary(self, dc: str, epoch: int, old_state: CopyState) -> ShardPlacement:
        """`dc`'s copy becomes the primary; the old primary's copy goes to `old_state`.
        Any other replica (three or more DCs) follows a new origin from now on, which it
        has no position for: it is `syncing` until it has copied and caught up again."""
        self.copy_in(dc)

        def state(copy: ShardCopy) -> CopyState:
            if copy.dc == dc:
                return "primary"
            if copy.dc == self.primary_dc:
                return old_state
            return "failed" if copy.state == "failed" else "syncing"

        copies = tuple(replace(c, state=state(c)) for c in self.copies)
        return replace(self, primary_dc=dc, epoch=epoch, copies=copies)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "primary_dc": self.primary_dc,
            "epoch": self.epoch,
            "copies": [c.to_dict() for c in self.copies],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardPlacement:
        return cls(
            str(data["shard"]),
            str(data["primary_dc"]),
            int(data["epoch"]),
            tuple(ShardCopy.from_dict(c) for c in data["copies"]),
        )


@dataclass(frozen=True)
class LostWrites:
    """Writes a promotion gave up: change-log entries the old primary committed that the
    promoted replica never applied (`count` None: the old primary could not be read, so
    the number is unknown — never reported as 0)."""

    shard: str
    failed_dc: str
    promoted_dc: str
    count: int | None
    placement_version: int
    at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "shard": self.shard,
            "failed_dc": self.failed_dc,
            "promoted_dc": self.promoted_dc,
            "count": self.count,
            "placement_version": self.placement_version,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LostWrites:
        count = data.get("count")
        return cls(
            str(data["shard"]),
            str(data["failed_dc"]),
            str(data["promoted_dc"]),
            None if count is None else int(count),
            int(data["placement_version"]),
            float(data["at"]),
        )


@dataclass(frozen=True)
class Placement:
    """Every shard's copies at one version, and every loss a promotion ever counted."""

    version: int
    dcs: tuple[str, ...]
    shards: Mapping[str, ShardPlacement]
    losses: tuple[LostWrites, ...] = field(default=())

    def of(self, shard: str) -> ShardPlacement | None:
        return self.shards.get(shard)

    def next(
        self,
        shards: Mapping[str, ShardPlacement] | None = None,
        losses: Sequence[LostWrites] = (),
    ) -> Placement:
        """The following version with `shards` replacing theirs and `losses` appended."""
        merged = dict(self.shards)
        merged.update(shards or {})
        return Placement(self.version + 1, self.dcs, merged, (*self.losses, *losses))

    def lost_total(self) -> tuple[int, int]:
        """(writes counted lost, promotions whose loss is unknown)."""
        known = sum(loss.count for loss in self.losses if loss.count is not None)
        unknown = sum(1 for loss in self.losses if loss.count is None)
        return known, unknown

    def to_dict(self) -> dict[str, Any]:
        return {
            "dcs": list(self.dcs),
            "shards": {name: p.to_dict() for name, p in sorted(self.shards.items())},
            "losses": [loss.to_dict() for loss in self.losses],
        }

    @classmethod
    def from_record(cls, version: int, data: Mapping[str, Any]) -> Placement:
        return cls(
            version,
            tuple(str(dc) for dc in data["dcs"]),
            {str(k): ShardPlacement.from_dict(v) for k, v in data["shards"].items()},
            tuple(LostWrites.from_dict(loss) for loss in data.get("losses", [])),
        )


def plan_placement(
    existing: Placement | None, registered: Mapping[str, ShardLocation], dcs: Sequence[str]
) -> Placement | None:
    """The placement with every registered shard placed (None: nothing to add).

    A new shard's registered copy is its primary, in the data centers taken in turn by
    sorted shard name (s1 in the first, s2 in the second, ...), so primaries are spread
    over the data centers; its other copies start `syncing`.
    """
    if len(dcs) < 2 or len(set(dcs)) != len(dcs):
        raise PlacementError(f"replication needs two or more distinct data centers, got {dcs}")
    if existing is not None and tuple(existing.dcs) != tuple(dcs):
        raise PlacementError(
            f"the placement is for data centers {list(existing.dcs)}, not {list(dcs)}"
        )
    placed = dict(existing.shards) if existing is not None else {}
    names = sorted(registered)
    added: dict[str, ShardPlacement] = {}
    for index, name in enumerate(names):
        if name in placed:
            continue
        home = dcs[index % len(dcs)]
        location = registered[name]
        copies = tuple(
            ShardCopy(dc, location, "primary")
            if dc == home
            else ShardCopy(dc, replica_location(location, dc), "syncing")
            for dc in dcs
        )
        added[name] = ShardPlacement(name, home, 0, copies)
    if not added:
        return None
    if existing is None:
        return Placement(1, tuple(dcs), added)
    return existing.next(added)


def replicated_into(placement: Placement, dc: str) -> list[ShardPlacement]:
    """The shards whose copy in `dc` follows a primary elsewhere (what `dc`'s replicator
    applies): every shard whose primary is in another DC and whose copy here is `replica`
    or `syncing` (a `failed` copy waits for `rejoin`)."""
    return [
        p
        for _, p in sorted(placement.shards.items())
        if p.primary_dc != dc and p.copy_in(dc).state in ("replica", "syncing")
    ]


@dataclass(frozen=True)
class Promotion:
    """One shard's promotion: the replica in `to_dc` replaces the primary in `from_dc`."""

    shard: str
    from_dc: str
    to_dc: str


def plan_promotions(placement: Placement, failed_dc: str) -> tuple[list[Promotion], list[str]]:
    """(promotions, shards left without a primary) when `failed_dc` fails: every shard
    whose primary is there moves to its `replica` copy in the first other data center that
    has one; a shard with no caught-up replica cannot be promoted."""
    if failed_dc not in placement.dcs:
        raise PlacementError(f"no data center named {failed_dc!r} (have {list(placement.dcs)})")
    promotions: list[Promotion] = []
    stranded: list[str] = []
    for name, shard in sorted(placement.shards.items()):
        if shard.primary_dc != failed_dc:
            continue
        target = next(
            (c.dc for c in shard.copies if c.dc != failed_dc and c.state == "replica"), None
        )
        if target is None:
            stranded.append(name)
        else:
            promotions.append(Promotion(name, failed_dc, target))
    return promotions, stranded


def rejoined(placement: Placement, dc: str) -> Placement | None:
    """The `failed` copies in `dc` turned `syncing` (None: none was failed)."""
    changed = {
        name: shard.with_state(dc, "syncing")
        for name, shard in placement.shards.items()
        if shard.copy_in(dc).state == "failed"
    }
    return placement.next(changed) if changed else None


def lag_of(
    primary_seq: int, applied: int | None, oldest_unapplied_at: float | None, now: float
) -> tuple[int, float]:
    """(changes behind, seconds behind): how many change-log entries the primary has that
    the replica has not applied, and how long ago the oldest of them was committed (0 when
    none is pending). A replica with no position yet is behind by the whole log."""
    behind = max(0, primary_seq - (applied if applied is not None and applied >= 0 else 0))
    seconds = (
        0.0 if behind == 0 or oldest_unapplied_at is None else max(0.0, now - oldest_unapplied_at)
    )
    return behind, seconds
