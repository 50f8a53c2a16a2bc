"""The auto-splitter: load-based splitting of hot ranges, without an operator.

Every `interval_s` it merges the routers' fresh load reports and decides (`decide_autosplit`,
a pure function) one of:

- `split`: a range of the current map is over `hot.threshold_ops_s` and no resharding
  operation is active or ended less than `hot.split_cooldown_s` ago: split it where its
  load is (`Resharder.split_hot`);
- `cleanup`: the active operation is an automatic split that switched (or failed)
  `hot.cleanup_after_s` ago: delete the old copy, ending it — only one operation runs at a
  time, so an automatic split left un-cleaned would block every later one;
- `wait` (an operation is active or the cooldown runs), `idle` (nothing is over the
  threshold, or only single keys no split can help — routers serve those from the read
  cache) or `off` (`hot.auto_split` is off).

An operator's own operations are never cleaned up automatically: `reverse` stays possible
until they run `cleanup`. Automatic splits carry a note in their record
(`AUTOMATIC_NOTE`), so a restarted auto-splitter still finishes the ones it started.

The cooldown runs from the end of the last operation, whoever ran it: until the load
reports cover the new ranges (a sampling window) they under-count them, and a range that
just moved should not move again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from millions.shards.cluster import ShardCluster
from millions.shards.config import ShardsConfig
from millions.shards.errors import ShardError
from millions.shards.hotkeys import (
    HotReport,
    KeyLoad,
    SplitDecision,
    current_load,
    decide_splits,
    fresh_since,
)
from millions.shards.resharding import Progress, Resharder
from millions.shards.workflow import Operation

AUTOMATIC_NOTE = "automatic split of a hot range"
MERGED_KEYS = 256

Action = Literal["off", "idle", "wait", "split", "cleanup"]
EventCallback = Callable[[str], None]


@dataclass(frozen=True)
class AutoSplitPolicy:
    """The settings the decision needs, from `shards.hot` (and `shards.cache`)."""

    enabled: bool
    threshold_ops_s: float
    cooldown_s: float
    cleanup_after_s: float
    hot_keys_cached: bool

    @classmethod
    def from_config(cls, config: ShardsConfig, *, force: bool = False) -> AutoSplitPolicy:
        """`force`: split even when `hot.auto_split` is off (an operator asked for it)."""
        hot = config.hot
        return cls(
            enabled=hot.auto_split or force,
            threshold_ops_s=hot.threshold_ops_s,
            cooldown_s=hot.split_cooldown_s,
            cleanup_after_s=hot.cleanup_after_s,
            hot_keys_cached=hot.cache_hot_keys and config.cache.engine != "none",
        )


@dataclass(frozen=True)
class AutoSplitDecision:
    """What to do now and why; `split` is the range decision for `split` (and for a `wait`
    on the cooldown), `operation` the operation a `cleanup` or `wait` is about."""

    action: Action
    reason: str
    split: SplitDecision | None = None
    operation: str | None = None
    too_hot: tuple[KeyLoad, ...] = ()


def started_automatically(op: Operation, known: Collection[str] = ()) -> bool:
    """True for an operation an auto-splitter started (this one: its id is in `known`)."""
    return op.id in known or any(
        len(event) > 1 and event[1] == AUTOMATIC_NOTE for event in op.events
    )


def decide_autosplit(
    policy: AutoSplitPolicy,
    report: HotReport,
    current_ranges: Collection[str],
    *,
    active: Operation | None,
    automatic: bool,
    last_ended_at: float | None,
    now: float,
) -> AutoSplitDecision:
    """The next step given the merged load `report`, the current map's range names, the
    active operation (`automatic`: an auto-splitter started it), when the last operation
    ended and the time (unix, like the operation records)."""
    if not policy.enabled:
        return AutoSplitDecision(
            "off", "hot.auto_split is off: nothing is split or cleaned up automatically"
        )
    if active is not None:
        return _about_active(policy, active, automatic, now)
    load = current_load(report, current_ranges)
    decisions = decide_splits(load, policy.threshold_ops_s)
    too_hot = tuple(d.too_hot for d in decisions if d.too_hot is not None)
    chosen = next((d for d in decisions if d.split), None)
    if chosen is None:
        reason = _idle_reason(policy, load, decisions)
        return AutoSplitDecision("idle", reason, too_hot=too_hot)
    if last_ended_at is not None and now - last_ended_at < policy.cooldown_s:
        remaining = policy.cooldown_s - (now - last_ended_at)
        return AutoSplitDecision(
            "wait",
            f"{chosen.key_range} is over the threshold ({chosen.ops_per_s:.0f} ops/s) but the "
            f"last resharding operation ended {now - last_ended_at:.0f}s ago: cooling down "
            f"{remaining:.0f}s more",
            chosen,
            None,
            too_hot,
        )
    return AutoSplitDecision("split", f"{chosen.key_range}: {chosen.reason}", chosen, None, too_hot)


def _about_active(
    policy: AutoSplitPolicy, op: Operation, automatic: bool, now: float
) -> AutoSplitDecision:
    what = f"{op.id} ({op.kind} {op.key_range} {op.source} -> {op.target}) is {op.phase}"
    if not automatic or op.phase not in ("switched", "failed"):
        owner = "an automatic split" if automatic else "an operator's operation"
        ending = (
            "; `millions shards cleanup` ends it"
            if op.phase in ("switched", "reversed", "failed")
            else ""
        )
        return AutoSplitDecision(
            "wait",
            f"{what}, {owner}: no split while an operation is active{ending}",
            operation=op.id,
        )
    age = now - op.updated_at
    finish = "deleting the copy on" if op.phase == "switched" else "deleting the partial copy on"
    holder = op.source if op.phase == "switched" else op.target
    if age < policy.cleanup_after_s:
        return AutoSplitDecision(
            "wait",
            f"{what}: cleanup in {policy.cleanup_after_s - age:.0f}s "
            "(`millions shards reverse` can still switch it back)",
            operation=op.id,
        )
    return AutoSplitDecision("cleanup", f"{what}: {finish} {holder}", operation=op.id)


def _idle_reason(policy: AutoSplitPolicy, load: HotReport, decisions: list[SplitDecision]) -> str:
    parts: list[str] = []
    for decision in decisions:
        if decision.too_hot is not None:
            served = (
                "served from the read cache"
                if policy.hot_keys_cached
                else "not cached (the read cache or hot.cache_hot_keys is off)"
            )
            parts.append(
                f"{decision.key_range}: key {decision.too_hot.key!r} alone takes "
                f"{decision.too_hot.ops_per_s:.0f} ops/s, too hot for any split; {served}"
            )
        else:
            parts.append(f"{decision.key_range}: {decision.reason}")
    if parts:
        return "; ".join(parts)
    if not load.ranges:
        return "no load reported by any router"
    hottest = load.ranges[0]
    return (
        f"hottest range {hottest.key_range} at {hottest.ops_per_s:.0f} ops/s, within the "
        f"{policy.threshold_ops_s:g} ops/s threshold"
    )


@dataclass(frozen=True)
class AutoSplitOutcome:
    """One step: the decision, the operation it started or finished, and what went wrong."""

    decision: AutoSplitDecision
    operation: Operation | None = None
    error: str = ""


class AutoSplitter:
    """The driver: gathers the load, the map and the operations, decides, acts."""

    def __init__(
        self,
        cluster: ShardCluster,
        *,
        force: bool = False,
        on_event: EventCallback | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock`: unix time, the clock operation records are stamped with."""
        self.cluster = cluster
        self.policy = AutoSplitPolicy.from_config(cluster.config, force=force)
        self.on_event = on_event or (lambda _message: None)
        self._clock = clock
        self._started: set[str] = set()

    async def merged_load(self) -> HotReport:
        """Every router's fresh load report, merged."""
        since = fresh_since(self._clock(), self.cluster.config.hot.report_interval_s)
        stored = await self.cluster.metadata.load_reports(since)
        return HotReport.merge((HotReport.from_dict(r) for r in stored), top=MERGED_KEYS)

    async def decide(self) -> tuple[AutoSplitDecision, HotReport, frozenset[str]]:
        """The decision for now, with the merged load and the current map's range names it
        was made from."""
        metadata = self.cluster.metadata
        report = await self.merged_load()
        shard_map = await self.cluster.current_map()
        ranges = frozenset(key_range.name for key_range, _ in shard_map.entries)
        active = await metadata.active_operation()
        last_ended_at = None
        if active is None:
            recent = await metadata.operations(limit=1)
            last_ended_at = recent[0].updated_at if recent else None
        decision = decide_autosplit(
            self.policy,
            report,
            ranges,
            active=active,
            automatic=active is not None and started_automatically(active, self._started),
            last_ended_at=last_ended_at,
            now=self._clock(),
        )
        return decision, report, ranges

    async def step(self) -> AutoSplitOutcome:
        """Decide once and carry the decision out; a refused or failed operation is reported
        (as an event and in the outcome), not raised."""
        decision, report, ranges = await self.decide()
        self.on_event(f"{decision.action}: {decision.reason}")
        if decision.action == "split":
            return await self._split(decision, current_load(report, ranges))
        if decision.action == "cleanup":
            return await self._cleanup(decision)
        return AutoSplitOutcome(decision)

    async def _split(self, decision: AutoSplitDecision, load: HotReport) -> AutoSplitOutcome:
        if not self.cluster.schema.tables:
            # A split copies the tables the schema names: without them it would move the
            # range in the map and leave its rows behind.
            return self._failed(
                decision,
                "split refused: this process knows no sharded tables (set shards.tables)",
            )

        def progress(report: Progress) -> None:
            self._started.add(report.operation)

        resharder = Resharder(self.cluster, progress)
        try:
            op = await resharder.split_hot(load, force=True)
        except ShardError as exc:
            return self._failed(decision, f"split failed: {exc}")
        if op is None:
            return self._failed(decision, "split not started: another operation became active")
        seen = op.updated_at
        op.note(self._clock(), AUTOMATIC_NOTE)
        op.updated_at = self._clock()
        if not await self.cluster.metadata.claim_operation(op, seen):
            self._started.discard(op.id)
            self.on_event(f"{op.id} was taken over by another process; it finishes it")
        pauses = ", ".join(f"{p * 1000:.1f} ms" for p in op.pauses_s)
        self.on_event(
            f"split done: {op.id} moved {op.key_range} {op.source} -> {op.target} "
            f"({op.rows_copied} rows copied, write pause {pauses}); cleanup after "
            f"{self.policy.cleanup_after_s:g}s"
        )
        return AutoSplitOutcome(decision, op)

    async def _cleanup(self, decision: AutoSplitDecision) -> AutoSplitOutcome:
        active = await self.cluster.metadata.active_operation()
        if active is None or active.id != decision.operation:
            return self._failed(decision, "cleanup skipped: the active operation changed")
        try:
            op = await Resharder(self.cluster).cleanup()
        except ShardError as exc:
            return self._failed(decision, f"cleanup of {decision.operation} failed: {exc}")
        self._started.discard(op.id)
        self.on_event(f"cleanup done: {op.id} {op.phase} ({op.events[-1][1]})")
        return AutoSplitOutcome(decision, op)

    def _failed(self, decision: AutoSplitDecision, message: str) -> AutoSplitOutcome:
        self.on_event(message)
        return AutoSplitOutcome(decision, error=message)


async def autosplit_forever(
    cluster: ShardCluster,
    *,
    interval_s: float | None = None,
    stop: asyncio.Event | None = None,
    on_event: EventCallback | None = None,
    force: bool = False,
) -> None:
    """Run the auto-splitter every `interval_s` (default `hot.autosplit_interval_s`) until
    `stop` is set (or the task is cancelled). Returns at once when `hot.auto_split` is off,
    unless `force`. Errors of the metadata store or the shards are reported through
    `on_event` and the next round tries again."""
    splitter = AutoSplitter(cluster, force=force, on_event=on_event)
    interval = interval_s if interval_s is not None else cluster.config.hot.autosplit_interval_s
    stop = stop or asyncio.Event()
    if not splitter.policy.enabled:
        splitter.on_event("off: hot.auto_split is off; the auto-splitter does not run")
        return
    while not stop.is_set():
        try:
            await splitter.step()
        except ShardError as exc:
            splitter.on_event(f"error: {exc}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)
