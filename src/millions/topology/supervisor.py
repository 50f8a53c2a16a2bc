"""The supervisor: starts every component as its own process, keeps them running.

It starts web servers, waits for their health checks, then the queue workers and the
load balancers; restarts a crashed component with backoff; adds and removes web
servers at runtime (the load balancer rereads its backend file on SIGHUP and drains
removed servers); sizes the first DC's worker pool to the queue's backlog every
`worker.autoscale_interval_s` (the decision is `millions.workers.decide_workers`; a
removed worker gets SIGTERM and finishes or releases its tasks); and stops everything
in order. Children die with the supervisor even if it is
killed with SIGKILL (PR_SET_PDEATHSIG), so no process is left orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import enum
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from millions.edge.admin import ADMIN_TOKEN_ENV
from millions.edge.links import send_purge
from millions.queue import QueueError, QueueStats, open_queue
from millions.shards import ShardCluster, ShardError, autosplit_forever
from millions.topology.backoff import RestartBackoff
from millions.topology.components import (
    START_ORDER,
    ComponentSpec,
    RunPaths,
    command,
    initial_specs,
    lb_spec,
    web_spec,
    worker_spec,
)
from millions.topology.config import MAX_WEB_INDEX, MAX_WORKER_INDEX, MillionsConfig, to_toml
from millions.topology.dc_data import DataCenterData, should_fail_over
from millions.topology.run_secrets import run_secret
from millions.workers.autoscale import (
    QueueLoad,
    Recommendation,
    ScalingPolicy,
    decide_workers,
    spread_workers,
    trim_history,
)

log = logging.getLogger("millions.supervisor")

PR_SET_PDEATHSIG = 1
HEALTH_PROBE_INTERVAL_S = 1.0
CONFIG_ERROR_EXIT = 2  # a component that exits 2 at start-up will never come up: fail fast
KIND_NAMES = {
    "web": "web servers",
    "worker": "queue workers",
    "lb": "load balancers",
    "edge": "CDN edges",
    "dns": "geo DNS server",
    "replicator": "shard replicators",
}
# front to back, as `status` lists
KIND_ORDER = {"dns": 0, "edge": 1, "lb": 2, "web": 3, "worker": 4, "replicator": 5}


class StartupError(Exception):
    """A component did not become healthy; the message says which and where its log is.

    `exit_code` is 2 when the cause is the config (say, an app that cannot be imported).
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ComponentState(enum.StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"
    BACKOFF = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    DOWN = "down"  # killed with --no-restart while the topology runs


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL when the supervisor dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def addresses_in_use(specs: list[ComponentSpec]) -> list[str]:
    """The listen addresses that something else already holds."""
    busy: list[str] = []
    for spec in specs:
        for host, port in spec.bind_addresses():
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                # as the servers do: a port in TIME_WAIT from a previous run is free to use
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((host, port))
                except OSError:
                    busy.append(f"{host}:{port}")
    return busy


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


def queue_load(stats: QueueStats, workers: int) -> QueueLoad:
    """What the autoscaler sees of a queue. Throughput per worker is only a capacity
    estimate while a backlog keeps the workers busy; otherwise it is left unknown."""
    per_worker = None
    if stats.ready > 0 and workers > 0 and stats.ack_rate:
        per_worker = stats.ack_rate / workers
    return QueueLoad(
        depth=stats.ready,
        oldest_age_s=stats.oldest_age_s,
        arrival_rate=stats.publish_rate,
        per_worker_rate=per_worker,
    )


def scaling_policy(config: MillionsConfig) -> ScalingPolicy:
    """`[queue.workers]` as a policy, bounded by the addresses a DC has for workers."""
    policy = ScalingPolicy.from_config(config.queue.workers)
    return dataclasses.replace(
        policy,
        min_workers=min(policy.min_workers, MAX_WORKER_INDEX),
        max_workers=min(policy.max_workers, MAX_WORKER_INDEX),
    )


@dataclass
class ManagedProcess:
    """One component process and its restart bookkeeping."""

    spec: ComponentSpec
    paths: RunPaths
    argv: list[str]
    env: dict[str, str]
    backoff: RestartBackoff
    on_change: Callable[[], None]
    state: ComponentState = ComponentState.STOPPED
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_on_exit: bool = True
    last_exit: int | None = None
    _monitor: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.returncode is None else None

    def _set(self, state: ComponentState) -> None:
        if state is not self.state:
            self.state = state
            self.on_change()

    async def start(self) -> None:
        self.paths.logs.mkdir(parents=True, exist_ok=True)
        output = self.paths.output_file(self.spec.name).open("ab")
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        finally:
            output.close()
        self.started_at = time.time()
        self.restart_on_exit = True
        self._set(ComponentState.STARTING)
        self._monitor = asyncio.create_task(self._watch(self.process))
        log.info("started", extra={"component": self.spec.name, "pid": self.process.pid})

    async def _watch(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if process is not self.process:
            return
        self.last_exit = code
        if self.state is ComponentState.STOPPING:
            self._set(ComponentState.STOPPED)
            return
        if not self.restart_on_exit:
            self._set(ComponentState.DOWN)
            return
        delay = self.backoff.next_delay(time.time() - self.started_at)
        log.warning(
            "component exited; restarting",
            extra={"component": self.spec.name, "code": code, "delay_s": delay},
        )
        self._set(ComponentState.BACKOFF)
        await asyncio.sleep(delay)
        if self.state is ComponentState.BACKOFF and self.restart_on_exit:
            self.restarts += 1
            await self.start()

    def kill(self, restart: bool) -> int | None:
        """SIGKILL the process (chaos); the watcher restarts it when `restart`."""
        pid = self.pid
        self.restart_on_exit = restart
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
        return pid

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`; no restart."""
        self.restart_on_exit = False
        self._set(ComponentState.STOPPING)
        process = self.process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                log.warning("did not stop in time; killing", extra={"component": self.spec.name})
                process.kill()
                await process.wait()
        if self._monitor is not None:
            self._monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._monitor
        self._set(ComponentState.STOPPED)

    def status(self) -> dict[str, Any]:
        alive = self.pid is not None
        return {
            "name": self.spec.name,
            "kind": self.spec.kind,
            "dc": self.spec.dc,
            "state": str(self.state),
            "pid": self.pid,
            "address": self.spec.address,
            "url": self.spec.url,
            "uptime_s": round(time.time() - self.started_at, 1) if alive else 0.0,
            "restarts": self.restarts,
        }


class Supervisor:
    """Runs one topology from one config in one run directory."""

    def __init__(self, config: MillionsConfig, run_dir: Path) -> None:
        self.config = config
        self.paths = RunPaths(run_dir.resolve())
        self.processes: dict[str, ManagedProcess] = {}
        self.phase = "starting"
        self.started_at = time.time()
        self._http: aiohttp.ClientSession | None = None
        self._probe_task: asyncio.Task[None] | None = None
        self._autoscale_task: asyncio.Task[None] | None = None
        self._autosplit_task: asyncio.Task[None] | None = None
        self._failover_task: asyncio.Task[None] | None = None
        self.data = DataCenterData(config, self.paths.root)
        self.failovers: dict[str, dict[str, Any]] = {}  # the promotion report per failed DC
        self.failbacks: dict[str, dict[str, Any]] = {}
        self._down_since: dict[str, float] = {}
        self._dc_lock = asyncio.Lock()
        self._retiring: dict[asyncio.Task[None], ManagedProcess] = {}
        self._scale_lock = asyncio.Lock()
        self.control_url: str | None = None
        self._admin_token: str | None = None

    @property
    def admin_token(self) -> str:
        """The bearer token of the edges' purge API (shared with the web servers)."""
        if self._admin_token is None:
            self._admin_token = run_secret(self.paths.admin_token)
        return self._admin_token

    # -- lifecycle -------------------------------------------------------------------

    async def start(self, progress: Callable[[str], None] | None = None) -> None:
        """Start everything and wait until each component is healthy."""
        notify = progress or (lambda _message: None)
        specs = initial_specs(self.config)
        busy = addresses_in_use(specs)
        if busy:
            raise StartupError(
                f"address already in use: {', '.join(busy)} "
                "(is another topology running? stop it with `millions down`)"
            )
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.paths.effective_config.write_text(to_toml(self.config))
        await self._migrate_shards(notify)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2.0))
        for dc in self.config.dcs:
            self._write_backends(dc, [s for s in specs if s.kind == "web" and s.dc == dc])
        for kind in START_ORDER:
            group = [s for s in specs if s.kind == kind]
            if group:
                notify(f"starting {len(group)} {KIND_NAMES[kind]}")
                await self._start_group(group, notify)
        self.phase = "running"
        self._probe_task = asyncio.create_task(self._probe_forever())
        self._autoscale_task = asyncio.create_task(self._autoscale_forever())
        if self.config.shards.hot.auto_split:
            self._autosplit_task = asyncio.create_task(self._autosplit_forever())
        if self.config.replicates:
            self._failover_task = asyncio.create_task(self._failover_forever())
        self.write_state()

    async def _migrate_shards(self, notify: Callable[[str], None]) -> None:
        """Bring every shard to the app's schema before any server uses it, so a bad
        shards config fails the start-up with its own message, not as a crashing web tier."""
        notify("migrating the shards")
        cluster = ShardCluster(self.config.shards, self.paths.root)
        try:
            applied = await cluster.migrate()
        except ShardError as exc:
            raise StartupError(f"shards: {exc} (check the [shards] table of the config)") from None
        finally:
            await cluster.close()
        changed = {name: versions for name, versions in applied.items() if versions}
        notify(
            f"shards ready: {len(applied)} shard(s)"
            + (f", migrations applied: {changed}" if changed else ", schema up to date")
        )
        if self.config.replicates:
            primaries = await self.data.place()
            notify(
                "shard primaries: "
                + ", ".join(f"{shard} in {dc}" for shard, dc in primaries.items())
                + "; replicas in every other DC"
            )

    async def _autosplit_forever(self) -> None:
        """Split hot ranges while running (`shards.hot.auto_split`); decisions are logged."""
        cluster = ShardCluster(self.config.shards, self.paths.root)
        try:
            await autosplit_forever(
                cluster,
                interval_s=self.config.shards.hot.autosplit_interval_s,
                on_event=lambda message: log.info("shards autosplit", extra={"event": message}),
            )
        finally:
            await cluster.close()

    async def _start_group(self, specs: list[ComponentSpec], notify: Callable[[str], None]) -> None:
        for spec in specs:
            await self._add(spec).start()
        await asyncio.gather(*(self._wait_healthy(self.processes[s.name]) for s in specs))
        for spec in specs:
            notify(f"{spec.name} healthy on {spec.address}")

    def _add(self, spec: ComponentSpec) -> ManagedProcess:
        managed = ManagedProcess(
            spec=spec,
            paths=self.paths,
            argv=command(spec, self.paths, self.config),
            env={
                "MILLIONS_DATA_DIR": str(self.paths.app_data),  # unless the caller set one
                **os.environ,
                ADMIN_TOKEN_ENV: self.admin_token,
            },
            backoff=RestartBackoff(
                self.config.supervisor.restart_backoff_s,
                self.config.supervisor.restart_backoff_max_s,
            ),
            on_change=self.write_state,
        )
        self.processes[spec.name] = managed
        return managed

    async def _wait_healthy(self, managed: ManagedProcess) -> None:
        deadline = time.monotonic() + self.config.supervisor.start_timeout_s
        while time.monotonic() < deadline:
            if await self._probe(managed.spec):
                managed._set(ComponentState.RUNNING)
                return
            if managed.last_exit == CONFIG_ERROR_EXIT:
                raise StartupError(
                    f"{managed.spec.name}: {self._last_output_line(managed)}", CONFIG_ERROR_EXIT
                )
            await asyncio.sleep(0.1)
        raise StartupError(
            f"{managed.spec.name} did not become healthy at {managed.spec.health_url}; "
            f"see {self.paths.output_file(managed.spec.name)} and "
            f"{self.paths.log_file(managed.spec.name)}"
        )

    def _last_output_line(self, managed: ManagedProcess) -> str:
        try:
            lines = self.paths.output_file(managed.spec.name).read_text(errors="replace")
        except OSError:
            return f"exited with code {managed.last_exit}"
        tail = lines.strip().splitlines()
        return tail[-1] if tail else f"exited with code {managed.last_exit}"

    async def _probe(self, spec: ComponentSpec) -> bool:
        assert self._http is not None
        try:
            async with self._http.get(
                spec.health_url, timeout=aiohttp.ClientTimeout(total=1.0)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def _probe_forever(self) -> None:
        """Keep each component's state honest: running vs unhealthy."""
        while True:
            await asyncio.sleep(HEALTH_PROBE_INTERVAL_S)
            for managed in list(self.processes.values()):
                if managed.state in (
                    ComponentState.RUNNING,
                    ComponentState.UNHEALTHY,
                    ComponentState.STARTING,
                ):
                    healthy = await self._probe(managed.spec)
                    if managed.state in (
                        ComponentState.RUNNING,
                        ComponentState.UNHEALTHY,
                        ComponentState.STARTING,
                    ):
                        managed._set(
                            ComponentState.RUNNING if healthy else ComponentState.UNHEALTHY
                        )

    async def stop(self) -> None:
        """Stop in the reverse of START_ORDER: edges, load balancers, then web servers."""
        self.phase = "stopping"
        self.write_state()
        for task in (
            self._failover_task,
            self._autosplit_task,
            self._autoscale_task,
            self._probe_task,
        ):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for kind in reversed(START_ORDER):
            group = [m for m in self.processes.values() if m.spec.kind == kind]
            await asyncio.gather(*(m.stop(self._stop_timeout(m.spec)) for m in group))
        await asyncio.gather(*self._retiring)
        if self._http is not None:
            await self._http.close()
        self.phase = "stopped"
        self.write_state()

    # -- chaos and scaling -----------------------------------------------------------

    def kill(self, name: str, restart: bool = True) -> int | None:
        """SIGKILL one component; returns the killed pid."""
        managed = self.processes.get(name)
        if managed is None:
            raise KeyError(name)
        return managed.kill(restart)

    def dc_processes(self, dc: str) -> list[ManagedProcess]:
        """Every component of data center `dc` (KeyError for an unknown DC)."""
        if dc not in self.config.dcs:
            raise KeyError(dc)
        return [m for m in self._ordered() if m.spec.dc == dc]

    async def fail_dc(self, dc: str) -> dict[str, int | None]:
        """A data center failure (chaos): SIGKILL every process of `dc` and leave them
        down, as a power cut would, and cut its shard copies off (`DataCenterData`); the
        pids killed by component name."""
        killed = {m.spec.name: m.kill(restart=False) for m in self.dc_processes(dc)}
        if self.config.replicates:
            async with self._dc_lock:
                if dc not in self.failovers:
                    cut = await self.data.cut_off(dc)
                    log.warning("data center failed", extra={"dc": dc, "primaries_cut_off": cut})
        return killed

    async def failover_dc(self, dc: str) -> dict[str, Any]:
        """Promote replicas outside `dc` for the shards whose primary is there (`millions
        dc failover`, or automatically); the report, with the writes lost."""
        if dc not in self.config.dcs:
            raise KeyError(dc)
        if not self.config.replicates:
            raise ValueError("replication is off: the shards have no copies to promote")
        async with self._dc_lock:
            report = await self.data.promote(dc)
            self.failovers[dc] = report
        log.warning(
            "failover", extra={"dc": dc, **{k: report[k] for k in ("writes_lost", "promoted")}}
        )
        self.write_state()
        return report

    async def restore_dc(self, dc: str) -> dict[str, Any]:
        """Start again the components of `dc` that are down (after `fail_dc` or `kill
        --no-restart`), in start order, and wait until they are healthy. With replication,
        its copies then catch up as replicas and, after a failover, its shards switch back."""
        down = [m for m in self.dc_processes(dc) if m.state is ComponentState.DOWN]
        for kind in START_ORDER:
            group = [m for m in down if m.spec.kind == kind]
            for managed in group:
                await managed.start()
            await asyncio.gather(*(self._wait_healthy(m) for m in group))
        result: dict[str, Any] = {"started": [m.spec.name for m in down]}
        if self.config.replicates:
            async with self._dc_lock:
                if dc in self.failovers:
                    result["failback"] = self.failbacks[dc] = await self.data.fail_back(dc)
                    del self.failovers[dc]
                else:
                    result["reconnected"] = await self.data.reconnect(dc)
            self._down_since.pop(dc, None)
            self.write_state()
        return result

    async def _failover_forever(self) -> None:
        """Promote replicas once every process of a DC has been down for
        `replication.failover_after_s` (a DC whose processes restart is not down)."""
        after = self.config.replication.failover_after_s
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            for dc in self.config.dcs:
                down = all(m.state is ComponentState.DOWN for m in self.dc_processes(dc))
                if not down or dc in self.failovers:
                    if not down:
                        self._down_since.pop(dc, None)
                    continue
                since = self._down_since.setdefault(dc, now)
                if should_fail_over(since, now, after):
                    try:
                        await self.failover_dc(dc)
                    except ShardError as exc:
                        log.error("automatic failover failed", extra={"dc": dc, "error": str(exc)})

    def web_servers(self, dc: str) -> list[ManagedProcess]:
        return sorted(
            (m for m in self.processes.values() if m.spec.kind == "web" and m.spec.dc == dc),
            key=lambda m: m.spec.index,
        )

    async def scale(self, dc: str, web: int) -> dict[str, list[str]]:
        """Set the number of web servers in `dc`; the load balancer follows live."""
        if dc not in self.config.dcs:
            raise KeyError(dc)
        if not 0 <= web <= MAX_WEB_INDEX:
            raise ValueError(f"web must be between 0 and {MAX_WEB_INDEX}")
        async with self._scale_lock:
            current = self.web_servers(dc)
            added: list[str] = []
            removed: list[str] = []
            if web > len(current):
                used = {m.spec.index for m in current}
                indices = [i for i in range(1, MAX_WEB_INDEX + 1) if i not in used][
                    : web - len(current)
                ]
                specs = [web_spec(self.config, dc, i) for i in indices]
                busy = addresses_in_use(specs)
                if busy:
                    raise StartupError(f"address already in use: {', '.join(busy)}")
                for spec in specs:
                    await self._add(spec).start()
                await asyncio.gather(*(self._wait_healthy(self.processes[s.name]) for s in specs))
                added = [s.name for s in specs]
                await self._publish_backends(dc)
            elif web < len(current):
                leaving = current[web:]
                removed = [m.spec.name for m in leaving]
                for managed in leaving:
                    del self.processes[managed.spec.name]
                await self._publish_backends(dc)
                await self._wait_drained(dc, [m.spec.address for m in leaving])
                await asyncio.gather(
                    *(m.stop(self.config.supervisor.stop_timeout_s) for m in leaving)
                )
            self.write_state()
            return {"added": added, "removed": removed}

    def _stop_timeout(self, spec: ComponentSpec) -> float:
        """A worker gets its grace period (and a moment to release what did not finish)."""
        timeout = self.config.supervisor.stop_timeout_s
        if spec.kind == "worker":
            return max(timeout, self.config.queue.workers.grace_s + 2.0)
        return timeout

    def workers(self, dc: str) -> list[ManagedProcess]:
        return sorted(
            (m for m in self.processes.values() if m.spec.kind == "worker" and m.spec.dc == dc),
            key=lambda m: m.spec.index,
        )

    async def scale_workers(self, dc: str, count: int) -> dict[str, list[str]]:
        """Set the number of queue workers in `dc`. New ones are started and waited for;
        removed ones get SIGTERM and finish (or release) their tasks in the background."""
        if dc not in self.config.dcs:
            raise KeyError(dc)
        if not 0 <= count <= MAX_WORKER_INDEX:
            raise ValueError(f"workers must be between 0 and {MAX_WORKER_INDEX}")
        async with self._scale_lock:
            current = self.workers(dc)
            added: list[str] = []
            removed: list[str] = []
            if count > len(current):
                used = {m.spec.index for m in current} | {
                    m.spec.index for m in self._retiring.values() if m.spec.dc == dc
                }
                free = [i for i in range(1, MAX_WORKER_INDEX + 1) if i not in used]
                specs = [worker_spec(self.config, dc, i) for i in free[: count - len(current)]]
                busy = addresses_in_use(specs)
                if busy:
                    raise StartupError(f"address already in use: {', '.join(busy)}")
                for spec in specs:
                    await self._add(spec).start()
                added = [s.name for s in specs]
                await asyncio.gather(*(self._wait_healthy(self.processes[n]) for n in added))
            elif count < len(current):
                for managed in current[count:]:
                    del self.processes[managed.spec.name]
                    removed.append(managed.spec.name)
                    task = asyncio.create_task(managed.stop(self._stop_timeout(managed.spec)))
                    self._retiring[task] = managed
                    task.add_done_callback(self._retiring.pop)
            self.write_state()
            return {"added": added, "removed": removed}

    async def _autoscale_forever(self) -> None:
        """Size the worker pools to the backlog of `worker.autoscale_queue`. Every DC's
        workers consume the same queue, so the decision is for the whole pool (each DC's
        min and max added up), spread evenly over the DCs."""
        dcs = list(self.config.dcs)
        name = self.config.worker.autoscale_queue
        per_dc = scaling_policy(self.config)
        policy = dataclasses.replace(
            per_dc,
            min_workers=per_dc.min_workers * len(dcs),
            max_workers=per_dc.max_workers * len(dcs),
        )
        queue = open_queue(self.config.queue, self.paths.root)
        history: list[Recommendation] = []
        last_change: float | None = None
        try:
            while True:
                await asyncio.sleep(self.config.worker.autoscale_interval_s)
                try:
                    stats = await queue.stats(name)
                except QueueError as exc:
                    log.warning("autoscaler: queue stats failed", extra={"error": str(exc)})
                    continue
                current = sum(len(self.workers(dc)) for dc in dcs)
                now = time.monotonic()
                decision = decide_workers(
                    current, queue_load(stats, current), policy, history, last_change, now
                )
                history = trim_history(
                    [*history, Recommendation(now, decision.recommendation)], now, policy
                )
                if decision.desired == current:
                    continue
                last_change = now
                log.info(
                    "autoscaling workers",
                    extra={"from": current, "to": decision.desired, "reason": decision.reason},
                )
                for dc, count in spread_workers(decision.desired, dcs).items():
                    if count == len(self.workers(dc)):
                        continue
                    try:
                        await self.scale_workers(dc, count)
                    except StartupError as exc:
                        log.warning(
                            "autoscaler: could not add workers", extra={"dc": dc, "error": str(exc)}
                        )
        finally:
            await queue.close()

    def _write_backends(self, dc: str, specs: list[ComponentSpec]) -> None:
        write_json_atomic(self.paths.backends_file(dc), {"backends": [s.address for s in specs]})

    async def _publish_backends(self, dc: str) -> None:
        self._write_backends(dc, [m.spec for m in self.web_servers(dc)])
        lb = self.processes.get(lb_spec(self.config, dc).name)
        if lb is not None and lb.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(lb.pid, signal.SIGHUP)

    async def _wait_drained(self, dc: str, addresses: list[str]) -> None:
        """Wait until the load balancer has finished with the removed servers."""
        assert self._http is not None
        spec = lb_spec(self.config, dc)
        url = f"http://{spec.host}:{spec.health_port}/backends"
        deadline = time.monotonic() + self.config.lb.drain_timeout_s + 1.0
        while time.monotonic() < deadline:
            try:
                async with self._http.get(url) as response:
                    listed = await response.json()
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                return  # no load balancer to wait for
            present = {b["address"] for b in listed}
            if not present.intersection(addresses):
                return
            await asyncio.sleep(0.05)
        log.warning("drain timed out", extra={"dc": dc, "servers": addresses})

    # -- CDN -------------------------------------------------------------------------

    def edges(self) -> list[ManagedProcess]:
        return [m for m in self._ordered() if m.spec.kind == "edge"]

    async def purge(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """Send one purge request (the edge admin API's JSON body) to every edge at once.

        A `url` that is a path (`/static/a.css`) is sent to each edge as the URL of that
        path on the edge's own address. Each edge's answer is reported on its own: one edge
        being down does not stop the others from purging, and the caller sees which did not."""
        return list(await asyncio.gather(*(self._purge_edge(m, request) for m in self.edges())))

    async def _purge_edge(self, managed: ManagedProcess, request: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        spec = managed.spec
        target = request.get("url")
        if isinstance(target, str) and target.startswith("/"):
            request = {**request, "url": f"http://{spec.address}{target}"}
        url = f"http://{spec.host}:{spec.health_port}/purge"
        outcome = await send_purge(self._http, url, self.admin_token, request)
        result: dict[str, Any] = {
            "edge": spec.name,
            "dc": spec.dc,
            "ok": outcome.ok,
            "purged": outcome.purged,
        }
        if not outcome.ok:
            result["error"] = f"{outcome.error} (edge {managed.state})"
        return result

    # -- state -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "supervisor_pid": os.getpid(),
            "phase": self.phase,
            "run_dir": str(self.paths.root),
            "control_url": self.control_url,
            "uptime_s": round(time.time() - self.started_at, 1),
            "components": [m.status() for m in self._ordered()],
            "failovers": self.failovers,
            "failbacks": self.failbacks,
        }

    def _ordered(self) -> list[ManagedProcess]:
        dcs = list(self.config.dcs)
        return sorted(
            self.processes.values(),
            key=lambda m: (
                dcs.index(m.spec.dc) if m.spec.dc else -1,
                KIND_ORDER[m.spec.kind],
                m.spec.index,
            ),
        )

    def write_state(self) -> None:
        with contextlib.suppress(OSError):
            write_json_atomic(self.paths.state, self.status())
