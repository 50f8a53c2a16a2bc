"""The geo DNS server's config: zone, listeners, TTLs, the geo tables and health checks.

The geo tables are the policy: `prefixes` maps client networks to regions (longest prefix
wins), `regions` gives each region its data centers nearest first (its latency table),
`dcs` and `edges` say what an answer points at and where its health is checked.
A problem is reported as one line naming the dotted key (`ConfigError`, like the
topology config).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import re
from typing import Any, Self
from urllib.parse import urlsplit

import dns.exception
import dns.name
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from millions.topology.config import DC_NAME, ConfigError

DEFAULT_ZONE = "millions.test"
LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
TARGET_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
#: Names the server answers with geo records; a nameserver may not take them.
GEO_LABELS = ("www", "cdn")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_host_port(value: str) -> tuple[str, int]:
    """`"127.0.0.1:53"` -> `("127.0.0.1", 53)`; the host must be an IPv4 literal."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"expected IPV4:PORT, got {value!r}")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise ValueError(f"expected an IPv4 address before the port, got {host!r}") from None
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} out of range 0..65535")
    return host, port


def _ipv4(value: str) -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise ValueError(f"expected an IPv4 address, got {value!r}") from None


def _health_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected http://HOST:PORT/PATH, got {url!r}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    return url


class DataCenterTarget(_Section):
    """A data center as the DNS sees it: its load balancer's address and health URL.

    The health URL is the load balancer's ops `/healthz`, which answers 503 when no web
    server behind it is healthy, so a DC with a live balancer but no servers is down."""

    address: str = Field(description="IPv4 address of the DC's load balancer (the A record)")
    health_url: str = Field(description="e.g. http://127.0.1.1:9000/healthz; 2xx means up")

    @field_validator("address")
    @classmethod
    def _address(cls, address: str) -> str:
        return _ipv4(address)

    @field_validator("health_url")
    @classmethod
    def _url(cls, url: str) -> str:
        return _health_url(url)


class EdgeTarget(_Section):
    """A CDN edge: its address, health URL and the DC whose load balancer is its origin."""

    address: str = Field(description="IPv4 address of the edge (the A record of cdn.<zone>)")
    health_url: str = Field(description="e.g. http://127.0.1.2:9000/healthz; 2xx means up")
    dc: str = Field(description="the data center this edge sits in front of")

    @field_validator("address")
    @classmethod
    def _address(cls, address: str) -> str:
        return _ipv4(address)

    @field_validator("health_url")
    @classmethod
    def _url(cls, url: str) -> str:
        return _health_url(url)


class MaxMindConfig(_Section):
    """Region lookup in a MaxMind DB file (GeoLite2-Country/City) before the prefix table.

    A country code in `countries` wins over the continent code in `continents`; addresses
    the file does not know (loopback, private networks) fall back to `prefixes`."""

    path: str = Field(description="the .mmdb file")
    countries: dict[str, str] = Field(default_factory=dict, description="ISO country -> region")
    continents: dict[str, str] = Field(default_factory=dict, description="continent -> region")

    @field_validator("path")
    @classmethod
    def _package_present(cls, path: str) -> str:
        if importlib.util.find_spec("maxminddb") is None:
            raise ValueError(
                "a MaxMind DB needs the maxminddb package, which is not installed "
                "(pip install maxminddb), or remove the maxmind section to use prefixes only"
            )
        return path


class DnsConfig(_Section):
    """One authoritative geo DNS server for `zone`."""

    zone: str = DEFAULT_ZONE
    listen: str = Field(
        default="127.0.53.1:1053", description="IPV4:PORT for UDP and TCP (port 0: any free)"
    )
    admin: str = Field(
        default="127.0.53.1:9053",
        description="loopback IPV4:PORT of /healthz, /metrics, /state, /drain, /undrain",
    )
    ttl_s: int = Field(default=5, ge=0, le=86400, description="TTL of the geo A records")
    negative_ttl_s: int = Field(
        default=5, ge=0, le=86400, description="SOA minimum: how long NXDOMAIN/NODATA is cached"
    )
    zone_ttl_s: int = Field(default=300, ge=0, le=86400, description="TTL of SOA, NS and glue")
    serial: int = Field(default=1, ge=0, le=2**32 - 1, description="SOA serial")
    nameservers: dict[str, str] = Field(
        default_factory=dict,
        description="NS label under the zone -> IPv4 glue; empty: ns1 at the listen address",
    )
    prefixes: dict[str, str] = Field(
        default_factory=dict, description="client network (CIDR) -> region; longest match wins"
    )
    default_region: str = Field(description="region of clients no prefix matches")
    regions: dict[str, list[str]] = Field(description="region -> its DCs, nearest first")
    dcs: dict[str, DataCenterTarget]
    edges: dict[str, EdgeTarget] = Field(default_factory=dict)
    check_interval_s: float = Field(default=1.0, gt=0, le=60)
    check_timeout_s: float = Field(default=1.0, gt=0, le=60)
    fall: int = Field(default=2, ge=1, le=100, description="failed checks before down")
    rise: int = Field(default=2, ge=1, le=100, description="passed checks before up")
    tcp_idle_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    tcp_max_connections: int = Field(default=256, ge=1, le=100_000)
    max_udp_payload: int = Field(
        default=1232, ge=512, le=4096, description="largest UDP answer sent to EDNS clients"
    )
    maxmind: MaxMindConfig | None = None

    @field_validator("zone")
    @classmethod
    def _zone_name(cls, zone: str) -> str:
        try:
            name = dns.name.from_text(zone)
        except dns.exception.DNSException as exc:
            raise ValueError(f"not a DNS name: {exc}") from None
        if name == dns.name.root:
            raise ValueError("the zone cannot be the root")
        return name.to_text(omit_final_dot=True).lower()

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        parse_host_port(listen)
        return listen

    @field_validator("admin")
    @classmethod
    def _admin(cls, admin: str) -> str:
        host, _ = parse_host_port(admin)
        if not ipaddress.IPv4Address(host).is_loopback:
            raise ValueError(f"the admin listener must be on loopback (127.x.x.x), not {host}")
        return admin

    @field_validator("nameservers")
    @classmethod
    def _nameservers(cls, nameservers: dict[str, str]) -> dict[str, str]:
        for label, address in nameservers.items():
            if not LABEL.match(label) or label in GEO_LABELS:
                raise ValueError(
                    f"nameserver {label!r} must be one lowercase label other than "
                    f"{' and '.join(GEO_LABELS)}"
                )
            _ipv4(address)
        return nameservers

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, prefixes: dict[str, str]) -> dict[str, str]:
        for prefix in prefixes:
            try:
                ipaddress.ip_network(prefix)
            except ValueError as exc:
                raise ValueError(f"prefix {prefix!r}: {exc}") from None
        return prefixes

    @field_validator("dcs")
    @classmethod
    def _dcs(cls, dcs: dict[str, DataCenterTarget]) -> dict[str, DataCenterTarget]:
        if not dcs:
            raise ValueError("at least one data center is needed")
        for name in dcs:
            if not DC_NAME.match(name):
                raise ValueError(f"data center name {name!r} must match {DC_NAME.pattern}")
        return dcs

    @model_validator(mode="after")
    def _references(self) -> Self:
        if not self.regions:
            raise ValueError("regions: at least one region is needed")
        for region, preference in self.regions.items():
            if not TARGET_NAME.match(region):
                raise ValueError(f"regions: name {region!r} must match {TARGET_NAME.pattern}")
            if not preference:
                raise ValueError(f"regions.{region}: list at least one data center")
            if len(set(preference)) != len(preference):
                raise ValueError(f"regions.{region}: a data center is listed twice")
            for dc in preference:
                if dc not in self.dcs:
                    raise ValueError(f"regions.{region}: no data center named {dc!r}")
        if self.default_region not in self.regions:
            raise ValueError(f"default_region: no region named {self.default_region!r}")
        for prefix, region in self.prefixes.items():
            if region not in self.regions:
                raise ValueError(f"prefixes.{prefix}: no region named {region!r}")
        for edge_name, edge in self.edges.items():
            if not TARGET_NAME.match(edge_name):
                raise ValueError(f"edges: name {edge_name!r} must match {TARGET_NAME.pattern}")
            if edge.dc not in self.dcs:
                raise ValueError(f"edges.{edge_name}.dc: no data center named {edge.dc!r}")
        if not self.nameservers and ipaddress.IPv4Address(self.listen_address[0]).is_unspecified:
            raise ValueError("nameservers: give the NS addresses when listening on 0.0.0.0")
        if self.maxmind is not None:
            mapped = {**self.maxmind.countries, **self.maxmind.continents}
            for code, region in mapped.items():
                if region not in self.regions:
                    raise ValueError(f"maxmind: {code} maps to unknown region {region!r}")
        return self

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def admin_address(self) -> tuple[str, int]:
        return parse_host_port(self.admin)

    def nameserver_glue(self) -> dict[str, str]:
        """NS label -> address; `ns1` at the listen address when none are configured."""
        return dict(self.nameservers) or {"ns1": self.listen_address[0]}


def parse(data: dict[str, Any]) -> DnsConfig:
    """Validate a config mapping; raise `ConfigError` naming the first bad key."""
    try:
        return DnsConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        problem = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(key, problem) from None
