"""The pure answer core: record sets and rcodes per name and type, and which DC or edge a
region gets for every combination of health and drains."""

from __future__ import annotations

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest
from dns_support import EU_LB, US_EDGE, US_LB, config_data
from hypothesis import given
from hypothesis import strategies as st

from millions.dns.answers import Answer, pick_dc, pick_edge, resolve
from millions.dns.config import parse
from millions.dns.health import HealthView
from millions.dns.zone import GeoKind, build_zone

ZONE = build_zone(parse(config_data(nameservers={"ns1": "127.0.130.1", "ns2": "127.0.130.2"})))
ALL_UP = HealthView({"us-east": True, "eu-west": True}, {"edge-us": True, "edge-eu": True})
A, AAAA, NS, SOA, ANY = (dns.rdatatype.from_text(t) for t in ("A", "AAAA", "NS", "SOA", "ANY"))
IN = dns.rdataclass.IN


def ask(name: str, qtype: int = A, region: str = "us", qclass: int = IN) -> Answer:
    return resolve(ZONE, dns.name.from_text(name), qtype, qclass, region, ALL_UP, frozenset())


def texts(answer: Answer) -> list[str]:
    return [rrset.to_text() for rrset in answer.answer]


def test_www_and_cdn_answer_the_regions_nearest_target() -> None:
    us = ask("www.millions.test")
    assert texts(us) == [f"www.millions.test. 5 IN A {US_LB}"]
    assert (us.rcode, us.authoritative, us.kind, us.target) == (
        dns.rcode.NOERROR,
        True,
        GeoKind.WWW,
        "us-east",
    )
    assert texts(ask("www.millions.test", region="eu")) == [f"www.millions.test. 5 IN A {EU_LB}"]
    assert texts(ask("cdn.millions.test")) == [f"cdn.millions.test. 5 IN A {US_EDGE}"]
    assert texts(ask("WWW.Millions.Test.", qtype=ANY)) == [f"www.millions.test. 5 IN A {US_LB}"]


@pytest.mark.parametrize(
    ("name", "qtype", "rcode"),
    [
        ("www.millions.test", AAAA, dns.rcode.NOERROR),
        ("cdn.millions.test", dns.rdatatype.MX, dns.rcode.NOERROR),
        ("millions.test", A, dns.rcode.NOERROR),
        ("ns1.millions.test", AAAA, dns.rcode.NOERROR),
        ("nope.millions.test", A, dns.rcode.NXDOMAIN),
        ("a.www.millions.test", A, dns.rcode.NXDOMAIN),
        ("deep.down.millions.test", SOA, dns.rcode.NXDOMAIN),
    ],
)
def test_negative_answers_carry_the_soa_with_the_negative_ttl(
    name: str, qtype: int, rcode: int
) -> None:
    answer = ask(name, qtype)
    assert answer.rcode == rcode
    assert answer.answer == ()
    (soa,) = answer.authority
    assert soa.rdtype == SOA
    assert soa.name == dns.name.from_text("millions.test")
    assert soa.ttl == 5
    assert soa[0].minimum == 5
    assert answer.authoritative


def test_apex_soa_ns_and_glue() -> None:
    soa = ask("millions.test", SOA)
    assert texts(soa) == [
        "millions.test. 300 IN SOA ns1.millions.test. hostmaster.millions.test. 1 3600 600 86400 5"
    ]
    assert soa.authority == ()
    ns = ask("millions.test", NS)
    assert sorted(str(r) for r in ns.answer[0]) == ["ns1.millions.test.", "ns2.millions.test."]
    assert sorted(r.to_text() for r in ns.additional) == [
        "ns1.millions.test. 300 IN A 127.0.130.1",
        "ns2.millions.test. 300 IN A 127.0.130.2",
    ]
    both = ask("millions.test", ANY)
    assert {rrset.rdtype for rrset in both.answer} == {SOA, NS}
    assert texts(ask("ns2.millions.test")) == ["ns2.millions.test. 300 IN A 127.0.130.2"]


@pytest.mark.parametrize(
    ("name", "qtype", "qclass", "rcode"),
    [
        ("example.com", A, IN, dns.rcode.REFUSED),
        ("millions.test.example", A, IN, dns.rcode.REFUSED),
        (".", NS, IN, dns.rcode.REFUSED),
        ("www.millions.test", A, dns.rdataclass.CH, dns.rcode.REFUSED),
        ("millions.test", dns.rdatatype.AXFR, IN, dns.rcode.REFUSED),
        ("millions.test", dns.rdatatype.IXFR, IN, dns.rcode.REFUSED),
        ("www.millions.test", dns.rdatatype.OPT, IN, dns.rcode.FORMERR),
        ("www.millions.test", 128, IN, dns.rcode.FORMERR),
    ],
)
def test_refused_and_formerr_are_not_authoritative(
    name: str, qtype: int, qclass: int, rcode: int
) -> None:
    answer = ask(name, qtype, qclass=qclass)
    assert answer.rcode == rcode
    assert not answer.authoritative
    assert (answer.answer, answer.authority) == ((), ())


def view(
    us: bool = True, eu: bool = True, edge_us: bool = True, edge_eu: bool = True
) -> HealthView:
    return HealthView({"us-east": us, "eu-west": eu}, {"edge-us": edge_us, "edge-eu": edge_eu})


@pytest.mark.parametrize(
    ("health", "drained", "target", "fail_open"),
    [
        (view(), set(), "us-east", False),
        (view(us=False), set(), "eu-west", False),
        (view(), {"us-east"}, "eu-west", False),
        (view(eu=False), {"us-east"}, "us-east", False),  # drained but the only healthy one
        (view(), {"us-east", "eu-west"}, "us-east", False),
        (view(us=False, eu=False), set(), "us-east", True),  # fail open: nearest
        (view(us=False, eu=False), {"us-east"}, "eu-west", True),  # nearest undrained
        (view(us=False, eu=False), {"us-east", "eu-west"}, "us-east", True),
    ],
)
def test_dc_pick(health: HealthView, drained: set[str], target: str, fail_open: bool) -> None:
    pick = pick_dc(ZONE, "us", health, drained)
    assert (pick.target, pick.fail_open) == (target, fail_open)


@pytest.mark.parametrize(
    ("health", "drained", "target", "fail_open"),
    [
        (view(), set(), "edge-us", False),
        (view(edge_us=False), set(), "edge-eu", False),
        (view(us=False), set(), "edge-eu", False),  # its origin is down
        (view(), {"us-east"}, "edge-eu", False),  # its origin is drained
        (view(eu=False), {"us-east"}, "edge-us", False),
        (view(us=False, eu=False), set(), "edge-us", True),  # both serve only their caches
        (view(us=False, edge_eu=False), set(), "edge-us", True),
        (view(edge_us=False, edge_eu=False), set(), "edge-us", True),
        (view(edge_us=False, edge_eu=False), {"us-east"}, "edge-eu", True),
    ],
)
def test_edge_pick(health: HealthView, drained: set[str], target: str, fail_open: bool) -> None:
    pick = pick_edge(ZONE, "us", health, drained)
    assert (pick.target, pick.fail_open) == (target, fail_open)


BIG = build_zone(
    parse(
        config_data(
            regions={
                "r1": ["dc-a", "dc-b", "dc-c", "dc-d"],
                "r2": ["dc-d", "dc-b"],
                "r3": ["dc-c"],
            },
            default_region="r1",
            prefixes={},
            dcs={
                name: {"address": f"127.0.9.{i}", "health_url": "http://127.0.134.1:9/x"}
                for i, name in enumerate(["dc-a", "dc-b", "dc-c", "dc-d"], 1)
            },
            edges={},
        )
    )
)


@given(
    region=st.sampled_from(["r1", "r2", "r3"]),
    up=st.fixed_dictionaries({dc: st.booleans() for dc in ["dc-a", "dc-b", "dc-c", "dc-d"]}),
    drained=st.frozensets(st.sampled_from(["dc-a", "dc-b", "dc-c", "dc-d"])),
)
def test_dc_pick_properties(region: str, up: dict[str, bool], drained: frozenset[str]) -> None:
    """The nearest healthy undrained DC if any; else the nearest healthy one; else (fail
    open) the nearest undrained one; DCs outside the region's list come after it."""
    order = BIG.dc_order[region]
    assert set(order) == {"dc-a", "dc-b", "dc-c", "dc-d"}
    pick = pick_dc(BIG, region, HealthView(up, {}), drained)
    healthy = [dc for dc in order if up[dc]]
    preferred = [dc for dc in healthy if dc not in drained]
    if preferred:
        expected = preferred[0]
    elif healthy:
        expected = healthy[0]
    else:
        expected = next((dc for dc in order if dc not in drained), order[0])
    assert pick.target == expected
    assert pick.fail_open == (not healthy)
    answer = resolve(
        BIG, dns.name.from_text("www.millions.test"), A, IN, region, HealthView(up, {}), drained
    )
    assert answer.target == expected
