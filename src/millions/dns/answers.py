"""Which answer a question gets: the pure core of the geo DNS server (no I/O).

`resolve(zone, qname, qtype, qclass, region, health, drained)` returns the rcode and the
records of each section. The geo names pick one target per query:

* `www` -> the first data center in the client region's preference order (then the other
  DCs) that is up and not drained;
* `cdn` -> the first edge, ordered by its data center's place in that order, that is up
  and whose data center is up and not drained (an edge whose origin is down fails every
  cache miss, and draining a DC for maintenance takes its edges' origin away too).

When no target qualifies the answer degrades step by step rather than failing. Each
candidate gets a rank and the lowest rank wins, the nearest among equals:

* DC: 0 up, 1 up but drained, 2 down, 3 down and drained;
* edge: 0 edge and DC up, 1 the same but the DC is drained, 2 edge up but its DC down (it
  still serves its cache), 3 edge down, 4 edge down and its DC drained.

So drain is honoured while another healthy target exists, and when every target is down
the answer is the region's nearest undrained target anyway (fail open: rank 2 and up,
marked `fail_open` so the server logs it). A health checker that lost its network must
not take the whole site off the DNS; Route 53 does the same when every record of a group
is unhealthy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from millions.dns.health import HealthView
from millions.dns.zone import GeoKind, Zone

#: Query types that are meta-types (RFC 6895) a query may not ask for: OPT and the
#: unassigned meta range up to TKEY/TSIG (RFC 9824 3.5 asks for FORMERR).
_FORMERR_QTYPES = frozenset({dns.rdatatype.OPT, *range(128, 251)})
_TRANSFERS = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR})


@dataclass(frozen=True, slots=True)
class Answer:
    """A decided answer. `target` is the DC or edge a geo answer points at."""

    rcode: dns.rcode.Rcode
    answer: tuple[dns.rrset.RRset, ...] = ()
    authority: tuple[dns.rrset.RRset, ...] = ()
    additional: tuple[dns.rrset.RRset, ...] = ()
    authoritative: bool = True
    kind: GeoKind | None = None
    target: str | None = None
    fail_open: bool = False


@dataclass(frozen=True, slots=True)
class Pick:
    target: str
    rank: int  # 0: healthy and undrained; higher: a fallback step (see the module doc)

    @property
    def fail_open(self) -> bool:
        return self.rank >= FAIL_OPEN_RANK


#: Ranks at or above this mean no healthy target was left.
FAIL_OPEN_RANK = 2


def _first_best(order: Sequence[str], rank_of: Mapping[str, int]) -> Pick:
    """The lowest-ranked target, the earliest in `order` among equals."""
    best = min(order, key=rank_of.__getitem__)
    return Pick(best, rank_of[best])


def pick_dc(zone: Zone, region: str, health: HealthView, drained: Set[str]) -> Pick:
    """The data center `www` answers with for clients of `region`."""
    order = zone.dc_order[region]
    ranks = {}
    for dc in order:
        drain_step = 1 if dc in drained else 0
        ranks[dc] = drain_step if health.dcs.get(dc, True) else 2 + drain_step
    return _first_best(order, ranks)


def pick_edge(zone: Zone, region: str, health: HealthView, drained: Set[str]) -> Pick:
    """The edge `cdn` answers with for clients of `region` (the zone must have edges)."""
    order = zone.edge_order[region]
    ranks = {}
    for edge in order:
        dc = zone.edge_dc[edge]
        drain_step = 1 if dc in drained else 0
        if not health.edges.get(edge, True):
            ranks[edge] = 3 + drain_step
        elif health.dcs.get(dc, True):
            ranks[edge] = drain_step
        else:
            ranks[edge] = 2
    return _first_best(order, ranks)


def _negative(zone: Zone, rcode: dns.rcode.Rcode) -> Answer:
    return Answer(rcode, authority=(zone.negative_soa,))


def resolve(
    zone: Zone,
    qname: dns.name.Name,
    qtype: int,
    qclass: int,
    region: str,
    health: HealthView,
    drained: Set[str],
) -> Answer:
    """The answer to one question from a client of `region`."""
    if qtype in _FORMERR_QTYPES:
        return Answer(dns.rcode.FORMERR, authoritative=False)
    if qclass != dns.rdataclass.IN or not qname.is_subdomain(zone.origin):
        return Answer(dns.rcode.REFUSED, authoritative=False)
    if qtype in _TRANSFERS:
        return Answer(dns.rcode.REFUSED, authoritative=False)
    geo = zone.geo.get(qname)
    if geo is not None:
        if qtype not in (dns.rdatatype.A, dns.rdatatype.ANY):
            return _negative(zone, dns.rcode.NOERROR)
        if geo.kind is GeoKind.WWW:
            pick = pick_dc(zone, region, health, drained)
        else:
            pick = pick_edge(zone, region, health, drained)
        return Answer(
            dns.rcode.NOERROR,
            answer=(geo.records[pick.target],),
            kind=geo.kind,
            target=pick.target,
            fail_open=pick.fail_open,
        )
    records = zone.static.get(qname)
    if records is None:
        return _negative(zone, dns.rcode.NXDOMAIN)
    if qtype == dns.rdatatype.ANY:
        found = tuple(records.values())
    else:
        rrset = records.get(qtype)
        if rrset is None:
            return _negative(zone, dns.rcode.NOERROR)
        found = (rrset,)
    with_ns = any(rrset.rdtype == dns.rdatatype.NS for rrset in found)
    return Answer(dns.rcode.NOERROR, answer=found, additional=zone.glue if with_ns else ())
