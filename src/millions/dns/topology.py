"""The geo DNS config of a topology: its DCs, edges, regions and client networks.

A DC's region is the first part of its name (`us-east` -> `us`); a region prefers its own
DCs, then the others in config order. Each DC's `clients` network maps to its region; a
client no network matches belongs to the first DC's region.
"""

from __future__ import annotations

from pydantic import ValidationError

from millions.dns.config import DataCenterTarget, DnsConfig, EdgeTarget
from millions.topology.config import ConfigError, MillionsConfig


def dns_config(config: MillionsConfig) -> DnsConfig:
    """The `DnsConfig` the topology's `dns` component runs with; ConfigError (key `dns`)
    when the topology cannot be expressed as one (say, two DCs' client networks clash)."""
    try:
        return _build(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        problem = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError("dns", problem) from None


def _build(config: MillionsConfig) -> DnsConfig:
    dcs = {
        dc: DataCenterTarget(
            address=config.lb_host(dc),
            health_url=f"http://{config.lb_host(dc)}:{config.lb.ops_port}/healthz",
        )
        for dc in config.dcs
    }
    edges = (
        {
            config.edge_name(dc): EdgeTarget(
                address=config.edge_host(dc),
                health_url=f"{config.edge_ops_url(dc)}/healthz",
                dc=dc,
            )
            for dc in config.dcs
        }
        if config.edge.enabled
        else {}
    )
    prefixes = {
        dc_config.clients: config.region(dc)
        for dc, dc_config in config.dcs.items()
        if dc_config.clients
    }
    return DnsConfig(
        zone=config.dns.zone,
        listen=config.dns_address,
        admin=f"{config.dns.host}:{config.dns.admin_port}",
        ttl_s=config.dns.ttl_s,
        prefixes=prefixes,
        default_region=config.region(next(iter(config.dcs))),
        regions=config.regions(),
        dcs=dcs,
        edges=edges,
        check_interval_s=config.dns.check_interval_s,
        check_timeout_s=min(1.0, config.dns.check_interval_s),
    )
