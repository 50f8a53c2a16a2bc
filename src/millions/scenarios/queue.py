"""Scenario `queue`: photo uploads keep flowing while workers and web servers are killed.

A steady stream of photo uploads goes through every data center's load balancer. Each
upload is a real JPEG (a 1600 px gradient, made unique by a comment segment so no two
uploads share variant files) whose variants take a worker about 0.2 s to render, so
tasks are in flight most of the time. Faults, in order:

1. a worker whose `/healthz` reports a task in flight gets SIGKILL. Its lease runs out
   (the scenario sets the queue's visibility timeout to 5 s) and the message is
   delivered again; the scenario waits out that timeout before the next fault;
2. every web server (the producers) and every worker (the consumers) of every DC gets
   SIGKILL at once, and the supervisor restarts them all while uploads keep coming;
3. uploads go on for a few seconds and stop; the scenario waits until every
   acknowledged photo is processed, or a deadline passes.

The CDN edges and the geo DNS are left out: uploads go straight to the load balancers.

How each number is counted:

* published: uploads the app acknowledged (201 with a photo id), each kept with the
  moment its answer arrived. processed: those the API showed as `processed: true`
  before the deadline (every user's photo list is polled every 0.2 s; a photo missing
  from the list, which shows a user's newest 100, is asked for by id).
  lost = published - processed.
* p50_ms / p99_ms: from an upload's acknowledgement to the first poll that saw its
  photo processed, so they include up to one poll interval (`poll_interval_ms`).
* unacknowledged: upload attempts answered with a 5xx or not at all (reset, timeout):
  the photo may or may not have been stored. The client tries again with a new
  request (and so, possibly, a second photo). After the run, each user's photo list
  is compared with the acknowledged ids: `stored_unacknowledged` photos exist although
  their upload was never acknowledged, and `stored_unacknowledged_unprocessed` of them
  were never processed (stored, but their job was never queued). Neither counts as
  lost: nobody was told the upload had worked. given_up: uploads still without an
  acknowledgement when the uploads stopped.
* duplicate_effects: the effect is a photo's processed flag going from false to true.
  The store does that with a conditional update, and the worker logs "photo processed"
  only for the call that changed the flag. After the topology has stopped, those
  records are counted per photo id over every worker's log file (a restarted worker
  appends to its own); each record beyond the first for a photo is a duplicate
  effect. Handler runs that found the photo already processed ("photo needed no
  processing") are `redundant_deliveries`: at-least-once delivery at work, without an
  effect. `redeliveries` counts handler runs on a second or later delivery, and
  `redelivered_after_worker_kill` those logged between the single worker kill and
  the kill of everything (the scenario waits for one before killing everything), and
  `task_failures` the workers' "task failed" records (a handler that raised or timed
  out; its message is retried). `inline_fallbacks` counts web servers' "queue unavailable"
  records for photo jobs (the web server then processed the photo itself, without a
  worker record); `processed_without_effect_record` counts processed photos with
  neither record (say, a worker killed between its update and its log line), and
  `unreadable_log_lines` lines that are not JSON (cut short by SIGKILL).
* peak_depth / peak_in_flight: the most messages ready / leased in `photo.process`,
  from the queue's own stats every 0.25 s. worker_counts: the supervisor's worker
  processes per DC (`supervised`) and how many of them have a live process (`alive`),
  at every change. queue_at_end: the queue's ready, in-flight, delayed and dead-lettered
  messages when the scenario stopped waiting (a stored photo that is not processed while
  nothing is left in the queue never had its job published). poll_errors: polls
  that got no answer (all web servers of a DC down, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeGuard

import aiohttp
from PIL import Image
from rich.console import Console

from millions.app.pipeline import PHOTO_QUEUE
from millions.load.cookies import apply_set_cookie, cookie_header
from millions.load.histogram import nearest_rank
from millions.queue import MessageQueue, QueueError, open_queue
from millions.scenarios import Scenario
from millions.scenarios.base import Timeline, fresh_topology, wait_until
from millions.topology.config import MillionsConfig
from millions.topology.supervisor import ComponentState, ManagedProcess, Supervisor

UPLOADERS = 6
UPLOADS_PER_S = 5.0  # across all uploaders
IMAGE_SIDE_PX = 1600
VISIBILITY_TIMEOUT_S = 5.0
WARMUP_ACKNOWLEDGED = 12
AFTER_RESTART_S = 4.0
REDELIVERY_WAIT_S = 20.0  # beyond the visibility timeout, on a busy machine
DRAIN_DEADLINE_S = 60.0
UNACKNOWLEDGED_GRACE_S = VISIBILITY_TIMEOUT_S + 2.0
POLL_INTERVAL_S = 0.2
SAMPLE_INTERVAL_S = 0.25
RETRY_PAUSE_S = 0.25
REQUEST_TIMEOUT_S = 10.0
PROCESSED_RECORD = "photo processed"
NO_OP_RECORD = "photo needed no processing"
TASK_FAILED_RECORD = "task failed"  # millions.workers: a handler raised or timed out
INLINE_RECORD_PREFIX = "queue unavailable"  # a web server did the job itself


# -- pure: images, answers, effect records, the report -------------------------------------


@lru_cache(maxsize=1)
def base_jpeg(side: int = IMAGE_SIDE_PX) -> bytes:
    """A `side`-pixel square gradient as JPEG: many pixels to render, few bytes to send."""
    image = Image.linear_gradient("L").resize((side, side)).convert("RGB")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def unique_jpeg(jpeg: bytes, tag: str) -> bytes:
    """`jpeg` with a comment segment holding `tag` after its start marker: the same
    pixels, different bytes (the app stores photos and variants by content hash)."""
    text = tag.encode()
    if jpeg[:2] != b"\xff\xd8" or len(text) > 0xFFFF - 2:
        raise ValueError("expected a JPEG and a tag shorter than 64 KiB")
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def acknowledged_id(status: int | None, body: bytes) -> int | None:
    """The photo id of a 201 answer to an upload, or None for anything else."""
    if status != 201:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    photo_id = document.get("id") if isinstance(document, dict) else None
    return photo_id if is_id(photo_id) else None


@dataclass
class EffectRecords:
    """What the workers' and web servers' log records say about photo processing."""

    effects: Counter[int] = field(default_factory=Counter)  # "photo processed" per photo
    no_ops: int = 0
    task_failures: int = 0  # handler runs that failed (retried or dead-lettered)
    redelivered_at: list[float] = field(default_factory=list)  # runs on attempt >= 2
    inline: Counter[int] = field(default_factory=Counter)
    unreadable: int = 0

    @property
    def duplicate_effects(self) -> int:
        return sum(count - 1 for count in self.effects.values() if count > 1)


def read_effect_records(
    lines: Iterable[str], records: EffectRecords | None = None
) -> EffectRecords:
    """Count processing records in JSON log lines (see the module docstring)."""
    found = records if records is not None else EffectRecords()
    for line in lines:
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            found.unreadable += 1  # a line cut short by SIGKILL
            continue
        if not isinstance(entry, dict):
            found.unreadable += 1
            continue
        message = entry.get("msg")
        if message == TASK_FAILED_RECORD:
            found.task_failures += 1
            continue
        if isinstance(message, str) and message.startswith(INLINE_RECORD_PREFIX):
            inline_id = inline_photo_id(entry)
            if inline_id is not None:
                found.inline[inline_id] += 1
            continue
        photo_id = entry.get("photo_id")
        if not is_id(photo_id) or message not in (PROCESSED_RECORD, NO_OP_RECORD):
            continue
        if message == PROCESSED_RECORD:
            found.effects[photo_id] += 1
        else:
            found.no_ops += 1
        attempt = entry.get("attempt")
        ts = entry.get("ts")
        if isinstance(attempt, int) and attempt >= 2 and isinstance(ts, int | float):
            found.redelivered_at.append(float(ts))
    return found


def error_kind(exc: BaseException) -> str:
    """A short label for a failed request: the exception type and, if any, its message."""
    detail = str(exc).strip()
    label = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return label[:100]


def inline_photo_id(entry: dict[str, Any]) -> int | None:
    """The photo of a web server's "queue unavailable" record, if it was a photo job: named
    by `photo_id`, or by the job's `queue` and idempotency `key` (the photo id)."""
    photo_id = entry.get("photo_id")
    if is_id(photo_id):
        return photo_id
    key = entry.get("key")
    if entry.get("queue") == PHOTO_QUEUE and isinstance(key, str) and key.isascii():
        return int(key) if key.isdigit() else None
    return None


def is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def percentile_ms(samples_s: list[float], q: float) -> float:
    """Nearest-rank q-th percentile of `samples_s`, in milliseconds (0 when empty)."""
    if not samples_s:
        return 0.0
    ordered = sorted(samples_s)
    return round(ordered[nearest_rank(q, len(ordered)) - 1] * 1000, 1)


# -- driving the app over HTTP ----------------------------------------------------------


@dataclass
class Uploader:
    """One simulated user: its account, the load balancer it talks to, its cookies."""

    index: int
    username: str
    password: str
    base_url: str
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class Producers:
    """What the uploaders did: every attempt, every acknowledgement."""

    attempts: int = 0
    acknowledged: dict[int, float] = field(default_factory=dict)  # photo id -> answer time
    owner: dict[int, int] = field(default_factory=dict)  # photo id -> uploader index
    unacknowledged: int = 0
    refused: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    given_up: int = 0  # uploads still unacknowledged when the uploads stopped


@dataclass
class Observed:
    """What the API showed: when each photo was first seen processed, and every photo
    that appeared in a user's list (with whether it was processed)."""

    processed_at: dict[int, float] = field(default_factory=dict)
    listed: dict[int, bool] = field(default_factory=dict)
    poll_errors: int = 0


class AppClient:
    """HTTP to the app through the load balancers, with each uploader's cookies."""

    def __init__(self, http: aiohttp.ClientSession) -> None:
        self.http = http

    async def request(
        self, user: Uploader, method: str, path: str, **kwargs: Any
    ) -> tuple[int, bytes]:
        headers = {"Cookie": cookie_header(user.cookies)} if user.cookies else {}
        async with self.http.request(
            method, f"{user.base_url}{path}", headers=headers, allow_redirects=False, **kwargs
        ) as response:
            body = await response.read()
            set_cookies = response.headers.getall("Set-Cookie", [])
            if set_cookies:
                apply_set_cookie(user.cookies, set_cookies, datetime.now(UTC))
            return response.status, body

    async def sign_up(self, user: Uploader) -> None:
        credentials = {"username": user.username, "password": user.password}
        status, body = await self.request(user, "POST", "/api/signup", json=credentials)
        if status != 201:
            raise RuntimeError(f"sign-up of {user.username} answered {status}: {body[:200]!r}")

    async def upload_once(self, user: Uploader, image: bytes, title: str) -> tuple[int, bytes]:
        form = aiohttp.FormData()
        form.add_field("title", title)
        form.add_field("photo", image, filename="photo.jpg", content_type="image/jpeg")
        return await self.request(user, "POST", "/api/photos", data=form)

    async def photo_list(self, user: Uploader) -> list[dict[str, Any]]:
        status, body = await self.request(user, "GET", "/api/photos")
        if status != 200:
            raise aiohttp.ClientError(f"photo list answered {status}")
        photos: list[dict[str, Any]] = json.loads(body)["photos"]
        return photos

    async def photo_processed(self, user: Uploader, photo_id: int) -> bool:
        status, body = await self.request(user, "GET", f"/api/photos/{photo_id}")
        if status != 200:
            raise aiohttp.ClientError(f"photo {photo_id} answered {status}")
        return bool(json.loads(body).get("processed"))


async def upload_steadily(
    client: AppClient, user: Uploader, producers: Producers, stop: asyncio.Event
) -> None:
    """Upload a new photo every `UPLOADERS / UPLOADS_PER_S` seconds until `stop`; an
    attempt without an acknowledgement is retried (a new request) until one arrives."""
    interval = UPLOADERS / UPLOADS_PER_S
    due = time.monotonic() + interval * user.index / UPLOADERS
    serial = 0
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
        if stop.is_set():
            return
        due = max(due + interval, time.monotonic())
        serial += 1
        tag = f"{user.username}/{serial}"
        image = unique_jpeg(base_jpeg(), tag)
        while True:
            producers.attempts += 1
            try:
                status, body = await client.upload_once(user, image, tag)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                producers.unacknowledged += 1
                producers.errors[error_kind(exc)] += 1
            else:
                photo_id = acknowledged_id(status, body)
                if photo_id is not None:
                    producers.acknowledged[photo_id] = time.monotonic()
                    producers.owner[photo_id] = user.index
                    break
                producers.errors[f"HTTP {status}"] += 1
                if status >= 500:
                    producers.unacknowledged += 1
                else:
                    producers.refused += 1
                    break  # the app said no: it stored nothing, so there is no retry
            if stop.is_set():
                producers.given_up += 1
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RETRY_PAUSE_S)


async def look_once(
    client: AppClient, users: list[Uploader], producers: Producers, observed: Observed
) -> None:
    """One poll: each user's photo list, then any pending photo the list did not show."""

    async def look(user: Uploader) -> None:
        pending = {
            pid
            for pid, owner in producers.owner.items()
            if owner == user.index and pid not in observed.processed_at
        }
        try:
            photos = await client.photo_list(user)
            now = time.monotonic()
            for photo in photos:
                photo_id, processed = int(photo["id"]), bool(photo["processed"])
                observed.listed[photo_id] = processed
                if processed and photo_id not in observed.processed_at:
                    observed.processed_at[photo_id] = now
            for photo_id in pending - {int(photo["id"]) for photo in photos}:
                if await client.photo_processed(user, photo_id):
                    observed.processed_at[photo_id] = time.monotonic()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KeyError):
            observed.poll_errors += 1  # the web servers may all be down right now

    await asyncio.gather(*(look(user) for user in users))


async def watch_processed(
    client: AppClient, users: list[Uploader], producers: Producers, observed: Observed
) -> None:
    """Poll every `POLL_INTERVAL_S` until cancelled."""
    while True:
        await look_once(client, users, producers, observed)
        await asyncio.sleep(POLL_INTERVAL_S)


# -- watching the topology ---------------------------------------------------------------


@dataclass
class TopologySamples:
    peak_depth: int = 0
    peak_in_flight: int = 0
    worker_counts: list[dict[str, Any]] = field(default_factory=list)


def worker_count(supervisor: Supervisor) -> dict[str, dict[str, int]]:
    """Worker processes per DC: supervised, and alive (a process that has not exited)."""
    return {
        "supervised": {dc: len(supervisor.workers(dc)) for dc in supervisor.config.dcs},
        "alive": {
            dc: sum(1 for m in supervisor.workers(dc) if m.pid is not None)
            for dc in supervisor.config.dcs
        },
    }


async def sample_topology(
    supervisor: Supervisor, queue: MessageQueue, timeline: Timeline, samples: TopologySamples
) -> None:
    """Queue depth (peak) and the worker count (at every change), every 0.25 s."""
    last: dict[str, dict[str, int]] | None = None
    while True:
        counts = worker_count(supervisor)
        if counts != last:
            at = round(time.monotonic() - timeline.started, 2)
            samples.worker_counts.append({"t_s": at, **counts})
            last = counts
        with contextlib.suppress(QueueError):
            stats = await queue.stats(PHOTO_QUEUE)
            samples.peak_depth = max(samples.peak_depth, stats.ready)
            samples.peak_in_flight = max(samples.peak_in_flight, stats.in_flight or 0)
        await asyncio.sleep(SAMPLE_INTERVAL_S)


async def busy_worker(
    supervisor: Supervisor, http: aiohttp.ClientSession
) -> tuple[ManagedProcess, int]:
    """A worker whose /healthz reports a task in flight right now, with that count."""
    found: list[tuple[ManagedProcess, int]] = []

    async def in_flight(managed: ManagedProcess) -> int:
        try:
            async with http.get(managed.spec.health_url) as response:
                health = await response.json()
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            return 0
        count = health.get("in_flight", 0) if isinstance(health, dict) else 0
        return count if isinstance(count, int) else 0

    async def any_busy() -> bool:
        for dc in supervisor.config.dcs:
            for managed in supervisor.workers(dc):
                if managed.pid is not None and (count := await in_flight(managed)) > 0:
                    found.append((managed, count))
                    return True
        return False

    await wait_until(any_busy, 30, "a worker with a task in flight")
    return found[0]


def restarted(managed: ManagedProcess, old_pid: int | None) -> bool:
    """Whether a killed component runs again, healthy, as a new process."""
    return managed.state is ComponentState.RUNNING and managed.pid not in (None, old_pid)


@dataclass
class FaultTimes:
    """When the faults came (wall clock, to place log records between them), and how many
    tasks the killed worker had in flight."""

    worker_killed: float = 0.0
    everything_killed: float = 0.0
    in_flight_at_kill: int = 0


async def inject_faults(
    supervisor: Supervisor,
    http: aiohttp.ClientSession,
    producers: Producers,
    timeline: Timeline,
    times: FaultTimes,
) -> None:
    """The faults of the module docstring, in order, each marked on the timeline."""
    await wait_until(
        lambda: len(producers.acknowledged) >= WARMUP_ACKNOWLEDGED, 60, "the first uploads"
    )
    logs = supervisor.paths.logs
    redelivered_before = len(read_logs(logs).redelivered_at)
    victim, in_flight = await busy_worker(supervisor, http)
    pid = supervisor.kill(victim.spec.name, restart=True)
    times.worker_killed, times.in_flight_at_kill = time.time(), in_flight
    waited_s = VISIBILITY_TIMEOUT_S + REDELIVERY_WAIT_S
    deadline = time.monotonic() + waited_s
    timeline.mark(f"SIGKILL {victim.spec.name} (pid {pid}) with {in_flight} task(s) in flight")
    await wait_until(lambda: restarted(victim, pid), 30, f"{victim.spec.name} to restart")
    timeline.mark(f"{victim.spec.name} restarted by the supervisor")
    # the next fault waits until a task came back: its lease ran out, and a worker
    # handled it on its next delivery (or, should none come, until the wait is over)
    while len(read_logs(logs).redelivered_at) == redelivered_before:
        if time.monotonic() > deadline:
            timeline.mark(f"no task handled on a redelivery within {waited_s:g} s of the kill")
            break
        await asyncio.sleep(SAMPLE_INTERVAL_S)
    else:
        timeline.mark("a task handled on a redelivery after the worker kill")

    targets = [m for m in supervisor.processes.values() if m.spec.kind in ("web", "worker")]
    pids = {m.spec.name: supervisor.kill(m.spec.name, restart=True) for m in targets}
    times.everything_killed = time.time()
    web = sum(1 for m in targets if m.spec.kind == "web")
    timeline.mark(f"SIGKILL every web server ({web}) and worker ({len(targets) - web})")
    await wait_until(
        lambda: all(restarted(m, pids[m.spec.name]) for m in targets),
        60,
        "every web server and worker to restart",
    )
    timeline.mark("every web server and worker restarted by the supervisor")
    await asyncio.sleep(AFTER_RESTART_S)


async def wait_for_processing(
    client: AppClient,
    users: list[Uploader],
    producers: Producers,
    observed: Observed,
    deadline_s: float,
    include_unacknowledged: bool,
) -> None:
    """Poll until every acknowledged photo (and, when asked, every stored unacknowledged
    one) was seen processed, or `deadline_s` passes; a timeout is a result, not an error."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        await look_once(client, users, producers, observed)
        waiting = set(producers.acknowledged) - set(observed.processed_at)
        if include_unacknowledged:
            waiting |= {pid for pid, done in observed.listed.items() if not done}
        if not waiting:
            return
        await asyncio.sleep(POLL_INTERVAL_S)


# -- the run -----------------------------------------------------------------------------


def scenario_config(base: MillionsConfig) -> MillionsConfig:
    """The topology the scenario runs: no CDN or geo DNS, a short visibility timeout."""
    return base.model_copy(
        update={
            "edge": base.edge.model_copy(update={"enabled": False}),
            "dns": base.dns.model_copy(update={"enabled": False}),
            "queue": base.queue.model_copy(update={"visibility_timeout_s": VISIBILITY_TIMEOUT_S}),
        }
    )


async def run(base: MillionsConfig, console: Console, quiet: bool) -> dict[str, Any]:
    producers, observed, samples, times = Producers(), Observed(), TopologySamples(), FaultTimes()
    timeline = Timeline(console=None if quiet else console)
    async with fresh_topology(
        scenario_config(base), console, quiet, scenario="queue"
    ) as supervisor:
        queue_at_end = await drive(supervisor, producers, observed, samples, times, timeline)
        duration_s = time.monotonic() - timeline.started
        # stopped here (fresh_topology's own stop then finds nothing left to stop), so that
        # every record is in the log files before they are read
        await supervisor.stop()
        records = read_logs(supervisor.paths.logs)
    return report(producers, observed, samples, times, records, queue_at_end, duration_s, timeline)


async def drive(
    supervisor: Supervisor,
    producers: Producers,
    observed: Observed,
    samples: TopologySamples,
    times: FaultTimes,
    timeline: Timeline,
) -> dict[str, int | None]:
    """Uploads, faults and the wait for processing; what is left in the queue at the end."""
    config = supervisor.config
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
            )
        )
        queue = open_queue(config.queue, supervisor.paths.root)
        stack.push_async_callback(queue.close)
        client = AppClient(http)
        run_id = secrets.token_hex(3)
        dcs = list(config.dcs)
        users = [
            Uploader(
                index=n,
                username=f"q{run_id}_{n}",
                password=secrets.token_urlsafe(12),
                base_url=config.lb_url(dcs[n % len(dcs)]),
            )
            for n in range(UPLOADERS)
        ]
        await asyncio.gather(*(client.sign_up(user) for user in users))

        timeline.started = time.monotonic()
        stop = asyncio.Event()
        background = [
            asyncio.create_task(sample_topology(supervisor, queue, timeline, samples)),
            asyncio.create_task(watch_processed(client, users, producers, observed)),
        ]
        uploads = [
            asyncio.create_task(upload_steadily(client, user, producers, stop)) for user in users
        ]
        try:
            timeline.mark(f"{UPLOADERS} users upload {UPLOADS_PER_S:g} photos/s")
            await inject_faults(supervisor, http, producers, timeline, times)
            stop.set()
            await asyncio.gather(*uploads)
            timeline.mark(f"uploads stopped: {len(producers.acknowledged)} acknowledged")
            await wait_for_processing(
                client, users, producers, observed, DRAIN_DEADLINE_S, include_unacknowledged=False
            )
            await wait_for_processing(
                client,
                users,
                producers,
                observed,
                UNACKNOWLEDGED_GRACE_S,
                include_unacknowledged=True,
            )
            timeline.mark("waited for processing")
            try:
                stats = await queue.stats(PHOTO_QUEUE)
            except QueueError:
                return {}
            return {
                "ready": stats.ready,
                "in_flight": stats.in_flight,
                "delayed": stats.delayed,
                "dead": stats.dead,
            }
        finally:
            stop.set()
            for task in [*uploads, *background]:
                task.cancel()
            await asyncio.gather(*uploads, *background, return_exceptions=True)


def read_logs(logs_dir: Path) -> EffectRecords:
    """The processing records of every worker's and web server's log file."""
    records = EffectRecords()
    for path in sorted(logs_dir.glob("worker-*.log")) + sorted(logs_dir.glob("web-*.log")):
        with path.open(encoding="utf-8", errors="replace") as lines:
            read_effect_records(lines, records)
    return records


def report(
    producers: Producers,
    observed: Observed,
    samples: TopologySamples,
    times: FaultTimes,
    records: EffectRecords,
    queue_at_end: dict[str, int | None],
    duration_s: float,
    timeline: Timeline,
) -> dict[str, Any]:
    published = set(producers.acknowledged)
    processed = published & set(observed.processed_at)
    latencies = [observed.processed_at[pid] - producers.acknowledged[pid] for pid in processed]
    stored_unacknowledged = set(observed.listed) - published
    return {
        "published": len(published),
        "processed": len(processed),
        "lost": len(published - processed),
        "duplicate_effects": records.duplicate_effects,
        "p50_ms": percentile_ms(latencies, 50),
        "p99_ms": percentile_ms(latencies, 99),
        "peak_depth": samples.peak_depth,
        "peak_in_flight": samples.peak_in_flight,
        "upload_attempts": producers.attempts,
        "unacknowledged": producers.unacknowledged,
        "refused": producers.refused,
        "given_up": producers.given_up,
        "upload_errors": dict(producers.errors),
        "stored_unacknowledged": len(stored_unacknowledged),
        "stored_unacknowledged_unprocessed": sum(
            1 for pid in stored_unacknowledged if not observed.listed[pid]
        ),
        "effects_applied": sum(records.effects.values()),
        "redundant_deliveries": records.no_ops,
        "redeliveries": len(records.redelivered_at),
        "redelivered_after_worker_kill": sum(
            1
            for at in records.redelivered_at
            if times.worker_killed <= at < times.everything_killed
        ),
        "in_flight_at_kill": times.in_flight_at_kill,
        "task_failures": records.task_failures,
        "inline_fallbacks": sum(records.inline.values()),
        "processed_without_effect_record": sum(
            1 for pid in processed if pid not in records.effects and pid not in records.inline
        ),
        "unreadable_log_lines": records.unreadable,
        "queue_at_end": queue_at_end,
        "poll_errors": observed.poll_errors,
        "poll_interval_ms": round(POLL_INTERVAL_S * 1000),
        "duration_s": round(duration_s, 2),
        "worker_counts": samples.worker_counts,
        "events": timeline.events,
    }


def passed(result: dict[str, Any]) -> bool:
    return bool(
        result["published"] > 0 and result["lost"] == 0 and result["duplicate_effects"] == 0
    )


SCENARIO = Scenario(
    name="queue",
    summary="upload photos while a worker is killed mid-task and then every web server "
    "and worker; expect 0 lost and 0 duplicate effects",
    run=run,
    passed=passed,
)
