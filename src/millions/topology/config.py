"""The topology config: one TOML file (`millions.toml`) or the built-in default.

The config is validated in full before anything starts. A problem is reported as one
line naming the dotted key and what is wrong (`ConfigError`); the CLI prints it and
exits with code 2.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from millions.queue.config import QueueConfig
from millions.queue.messages import check_queue_name
from millions.shards.config import ShardsConfig
from millions.topology.errors import ConfigError, read_toml

__all__ = ["ConfigError", "MillionsConfig", "load", "parse", "to_toml"]

DEFAULT_CONFIG_FILE = "millions.toml"
MAX_WEB_INDEX = 89  # web servers live on <subnet>.11 .. <subnet>.99
MAX_WORKER_INDEX = 154  # queue workers on <subnet>.101 .. <subnet>.254
DC_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SessionsConfig(_Section):
    """Where sessions live. Every web server of every DC shares this store."""

    engine: Literal["sqlite", "redis", "postgres"] = "sqlite"
    url: str = Field(
        default="",
        description="redis://... or postgresql://...; for sqlite a file path "
        "(default: <run_dir>/sessions.sqlite3)",
    )
    ttl_s: int = Field(default=1800, ge=10, le=30 * 24 * 3600, description="idle expiry")
    cookie_name: str = Field(default="millions_session", pattern=r"^[A-Za-z0-9_\-]{1,64}$")
    secret: str = Field(
        default="",
        description="cookie signing key; empty means generated once per run directory",
    )

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, url: str) -> str:
        if url and not re.match(r"^(redis|rediss|postgres|postgresql|sqlite)://|^/|^\.", url):
            raise ValueError("expected redis://, postgresql:// or a file path")
        return url


class LoadBalancerConfig(_Section):
    """The per-DC load balancer (an HTTP/1.1 reverse proxy)."""

    port: int = Field(default=8080, ge=1, le=65535)
    ops_port: int = Field(default=9000, ge=1, le=65535, description="/healthz, /metrics")
    health_interval_s: float = Field(default=1.0, gt=0, le=60)
    health_timeout_s: float = Field(default=1.0, gt=0, le=60)
    rise: int = Field(default=2, ge=1, le=100, description="passes before a server is up")
    fall: int = Field(default=2, ge=1, le=100, description="failures before a server is down")
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    response_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    max_header_bytes: int = Field(default=16384, ge=1024, le=1 << 20)
    retries: int = Field(default=2, ge=0, le=10, description="extra tries on another server")
    drain_timeout_s: float = Field(default=10.0, gt=0, le=600)


class WebConfig(_Section):
    """The stateless web servers (uvicorn running the ASGI app)."""

    port: int = Field(default=8000, ge=1, le=65535)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1 << 30)


class EdgeConfig(_Section):
    """The CDN edges: one caching reverse proxy in front of each DC's load balancer."""

    enabled: bool = Field(default=True, description="run an edge in front of every DC")
    port: int = Field(default=8080, ge=1, le=65535)
    ops_port: int = Field(default=9000, ge=1, le=65535, description="/healthz, /metrics, /purge")
    memory_bytes: int = Field(default=64 << 20, ge=1 << 20, le=1 << 40, description="memory tier")
    disk_bytes: int = Field(default=1 << 30, ge=1 << 20, le=1 << 44, description="disk tier")


class GeoDnsConfig(_Section):
    """The geo DNS server: `www.<zone>` and `cdn.<zone>` name the nearest healthy DC and
    edge for the client's region (from its source address or EDNS Client Subnet)."""

    enabled: bool = Field(default=True, description="run the geo DNS server")
    zone: str = Field(default="millions.test", pattern=r"^[a-z0-9]([a-z0-9.-]{0,200}[a-z0-9])?$")
    host: str = Field(default="127.0.53.1", description="loopback address of the server")
    port: int = Field(default=1053, ge=1, le=65535, description="UDP and TCP")
    admin_port: int = Field(default=9053, ge=1, le=65535, description="/healthz, /state, drain")
    ttl_s: int = Field(default=5, ge=0, le=86400, description="TTL of www and cdn answers")
    check_interval_s: float = Field(default=1.0, gt=0, le=60, description="DC and edge checks")

    @field_validator("host")
    @classmethod
    def _loopback_host(cls, host: str) -> str:
        try:
            address = ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError("expected an IPv4 address such as 127.0.53.1") from None
        if not address.is_loopback:
            raise ValueError("must be inside 127.0.0.0/8 (loopback only)")
        return host


class WorkerProcessConfig(_Section):
    """The queue worker processes the supervisor runs in each DC (how many, and the
    autoscaler's bounds and pace: `[queue.workers]`)."""

    tasks: str = Field(
        default="millions.app.pipeline:tasks",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="the task registry every worker runs, as module:attribute",
    )
    metrics_port: int = Field(default=9100, ge=1, le=65535, description="/metrics, /healthz")
    autoscale_queue: str = Field(
        default="photo.process",
        description="the queue whose backlog sizes the worker pools",
    )
    autoscale_interval_s: float = Field(default=1.0, gt=0, le=60)

    @field_validator("autoscale_queue")
    @classmethod
    def _queue_name(cls, name: str) -> str:
        return check_queue_name(name)


class ReplicationConfig(_Section):
    """Cross-DC copies of the shards (with two or more DCs): each shard's primary is in one
    DC, a replicator process per DC (`<subnet>.9`) keeps that DC's replicas current."""

    enabled: bool = True
    port: int = Field(default=9109, ge=1, le=65535, description="replicator /metrics, /healthz")
    failover_after_s: float = Field(
        default=2.0,
        ge=0,
        le=3600,
        description="promote replicas once every process of a DC has been down this long "
        "(0: only by `millions dc failover NAME`)",
    )


class DataCenterConfig(_Section):
    """One data center: a load balancer and `web` web servers on the `subnet` addresses.

    The load balancer gets `<subnet>.1`, its CDN edge `<subnet>.2`, web server i gets
    `<subnet>.<10+i>`, queue worker i `<subnet>.<100+i>`.
    """

    subnet: str = Field(description="first three octets of a 127.0.0.0/8 address")
    web: int = Field(default=2, ge=0, le=MAX_WEB_INDEX)
    clients: str = Field(
        default="",
        description="client network (CIDR in 127.0.0.0/8) of this DC's region: the geo DNS "
        "sends its clients here first; simulated users of the region connect from it",
    )

    @field_validator("clients")
    @classmethod
    def _loopback_clients(cls, clients: str) -> str:
        if not clients:
            return clients
        try:
            network = ipaddress.IPv4Network(clients)
        except ValueError as exc:
            raise ValueError(f"expected a CIDR network such as 127.100.1.0/24: {exc}") from None
        if not network.subnet_of(ipaddress.IPv4Network("127.0.0.0/8")):
            raise ValueError("must be inside 127.0.0.0/8 (loopback only)")
        return clients

    @field_validator("subnet")
    @classmethod
    def _loopback_subnet(cls, subnet: str) -> str:
        try:
            address = ipaddress.IPv4Address(subnet + ".1")
        except ValueError:
            raise ValueError("expected three octets such as 127.0.1") from None
        if not address.is_loopback:
            raise ValueError("must be inside 127.0.0.0/8 (loopback only)")
        return subnet


class SupervisorConfig(_Section):
    restart_backoff_s: float = Field(default=0.25, gt=0, le=60, description="first backoff")
    restart_backoff_max_s: float = Field(default=5.0, gt=0, le=600)
    start_timeout_s: float = Field(default=30.0, gt=0, le=600)
    stop_timeout_s: float = Field(default=10.0, gt=0, le=600)


def _default_dcs() -> dict[str, DataCenterConfig]:
    return {
        "us-east": DataCenterConfig(subnet="127.0.1", web=2, clients="127.100.1.0/24"),
        "eu-west": DataCenterConfig(subnet="127.0.2", web=2, clients="127.100.2.0/24"),
    }


DEFAULT_APP = "millions.app:app"
DEFAULT_APP_TABLES = "millions.app.schema:APP_SCHEMA"


class MillionsConfig(_Section):
    """The whole topology."""

    run_dir: str = Field(default=".millions", description="state, logs and data of a run")
    app: str = Field(
        default=DEFAULT_APP,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$",
        description="the ASGI app every web server runs, as module:attribute",
    )
    sessions: SessionsConfig = SessionsConfig()
    lb: LoadBalancerConfig = LoadBalancerConfig()
    web: WebConfig = WebConfig()
    edge: EdgeConfig = EdgeConfig()
    dns: GeoDnsConfig = GeoDnsConfig()
    queue: QueueConfig = QueueConfig()
    worker: WorkerProcessConfig = WorkerProcessConfig()
    shards: ShardsConfig = ShardsConfig()
    replication: ReplicationConfig = ReplicationConfig()
    supervisor: SupervisorConfig = SupervisorConfig()
    dcs: dict[str, DataCenterConfig] = Field(default_factory=_default_dcs)

    @model_validator(mode="after")
    def _app_tables(self) -> MillionsConfig:
        """The reference app's shards hold its tables unless the config names others, so
        `millions shards split` copies them."""
        if self.app == DEFAULT_APP and not self.shards.tables:
            shards = self.shards.model_copy(update={"tables": DEFAULT_APP_TABLES})
            object.__setattr__(self, "shards", shards)
        return self

    @field_validator("dcs")
    @classmethod
    def _dcs_valid(cls, dcs: dict[str, DataCenterConfig]) -> dict[str, DataCenterConfig]:
        if not dcs:
            raise ValueError("at least one data center is needed")
        seen: dict[str, str] = {}
        for name, dc in dcs.items():
            if not DC_NAME.match(name):
                raise ValueError(f"data center name {name!r} must match {DC_NAME.pattern}")
            if dc.subnet in seen:
                raise ValueError(f"{name} and {seen[dc.subnet]} share subnet {dc.subnet}")
            seen[dc.subnet] = name
        return dcs

    def lb_host(self, dc: str) -> str:
        return f"{self.dcs[dc].subnet}.1"

    @property
    def replicates(self) -> bool:
        """Whether the shards have copies in every DC (replication on, two DCs or more)."""
        return self.replication.enabled and len(self.dcs) >= 2

    def replicator_host(self, dc: str) -> str:
        return f"{self.dcs[dc].subnet}.9"

    def region(self, dc: str) -> str:
        """The region a DC serves: the first part of its name (`us` for `us-east`)."""
        return dc.split("-", 1)[0]

    def regions(self) -> dict[str, list[str]]:
        """Each region's DCs, nearest first: its own DCs, then the others in config order."""
        result: dict[str, list[str]] = {}
        for dc in self.dcs:
            region = self.region(dc)
            own = [d for d in self.dcs if self.region(d) == region]
            result[region] = own + [d for d in self.dcs if d not in own]
        return result

    def client_source(self, region: str) -> str | None:
        """The address simulated users of `region` connect from (.10 of its client network)."""
        for dc, dc_config in self.dcs.items():
            if self.region(dc) == region and dc_config.clients:
                network = ipaddress.IPv4Network(dc_config.clients)
                return str(network[min(10, network.num_addresses - 1)])
        return None

    @property
    def dns_address(self) -> str:
        return f"{self.dns.host}:{self.dns.port}"

    def site_url(self) -> str:
        """The URL users open: the geo DNS name of the site."""
        return f"http://www.{self.dns.zone}:{self.lb.port}"

    def edge_host(self, dc: str) -> str:
        return f"{self.dcs[dc].subnet}.2"

    def edge_name(self, dc: str) -> str:
        """`edge-us` for `us-east`: the region part of the DC name, unless two DCs share it."""
        region = self.region(dc)
        shared = sum(1 for other in self.dcs if self.region(other) == region) > 1
        return f"edge-{dc}" if shared else f"edge-{region}"

    def edge_url(self, dc: str) -> str:
        return f"http://{self.edge_host(dc)}:{self.edge.port}"

    def edge_ops_url(self, dc: str) -> str:
        return f"http://{self.edge_host(dc)}:{self.edge.ops_port}"

    def edge_purge_urls(self) -> list[str]:
        """Every edge's purge endpoint (none when the edges are off)."""
        if not self.edge.enabled:
            return []
        return [self.edge_ops_url(dc) + "/purge" for dc in self.dcs]

    def lb_url(self, dc: str) -> str:
        return f"http://{self.lb_host(dc)}:{self.lb.port}"

    def web_host(self, dc: str, index: int) -> str:
        """Address of web server `index` (1-based) of `dc`."""
        if not 1 <= index <= MAX_WEB_INDEX:
            raise ValueError(f"web server index {index} out of range 1..{MAX_WEB_INDEX}")
        return f"{self.dcs[dc].subnet}.{10 + index}"

    def worker_host(self, dc: str, index: int) -> str:
        """Address of queue worker `index` (1-based) of `dc`."""
        if not 1 <= index <= MAX_WORKER_INDEX:
            raise ValueError(f"worker index {index} out of range 1..{MAX_WORKER_INDEX}")
        return f"{self.dcs[dc].subnet}.{100 + index}"


def _error_key(error: Any) -> str:
    return ".".join(str(part) for part in error["loc"])


def parse(data: dict[str, Any]) -> MillionsConfig:
    """Validate a config mapping; raise `ConfigError` naming the first bad key."""
    try:
        config = MillionsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        problem = first["msg"]
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        problem = problem.removeprefix("Value error, ")
        raise ConfigError(_error_key(first), problem) from None
    return config


def load(path: Path | None) -> MillionsConfig:
    """Load `path`, or `./millions.toml` when it exists, or the built-in default."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_FILE)
        if not candidate.exists():
            return MillionsConfig()
        path = candidate
    data = read_toml(path)
    return parse(data)


def to_toml(config: MillionsConfig) -> str:
    """The effective config as TOML text (what `millions config show` prints).

    Written by hand because the standard library reads TOML but does not write it; the
    config holds only scalars, lists of scalars, tables and arrays of flat tables."""
    lines: list[str] = []
    _write_table(lines, [], config.model_dump(exclude_none=True))
    return "\n".join(lines).lstrip("\n") + "\n"


def _write_table(lines: list[str], path: list[str], table: dict[str, Any]) -> None:
    if path:
        lines.extend(["", f"[{_dotted(path)}]"])
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            lines.append(f"{_key(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if _is_table_array(value):
            for item in value:
                lines.extend(["", f"[[{_dotted([*path, key])}]]"])
                lines.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in item.items())
    for key, value in table.items():
        if isinstance(value, dict):
            _write_table(lines, [*path, key], value)


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f'"{key}"'


def _dotted(path: list[str]) -> str:
    return ".".join(_key(part) for part in path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
