"""Which processes a topology runs, where they listen and how they are started.

Pure: from the config and the current web-server count of each DC, derive the
component specs. The supervisor does the I/O.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from millions.topology.config import MAX_WORKER_INDEX, MillionsConfig

Kind = Literal["lb", "web", "worker", "edge", "dns", "replicator"]


@dataclass(frozen=True)
class ComponentSpec:
    """One OS process of the topology."""

    name: str
    kind: Kind
    dc: str  # "" for a component of the whole topology (the geo DNS)
    host: str
    port: int
    health_port: int
    index: int = 0  # web server / worker number within its DC (1-based); 0 for the others

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        if self.kind == "dns":
            return f"dns://{self.host}:{self.port}"
        if self.kind in ("worker", "replicator"):
            return f"http://{self.host}:{self.port}/metrics"
        return f"http://{self.host}:{self.port}/"

    @property
    def health_url(self) -> str:
        return f"http://{self.host}:{self.health_port}/healthz"

    def bind_addresses(self) -> list[tuple[str, int]]:
        ports = {self.port, self.health_port}
        return [(self.host, port) for port in sorted(ports)]


def lb_spec(config: MillionsConfig, dc: str) -> ComponentSpec:
    return ComponentSpec(
        name=f"lb-{dc}",
        kind="lb",
        dc=dc,
        host=config.lb_host(dc),
        port=config.lb.port,
        health_port=config.lb.ops_port,
    )


def web_spec(config: MillionsConfig, dc: str, index: int) -> ComponentSpec:
    return ComponentSpec(
        name=f"web-{dc}-{index}",
        kind="web",
        dc=dc,
        host=config.web_host(dc, index),
        port=config.web.port,
        health_port=config.web.port,
        index=index,
    )


def worker_spec(config: MillionsConfig, dc: str, index: int) -> ComponentSpec:
    """Queue worker `index` of `dc`; its port serves /metrics and /healthz."""
    return ComponentSpec(
        name=f"worker-{dc}-{index}",
        kind="worker",
        dc=dc,
        host=config.worker_host(dc, index),
        port=config.worker.metrics_port,
        health_port=config.worker.metrics_port,
        index=index,
    )


def replicator_spec(config: MillionsConfig, dc: str) -> ComponentSpec:
    """`dc`'s shard replicator; its port serves /metrics and /healthz."""
    return ComponentSpec(
        name=f"replicator-{dc}",
        kind="replicator",
        dc=dc,
        host=config.replicator_host(dc),
        port=config.replication.port,
        health_port=config.replication.port,
    )


def edge_spec(config: MillionsConfig, dc: str) -> ComponentSpec:
    return ComponentSpec(
        name=config.edge_name(dc),
        kind="edge",
        dc=dc,
        host=config.edge_host(dc),
        port=config.edge.port,
        health_port=config.edge.ops_port,
    )


def dns_spec(config: MillionsConfig) -> ComponentSpec:
    return ComponentSpec(
        name="dns",
        kind="dns",
        dc="",
        host=config.dns.host,
        port=config.dns.port,
        health_port=config.dns.admin_port,
    )


#: The order components start in (each group waits for the one before to be healthy);
#: they stop in the reverse order, so traffic stops at the front before the back goes.
START_ORDER: tuple[Kind, ...] = ("replicator", "web", "worker", "lb", "edge", "dns")


def initial_specs(config: MillionsConfig) -> list[ComponentSpec]:
    """Every component of a fresh topology, in `START_ORDER`."""
    specs: list[ComponentSpec] = []
    if config.replicates:
        specs.extend(replicator_spec(config, dc) for dc in config.dcs)
    for dc, dc_config in config.dcs.items():
        specs.extend(web_spec(config, dc, i) for i in range(1, dc_config.web + 1))
    for dc in config.dcs:
        specs.extend(worker_spec(config, dc, i) for i in range(1, initial_workers(config) + 1))
    specs.extend(lb_spec(config, dc) for dc in config.dcs)
    if config.edge.enabled:
        specs.extend(edge_spec(config, dc) for dc in config.dcs)
    if config.dns.enabled:
        specs.append(dns_spec(config))
    return specs


def initial_workers(config: MillionsConfig) -> int:
    """Workers each DC starts with: the autoscaler's floor (it grows the first DC's pool)."""
    return min(config.queue.workers.min_workers, MAX_WORKER_INDEX)


@dataclass(frozen=True)
class RunPaths:
    """Where a run keeps its files."""

    root: Path

    @property
    def control(self) -> Path:
        return self.root / "control.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def effective_config(self) -> Path:
        return self.root / "effective.toml"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log_file(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def output_file(self, name: str) -> Path:
        return self.logs / f"{name}.out"

    def backends_file(self, dc: str) -> Path:
        return self.root / "dc" / dc / "backends.json"

    def edge_cache(self, dc: str) -> Path:
        return self.root / "dc" / dc / "edge-cache"

    @property
    def admin_token(self) -> Path:
        return self.root / "admin-token"

    @property
    def dns_state(self) -> Path:
        return self.root / "dns-state.json"

    @property
    def app_data(self) -> Path:
        """The reference app's data (database, photos): web servers and workers share it."""
        return self.root / "data"


def command(spec: ComponentSpec, paths: RunPaths, config: MillionsConfig) -> list[str]:
    """The argv that runs `spec` as its own process through the public CLI.

    Secrets (the admin token) travel in the environment, not in argv, which `ps` shows."""
    cli = [sys.executable, "-m", "millions", spec.kind, "--name", spec.name]
    log_file = ["--log-file", str(paths.log_file(spec.name))]
    topology = ["--config", str(paths.effective_config), "--run-dir", str(paths.root)]
    if spec.kind in ("replicator", "worker"):
        what = ["--dc", spec.dc] if spec.kind == "replicator" else ["--tasks", config.worker.tasks]
        return [*cli, *what, "--metrics", spec.address, *log_file, *topology]
    base = [*cli, "--listen", spec.address, *log_file]
    if spec.kind == "edge":
        return [
            *base,
            "--origin",
            config.lb_url(spec.dc),
            "--ops",
            f"{spec.host}:{spec.health_port}",
            "--cache-dir",
            str(paths.edge_cache(spec.dc)),
            "--memory-bytes",
            str(config.edge.memory_bytes),
            "--disk-bytes",
            str(config.edge.disk_bytes),
        ]
    base += topology
    if spec.kind == "dns":
        return base
    if spec.kind == "web":
        return [*base, "--dc", spec.dc]
    return [
        *base,
        "--ops",
        f"{spec.host}:{spec.health_port}",
        "--backends-file",
        str(paths.backends_file(spec.dc)),
    ]
