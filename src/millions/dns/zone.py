"""The zone's records, built once from the config as dnspython RRsets.

The zone holds the apex (SOA, NS), one glue A record per nameserver, and the two geo
names: `www` (one candidate A record per data center, its load balancer) and `cdn` (one
per edge). Which candidate a client gets is decided per query by `answers.resolve`.
Every RRset is built here so answering never parses text or allocates records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from millions.dns.config import DnsConfig

#: SOA timers (refresh, retry, expire): this server has no secondaries, so these only
#: need to be sane values for tools that read them.
SOA_REFRESH_S = 3600
SOA_RETRY_S = 600
SOA_EXPIRE_S = 86400


class GeoKind(Enum):
    """What a geo name points at."""

    WWW = "www"  # the nearest healthy data center's load balancer
    CDN = "cdn"  # the nearest healthy CDN edge


@dataclass(frozen=True, slots=True)
class GeoName:
    kind: GeoKind
    records: Mapping[str, dns.rrset.RRset]  # target name -> its A RRset under this name


@dataclass(frozen=True, slots=True)
class Zone:
    origin: dns.name.Name
    #: Names with fixed records: the apex and the nameservers, by type.
    static: Mapping[dns.name.Name, Mapping[int, dns.rrset.RRset]]
    geo: Mapping[dns.name.Name, GeoName]
    #: Glue for the NS records, sent as additional data with NS answers.
    glue: tuple[dns.rrset.RRset, ...]
    #: The SOA sent in the authority section of NXDOMAIN and NODATA answers; its TTL is
    #: the negative-caching time (RFC 2308: the lower of the SOA TTL and its minimum).
    negative_soa: dns.rrset.RRset
    #: Region -> every data center, the region's preference first, then the rest.
    dc_order: Mapping[str, tuple[str, ...]]
    #: Region -> every edge, ordered by its data center's place in `dc_order`.
    edge_order: Mapping[str, tuple[str, ...]]
    edge_dc: Mapping[str, str]


def _a_rrset(name: dns.name.Name, ttl: int, address: str) -> dns.rrset.RRset:
    rdata = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.A, address)
    return dns.rrset.from_rdata(name, ttl, rdata)


def build_zone(config: DnsConfig) -> Zone:
    """The records of `config.zone` and the per-region candidate orders."""
    origin = dns.name.from_text(config.zone)
    glue_addresses = config.nameserver_glue()
    ns_names = [dns.name.Name((label.encode(),)).concatenate(origin) for label in glue_addresses]
    soa_text = (
        f"{ns_names[0]} hostmaster.{origin} {config.serial} "
        f"{SOA_REFRESH_S} {SOA_RETRY_S} {SOA_EXPIRE_S} {config.negative_ttl_s}"
    )
    soa = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, soa_text)
    ns_rdatas = [
        dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NS, name.to_text())
        for name in ns_names
    ]
    static: dict[dns.name.Name, dict[int, dns.rrset.RRset]] = {
        origin: {
            dns.rdatatype.SOA: dns.rrset.from_rdata(origin, config.zone_ttl_s, soa),
            dns.rdatatype.NS: dns.rrset.from_rdata_list(origin, config.zone_ttl_s, ns_rdatas),
        }
    }
    glue = []
    for name, address in zip(ns_names, glue_addresses.values(), strict=True):
        rrset = _a_rrset(name, config.zone_ttl_s, address)
        static[name] = {dns.rdatatype.A: rrset}
        glue.append(rrset)
    www = dns.name.Name((b"www",)).concatenate(origin)
    geo = {
        www: GeoName(
            GeoKind.WWW,
            {dc: _a_rrset(www, config.ttl_s, t.address) for dc, t in config.dcs.items()},
        )
    }
    if config.edges:
        cdn = dns.name.Name((b"cdn",)).concatenate(origin)
        geo[cdn] = GeoName(
            GeoKind.CDN,
            {e: _a_rrset(cdn, config.ttl_s, t.address) for e, t in config.edges.items()},
        )
    dc_order = {
        region: (*preference, *(dc for dc in config.dcs if dc not in preference))
        for region, preference in config.regions.items()
    }
    edge_order = {
        region: tuple(e for dc in order for e, t in config.edges.items() if t.dc == dc)
        for region, order in dc_order.items()
    }
    negative_ttl = min(config.zone_ttl_s, config.negative_ttl_s)
    return Zone(
        origin=origin,
        static=static,
        geo=geo,
        glue=tuple(glue),
        negative_soa=dns.rrset.from_rdata(origin, negative_ttl, soa),
        dc_order=dc_order,
        edge_order=edge_order,
        edge_dc={name: edge.dc for name, edge in config.edges.items()},
    )
