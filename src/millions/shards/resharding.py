"""Online resharding: split a shard's range onto a new shard, or move a range to another
shard, while the app keeps reading and writing (Vitess MoveTables/Reshard, in small).

A move of range R from source S to target T:

1. copy — note S's change-log position, then copy R's rows (keyset pages, upserts) to T;
2. catch up — replay S's change log for R since that position on T;
3. verify — read S's row count and checksum of R per table in one snapshot at change-log
   position P, replay T up to exactly P, compare with T's (VDiff);
4. cut over — record on S's fence that it no longer owns R (from here writes to R are
   refused and routers wait), replay the last changes, record R on T's fence, publish the
   map with R on T. The pause (fence to publish) is measured; when it would exceed the
   budget the fences are restored, the map version bumped (releasing waiting routers) and
   the cutover retried.

Until `cleanup` deletes S's copy, `reverse` switches R back the same way (T's change log
since the switch is replayed onto S first) and forth again. Every step is recorded in the
metadata store, so `status` in any process shows the operation, and a process that died
mid-way leaves a record `reverse`/`cleanup` can resolve.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from millions.shards.cluster import ShardCluster
from millions.shards.errors import OperationError, ShardError, VerificationError
from millions.shards.hotkeys import HotReport, decide_splits
from millions.shards.keyspace import KeyRange, add_range, subtract_range
from millions.shards.shard_map import ShardMapError
from millions.shards.storage.base import ShardStorage
from millions.shards.storage.writes import copy_write, pk_after, replay_write
from millions.shards.workflow import (
    STALE_AFTER_S,
    Operation,
    Phase,
    plan_cleanup,
    plan_reverse,
    this_process,
)
from millions.topology.errors import ConfigError

HEARTBEAT_S = 2.0
CUTOVER_ATTEMPTS = 3
PAUSE_SHARE_FOR_CATCH_UP = 0.75
_AUTO_NAME = re.compile(r"^s(\d+)$")


@dataclass(frozen=True)
class Progress:
    """A progress report: `done` of `total` (None: unknown) in `phase`."""

    operation: str
    phase: str
    done: int
    total: int | None
    message: str


ProgressCallback = Callable[[Progress], None]


class _PauseOverrun(Exception):
    """The final catch-up took too much of the pause budget; the cutover was undone."""


class _RollbackFailed(Exception):
    """Undoing a failed cutover failed too: the range may be owned by no shard."""


class Resharder:
    """Runs resharding operations on a cluster, reporting progress to `progress`."""

    def __init__(
        self,
        cluster: ShardCluster,
        progress: ProgressCallback | None = None,
        *,
        max_pause_s: float | None = None,
        batch_rows: int | None = None,
        stale_after_s: float = STALE_AFTER_S,
    ) -> None:
        self.cluster = cluster
        self.metadata = cluster.metadata
        self.progress = progress or (lambda _: None)
        self.max_pause_s = max_pause_s if max_pause_s is not None else cluster.config.max_pause_s
        self.batch_rows = batch_rows if batch_rows is not None else cluster.config.batch_rows
        self.stale_after_s = stale_after_s
        self._save_lock = asyncio.Lock()

    # -- operations ------------------------------------------------------------------------

    async def split(
        self, shard: str, *, new_shard: str | None = None, at: int | None = None
    ) -> Operation:
        """Split `shard`'s range (its widest, or the one holding `at`) in half — or at `at` —
        moving the upper part onto a new shard (`new_shard`, default the next free s<N>)."""
        shard_map = await self.cluster.current_map()
        owned = shard_map.ranges_of(shard)
        if not owned:
            raise OperationError(f"shard {shard!r} owns no range to split")
        if at is None:
            key_range = max(owned, key=lambda r: r.width)
        else:
            holding = [r for r in owned if r.contains(at)]
            if not holding:
                raise OperationError(f"shard {shard} does not own keyspace id {at:#018x}")
            key_range = holding[0]
        try:
            _, upper = key_range.split(at)
        except ValueError as exc:
            raise OperationError(str(exc)) from None
        locations = await self.metadata.locations()
        if new_shard is None:
            new_shard = _next_free_name(set(locations))
        elif new_shard in locations:
            raise OperationError(
                f"shard {new_shard} exists; split makes a new shard (use move to reuse one)"
            )
        try:
            location = self.cluster.config.location(new_shard, self.cluster.run_dir)
        except ConfigError as exc:
            raise OperationError(f"cannot place new shard {new_shard}: {exc}") from None
        op = self._new_operation("split", upper, shard, new_shard, created_target=True)
        await self.metadata.begin_operation(op)
        self._report(op, 0, None, f"creating shard {new_shard} at {location.describe()}")
        try:
            await self.cluster.add_shard(new_shard)
        except ShardError as exc:
            await self._fail(op, exc)
            raise
        return await self._run_forward(op)

    async def move(self, key_range: KeyRange | str, to_shard: str) -> Operation:
        """Move `key_range` (inside one shard's range) to the registered shard `to_shard`."""
        if isinstance(key_range, str):
            try:
                key_range = KeyRange.parse(key_range)
            except ValueError as exc:
                raise OperationError(str(exc)) from None
        shard_map = await self.cluster.current_map()
        try:
            source = shard_map.owner_of(key_range)
        except ShardMapError as exc:
            raise OperationError(str(exc)) from None
        if source == to_shard:
            raise OperationError(f"{key_range} is already on {to_shard}")
        if to_shard not in await self.metadata.locations():
            raise OperationError(
                f"no shard named {to_shard!r}; add it to the config and run migrate first"
            )
        op = self._new_operation("move", key_range, source, to_shard, created_target=False)
        await self.metadata.begin_operation(op)
        return await self._run_forward(op)

    async def reverse(self) -> Operation:
        """Switch the active operation's range back to where it was (or forth again)."""
        op = await self._active()
        plan = plan_reverse(op, time.time(), self.stale_after_s)
        key_range = KeyRange.parse(op.key_range)
        from_storage = await self.cluster.storage(plan.from_shard)
        to_storage = await self.cluster.storage(plan.to_shard)
        await self._claim(op)
        async with self._heartbeat(op):
            if plan.restore:
                shard_map = await self.cluster.current_map()
                if shard_map.owner_of(key_range) == op.source:
                    await self._restore_source(op, key_range, to_storage, from_storage)
                    await self._set_phase(op, plan.final_phase, "interrupted cutover undone")
                    return op
                # The map did switch before the process died: the target serves.
                await self._set_phase(op, "switched", f"{op.key_range} found served by {op.target}")
            await self._switch(op, key_range, from_storage, to_storage, op.switch_seq)
            await self._set_phase(op, plan.final_phase, f"{op.key_range} served by {plan.to_shard}")
        return op

    async def cleanup(self) -> Operation:
        """Delete the copy that no longer serves the range and end the operation."""
        op = await self._active()
        plan = plan_cleanup(op, time.time(), self.stale_after_s)
        key_range = KeyRange.parse(op.key_range)
        await self._claim(op)
        if plan.delete_from not in await self.metadata.locations():
            # a split whose new shard was never created: nothing was copied anywhere
            await self._set_phase(op, plan.final_phase, f"{plan.delete_from} was never created")
            return op
        storage = await self.cluster.storage(plan.delete_from)
        fence = await storage.fence()
        if any(r.overlaps(key_range) for r in fence.ranges):
            raise OperationError(
                f"refusing to delete {key_range} from {plan.delete_from}: its fence says it "
                "still owns part of it"
            )
        deleted = 0
        async with self._heartbeat(op):
            for table in self.cluster.schema.tables:
                while True:
                    count = await storage.delete_range(table, key_range, self.batch_rows)
                    deleted += count
                    self._report(
                        op, deleted, None, f"deleting {table.name} rows from {storage.name}"
                    )
                    if count == 0:
                        break
            await self._set_phase(
                op, plan.final_phase, f"deleted {deleted} rows of {key_range} from {storage.name}"
            )
        return op

    async def split_hot(self, report: HotReport, *, force: bool = False) -> Operation | None:
        """Split the hottest range the report says should split (only when the config's
        `hot.auto_split` is on, or `force`); None when nothing should or may split."""
        hot = self.cluster.config.hot
        if not (hot.auto_split or force):
            return None
        if await self.metadata.active_operation() is not None:
            return None
        shard_map = await self.cluster.current_map()
        for decision in decide_splits(report, hot.threshold_ops_s):
            if decision.split and decision.split_at is not None:
                shard = shard_map.shard_for(decision.split_at)
                return await self.split(shard, at=decision.split_at)
        return None

    # -- the forward path ------------------------------------------------------------------

    async def _run_forward(self, op: Operation) -> Operation:
        key_range = KeyRange.parse(op.key_range)
        source = await self.cluster.storage(op.source)
        target = await self.cluster.storage(op.target)
        async with self._heartbeat(op):
            try:
                cursor = await self._copy(op, key_range, source, target)
                await self._set_phase(op, "catching_up", "replaying the source's change log")
                cursor = await self._catch_up(op, key_range, source, target, cursor)
            except ShardError as exc:
                await self._fail(op, exc)
                raise
            await self._switch(op, key_range, source, target, cursor)
            await self._set_phase(op, "switched", f"{op.key_range} served by {op.target}")
        return op

    async def _copy(
        self, op: Operation, key_range: KeyRange, source: ShardStorage, target: ShardStorage
    ) -> int:
        tables = self.cluster.schema.tables
        op.start_seq = await source.last_seq()
        op.rows_to_copy = sum([await source.count_range(t, key_range) for t in tables])
        await self._save(op)
        self._report(op, 0, op.rows_to_copy, f"copying {key_range} {source.name} -> {target.name}")
        for table in tables:
            after = None
            while True:
                rows = await source.scan(table, key_range, after, self.batch_rows)
                if not rows:
                    break
                await target.write([copy_write(table, row) for row in rows], fenced=False)
                op.rows_copied += len(rows)
                after = pk_after(table, rows)
                self._report(op, op.rows_copied, op.rows_to_copy, f"copying {table.name}")
        return op.start_seq

    async def _catch_up(
        self,
        op: Operation,
        key_range: KeyRange,
        source: ShardStorage,
        target: ShardStorage,
        cursor: int,
        until: int | None = None,
    ) -> int:
        """Replay `source`'s changes of the range after `cursor` (up to `until`) on
        `target` until a page comes back short; returns the new cursor. Once the source's
        fence refuses the range, a short page means nothing is left."""
        schema = self.cluster.schema
        while True:
            page = await source.changes_since(cursor, key_range, limit=self.batch_rows)
            changes = page if until is None else [c for c in page if c.seq <= until]
            if changes:
                await target.write([replay_write(schema, c) for c in changes], fenced=False)
                cursor = changes[-1].seq
                op.changes_applied += len(changes)
                self._report(op, op.changes_applied, None, f"replayed up to change {cursor}")
            if len(changes) < self.batch_rows:
                return cursor

    async def _verify(
        self,
        op: Operation,
        key_range: KeyRange,
        source: ShardStorage,
        target: ShardStorage,
        cursor: int,
    ) -> int:
        """Compare per-table row counts and checksums of the range (VDiff); returns the
        cursor (caught up to the snapshot)."""
        tables = self.cluster.schema.tables
        seq, expected = await source.digest(tables, key_range)
        cursor = await self._catch_up(op, key_range, source, target, cursor, until=seq)
        _, found = await target.digest(tables, key_range)
        op.digests = {name: list(digest.as_pair()) for name, digest in expected.items()}
        differing = [name for name in expected if found.get(name) != expected[name]]
        if differing:
            details = "; ".join(
                f"{name}: {source.name} {expected[name].rows} rows, {target.name} "
                f"{found[name].rows} rows"
                for name in differing
            )
            raise VerificationError(f"{key_range} differs after catch-up ({details})")
        rows = sum(d.rows for d in expected.values())
        op.note(time.time(), f"verified {rows} rows of {key_range} at change {seq}")
        return max(cursor, seq)

    async def _switch(
        self,
        op: Operation,
        key_range: KeyRange,
        source: ShardStorage,
        target: ShardStorage,
        cursor: int,
    ) -> None:
        """Catch up, verify and cut `key_range` over from `source` to `target`. On failure
        the map is unchanged and the operation goes back to where it was (a forward move
        that never switched: `failed`), unless undoing the cutover failed too
        (`cutting_over`, for `reverse` to resolve)."""
        previous: Phase = op.phase if op.phase in ("switched", "reversed") else "failed"
        try:
            await self._set_phase(op, "verifying", f"comparing {key_range} on both shards")
            cursor = await self._catch_up(op, key_range, source, target, cursor)
            cursor = await self._verify(op, key_range, source, target, cursor)
            await self._set_phase(op, "cutting_over", f"switching {key_range} to {target.name}")
            for attempt in range(1, CUTOVER_ATTEMPTS + 1):
                cursor = await self._catch_up(op, key_range, source, target, cursor)
                try:
                    pause = await self._cutover(op, key_range, source, target, cursor)
                except _PauseOverrun:
                    op.note(time.time(), f"cutover attempt {attempt} rolled back: pause budget")
                    continue
                op.pauses_s.append(round(pause, 4))
                return
            raise OperationError(
                f"could not cut {key_range} over within {self.max_pause_s}s of write pause "
                f"in {CUTOVER_ATTEMPTS} attempts; writes may be too heavy, retry later"
            )
        except _RollbackFailed as exc:
            op.error = f"cutover failed and could not be undone: {exc}; run reverse"
            await self._save(op)
            raise ShardError(op.error) from exc
        except ShardError as exc:
            op.error = str(exc)
            await self._set_phase(op, previous, f"switch of {key_range} failed: {exc}")
            raise

    async def _cutover(
        self,
        op: Operation,
        key_range: KeyRange,
        source: ShardStorage,
        target: ShardStorage,
        cursor: int,
    ) -> float:
        shard_map = await self.cluster.current_map()
        new_map = shard_map.reassign(key_range, target.name)
        source_fence = await source.fence()
        target_fence = await target.fence()
        started = time.monotonic()
        await source.set_fence(subtract_range(source_fence.ranges, key_range), new_map.version)
        try:
            await self._catch_up(op, key_range, source, target, cursor)
            if time.monotonic() - started > self.max_pause_s * PAUSE_SHARE_FOR_CATCH_UP:
                raise _PauseOverrun
            await target.set_fence(add_range(target_fence.ranges, key_range), new_map.version)
            op.switch_seq = await target.last_seq()
            op.map_version = new_map.version
            await self._save(op)
            await self.metadata.publish(new_map, f"{op.kind} {op.id}: {key_range} -> {target.name}")
        except BaseException:
            # Give the range back to the source and release routers waiting for a map.
            try:
                await target.set_fence(target_fence.ranges, new_map.version)
                await source.set_fence(source_fence.ranges, new_map.version)
                await self.metadata.publish(
                    shard_map.bumped(), f"{op.kind} {op.id}: cutover of {key_range} rolled back"
                )
            except BaseException as exc:
                raise _RollbackFailed(str(exc)) from exc
            raise
        return time.monotonic() - started

    async def _restore_source(
        self,
        op: Operation,
        key_range: KeyRange,
        source: ShardStorage,
        target: ShardStorage,
    ) -> None:
        """Undo an interrupted cutover whose map never switched: the source owns the range
        again (the target never served it, so it holds no newer writes)."""
        shard_map = await self.cluster.current_map()
        bumped = shard_map.bumped()
        target_fence = await target.fence()
        source_fence = await source.fence()
        await target.set_fence(subtract_range(target_fence.ranges, key_range), bumped.version)
        await source.set_fence(add_range(source_fence.ranges, key_range), bumped.version)
        await self.metadata.publish(bumped, f"{op.kind} {op.id}: interrupted cutover undone")

    # -- bookkeeping -----------------------------------------------------------------------

    def _new_operation(
        self, kind: str, key_range: KeyRange, source: str, target: str, *, created_target: bool
    ) -> Operation:
        now = time.time()
        op = Operation(
            id=f"{kind}-{uuid.uuid4().hex[:8]}",
            kind="split" if kind == "split" else "move",
            key_range=key_range.name,
            source=source,
            target=target,
            phase="copying",
            owner=this_process(),
            started_at=now,
            updated_at=now,
            created_target=created_target,
        )
        op.note(now, f"{kind} {key_range.name} {source} -> {target}")
        return op

    async def _active(self) -> Operation:
        op = await self.metadata.active_operation()
        if op is None:
            raise OperationError("no resharding operation is active")
        return op

    async def _claim(self, op: Operation) -> None:
        """Take the operation over for this process, unless another process just did."""
        seen = op.updated_at
        op.owner = this_process()
        op.updated_at = time.time()
        async with self._save_lock:
            claimed = await self.metadata.claim_operation(op, seen)
        if not claimed:
            raise OperationError(
                f"operation {op.id} changed while this process was taking it over "
                "(another process is working on it); see `millions shards status`"
            )

    async def _set_phase(self, op: Operation, phase: Phase, message: str) -> None:
        op.phase = phase
        op.note(time.time(), message)
        await self._save(op)
        self._report(op, 0, None, message)

    async def _fail(self, op: Operation, error: Exception) -> None:
        op.error = str(error)
        await self._set_phase(op, "failed", f"failed: {error}")

    async def _save(self, op: Operation) -> None:
        async with self._save_lock:
            op.updated_at = time.time()
            await self.metadata.save_operation(op)

    def _report(self, op: Operation, done: int, total: int | None, message: str) -> None:
        self.progress(Progress(op.id, op.phase, done, total, message))

    @contextlib.asynccontextmanager
    async def _heartbeat(self, op: Operation) -> AsyncIterator[None]:
        """Save the operation every HEARTBEAT_S while it runs, so others see it is alive."""

        async def beat() -> None:
            while True:
                await asyncio.sleep(HEARTBEAT_S)
                with contextlib.suppress(ShardError):
                    await self._save(op)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _next_free_name(taken: set[str]) -> str:
    numbers = [int(m.group(1)) for name in taken if (m := _AUTO_NAME.match(name))]
    candidate = max(numbers, default=0) + 1
    while f"s{candidate}" in taken:
        candidate += 1
    return f"s{candidate}"
