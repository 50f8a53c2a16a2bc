"""Which processes a topology runs, where they listen and how they are started.

Pure: from the config and the current web-server count of each DC, derive the
component specs. The supervisor does the I/O.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from millions.topology.config import MillionsConfig

Kind = Literal["lb", "web"]


@dataclass(frozen=True)
class ComponentSpec:
    """One OS process of the topology."""

    name: str
    kind: Kind
    dc: str
    host: str
    port: int
    health_port: int
    index: int = 0  # web server number within its DC (1-based); 0 for a load balancer

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
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


def initial_specs(config: MillionsConfig) -> list[ComponentSpec]:
    """Every component of a fresh topology: web servers first, then load balancers."""
    specs: list[ComponentSpec] = []
    for dc, dc_config in config.dcs.items():
        specs.extend(web_spec(config, dc, i) for i in range(1, dc_config.web + 1))
    specs.extend(lb_spec(config, dc) for dc in config.dcs)
    return specs


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


def command(spec: ComponentSpec, paths: RunPaths) -> list[str]:
    """The argv that runs `spec` as its own process through the public CLI."""
    base = [
        sys.executable,
        "-m",
        "millions",
        spec.kind,
        "--config",
        str(paths.effective_config),
        "--run-dir",
        str(paths.root),
        "--name",
        spec.name,
        "--listen",
        spec.address,
        "--log-file",
        str(paths.log_file(spec.name)),
    ]
    if spec.kind == "lb":
        base += [
            "--ops",
            f"{spec.host}:{spec.health_port}",
            "--backends-file",
            str(paths.backends_file(spec.dc)),
        ]
    return base
