"""Scenario `reshard`: the database grows from 2 to 4 shards while users keep writing.

Logged-in users in both data centers upload small photos (each titled with a unique
write id) and read their photos and feeds through the load balancers, back to back.
Meanwhile shard s1 is split (its upper half moves to a new shard, s3), then s2 is split
(onto s4), each split copied, caught up from the change log, verified, cut over and
cleaned up online.

Afterwards every shard is read directly: a write is *found* when a photo row with its
title is owned by the shard the map assigns it to, *lost* when an acknowledged (201)
upload has no such row, *duplicated* when a title has more than one row anywhere (a row
left behind on a shard that no longer owns it counts too). The longest write pause is
the longest time a cutover fenced a range (measured by the resharder); the longest
upload the clients saw during the resharding is reported beside it. Every row of every
table is checked too: exactly once, on the shard that owns its key.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from PIL import Image
from rich.console import Console

from millions.scenarios import Scenario
from millions.scenarios.base import Timeline, fresh_topology, wait_until
from millions.shards import Operation, Resharder, ShardCluster
from millions.shards.keyspace import KeyRange, from_stored_hash
from millions.shards.resharding import Progress
from millions.topology.config import MillionsConfig

USERS_PER_DC = 4
WARMUP_WRITES = 300
SETTLE_S = 2.0
MAX_WRITE_PAUSE_MS = 1000.0
REQUEST_TIMEOUT_S = 30.0
PASSWORD = "reshard scenario password"


def tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


@dataclass
class WriteLog:
    """What the clients know: acknowledged write ids, errors and upload latencies."""

    acknowledged: set[str] = field(default_factory=set)
    unacknowledged: set[str] = field(default_factory=set)
    reads: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (ended at, seconds)

    @property
    def client_errors(self) -> int:
        return sum(self.errors.values())


async def simulated_user(
    name: str, base_url: str, image: bytes, log: WriteLog, stop: asyncio.Event
) -> None:
    """Sign up, then upload, list own photos and read the feed until `stop`; no retries:
    a failed request is a client error, an unanswered upload is unacknowledged."""
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    jar = aiohttp.CookieJar(unsafe=True)  # the load balancers are IP addresses
    async with aiohttp.ClientSession(base_url, timeout=timeout, cookie_jar=jar) as http:
        credentials = {"username": name, "password": PASSWORD}
        async with http.post("/api/signup", json=credentials) as response:
            if response.status != 201:
                log.errors[f"signup {response.status}"] += 1
                return
        while not stop.is_set():
            write_id = f"w-{uuid.uuid4().hex[:16]}"
            form = aiohttp.FormData()
            form.add_field("title", write_id)
            form.add_field("photo", image, filename="w.png", content_type="image/png")
            started = time.monotonic()
            try:
                async with http.post("/api/photos", data=form) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.unacknowledged.add(write_id)
                log.errors[f"upload {type(exc).__name__}"] += 1
                continue
            ended = time.monotonic()
            log.latencies.append((ended, ended - started))
            if status == 201:
                log.acknowledged.add(write_id)
            else:
                log.unacknowledged.add(write_id)
                log.errors[f"upload {status}"] += 1
            for path in ("/api/photos", "/api/feed"):
                try:
                    async with http.get(path) as response:
                        await response.read()
                        log.reads += 1
                        if response.status != 200:
                            log.errors[f"GET {path} {response.status}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    log.errors[f"GET {path} {type(exc).__name__}"] += 1


async def reshard(
    cluster: ShardCluster, timeline: Timeline, console: Console | None
) -> list[Operation]:
    """Split s1 onto s3, then s2 onto s4, each followed by its cleanup."""
    phases: set[tuple[str, str]] = set()

    def progress(update: Progress) -> None:
        if (update.operation, update.phase) not in phases:
            phases.add((update.operation, update.phase))
            timeline.mark(f"{update.operation}: {update.phase} — {update.message}")

    resharder = Resharder(cluster, progress if console is not None else None)
    done = []
    for source, target in (("s1", "s3"), ("s2", "s4")):
        timeline.mark(f"split {source} -> {target} starts")
        operation = await resharder.split(source, new_shard=target)
        timeline.mark(
            f"split {source} -> {target} switched "
            f"(write pause {max(operation.pauses_s, default=0) * 1000:.0f} ms)"
        )
        await resharder.cleanup()
        timeline.mark(f"split {source} -> {target} cleaned up")
        done.append(operation)
        await asyncio.sleep(SETTLE_S)  # steady load on the new layout before the next step
    return done


async def audit(cluster: ShardCluster, log: WriteLog) -> dict[str, Any]:
    """Read every row of every table on every shard: which writes are found, lost or
    duplicated, and whether each row is exactly once on the shard owning it."""
    shard_map = await cluster.current_map()
    titles: Counter[str] = Counter()
    copies: Counter[tuple[str, tuple[Any, ...]]] = Counter()
    misplaced = 0
    for shard in shard_map.shards():
        storage = await cluster.storage(shard)
        for table in cluster.schema.tables:
            after: list[Any] | None = None
            while True:
                page = await storage.scan(table, KeyRange.full(), after, 1000)
                if not page:
                    break
                for row in page:
                    copies[(table.name, tuple(row[c] for c in table.primary_key))] += 1
                    if shard_map.shard_for(from_stored_hash(int(row["key_hash"]))) != shard:
                        misplaced += 1
                    if table.name == "photos":
                        titles[str(row["title"])] += 1
                after = [page[-1][column] for column in table.primary_key]
    found = sum(1 for write_id in log.acknowledged if titles[write_id] >= 1)
    return {
        "found": found,
        "lost": len(log.acknowledged) - found,
        "duplicated": sum(count - 1 for count in titles.values() if count > 1),
        "duplicated_rows": sum(count - 1 for count in copies.values() if count > 1),
        "misplaced_rows": misplaced,
        "rows": sum(copies.values()),
        "unacknowledged_found": sum(1 for w in log.unacknowledged if titles[w] >= 1),
        "shards_after": len(shard_map.shards()),
    }


async def run(
    base: MillionsConfig, console: Console, quiet: bool, users_per_dc: int = USERS_PER_DC
) -> dict[str, Any]:
    image = tiny_png()
    log = WriteLog()
    stop = asyncio.Event()
    started = time.monotonic()
    async with fresh_topology(base, console, quiet, scenario="reshard") as supervisor:
        config = supervisor.config
        timeline = Timeline(console=None if quiet else console)
        names = (f"r{uuid.uuid4().hex[:6]}_{i}" for i in itertools.count())
        users = [
            asyncio.create_task(simulated_user(next(names), config.lb_url(dc), image, log, stop))
            for dc in config.dcs
            for _ in range(users_per_dc)
        ]
        cluster = ShardCluster(config.shards, supervisor.paths.root)
        try:
            try:
                await wait_until(
                    lambda: len(log.acknowledged) >= WARMUP_WRITES or all(u.done() for u in users),
                    120,
                    "the first uploads",
                )
            except TimeoutError as exc:
                raise TimeoutError(f"{exc}; client errors so far: {dict(log.errors)}") from None
            if len(log.acknowledged) < WARMUP_WRITES:
                raise RuntimeError(f"every simulated user gave up: {dict(log.errors)}")
            timeline.mark(f"{len(log.acknowledged)} writes acknowledged, resharding")
            reshard_started = time.monotonic()
            operations = await reshard(cluster, timeline, None if quiet else console)
            reshard_ended = time.monotonic()
            await asyncio.sleep(SETTLE_S)
            timeline.mark("load stops")
        finally:
            stop.set()
            await asyncio.gather(*users, return_exceptions=True)
        try:
            counted = await audit(cluster, log)
        finally:
            await cluster.close()
    during = [
        seconds for ended, seconds in log.latencies if reshard_started <= ended <= reshard_ended
    ]
    pauses = [pause for operation in operations for pause in operation.pauses_s]
    return {
        "acknowledged": len(log.acknowledged),
        "found": counted["found"],
        "lost": counted["lost"],
        "duplicated": counted["duplicated"],
        "client_errors": log.client_errors,
        "max_write_pause_ms": round(max(pauses, default=0.0) * 1000, 1),
        "duration_s": round(time.monotonic() - started, 2),
        "max_upload_latency_during_reshard_ms": round(max(during, default=0.0) * 1000, 1),
        "misplaced_rows": counted["misplaced_rows"],
        "duplicated_rows": counted["duplicated_rows"],
        "rows_audited": counted["rows"],
        "unacknowledged": len(log.unacknowledged),
        "unacknowledged_found": counted["unacknowledged_found"],
        "reads": log.reads,
        "shards_after": counted["shards_after"],
        "operations": [operation_summary(op) for op in operations],
        "errors": dict(log.errors),
        "events": timeline.events,
    }


def operation_summary(op: Operation) -> dict[str, Any]:
    return {
        "kind": op.kind,
        "range": op.key_range,
        "from": op.source,
        "to": op.target,
        "rows_copied": op.rows_copied,
        "changes_applied": op.changes_applied,
        "pauses_ms": [round(pause * 1000, 1) for pause in op.pauses_s],
    }


def passed(result: dict[str, Any]) -> bool:
    zero = ("lost", "duplicated", "client_errors", "misplaced_rows", "duplicated_rows")
    return (
        all(result[key] == 0 for key in zero)
        and result["acknowledged"] > 0
        and result["shards_after"] == 4
        and result["max_write_pause_ms"] <= MAX_WRITE_PAUSE_MS
    )


SCENARIO = Scenario(
    name="reshard",
    summary="split s1 and s2 (2→4 shards) online under uploads and reads; expect 0 lost, "
    "0 duplicated, 0 client errors and write pauses ≤ 1 s",
    run=run,
    passed=passed,
)
