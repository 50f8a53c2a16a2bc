"""The wire-level handler without sockets: EDNS, ECS, truncation, error rcodes, the
template fast path against full dnspython rendering, and fuzzed packets."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from dns_support import EU_CLIENT, EU_LB, US_CLIENT, US_LB, a_query, make_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millions.dns.health import HealthView
from millions.dns.regions import Locator, PrefixTable
from millions.dns.responder import Responder, ResponderStats
from millions.dns.wire import simple_question_end
from millions.dns.zone import build_zone

CONFIG = make_config()
ZONE = build_zone(CONFIG)
MANY_NS_ZONE = build_zone(
    make_config(nameservers={f"ns{i}": f"127.0.130.{i + 1}" for i in range(40)})
)


def responder(many_nameservers: bool = False) -> Responder:
    """A responder for the test config (with 40 nameservers: big NS answers)."""
    locator = Locator(PrefixTable(CONFIG.prefixes), CONFIG.default_region)
    return Responder(MANY_NS_ZONE if many_nameservers else ZONE, locator, CONFIG.max_udp_payload)


def ask(
    query: dns.message.Message | bytes,
    source: str = US_CLIENT,
    udp: bool = True,
    handler: Responder | None = None,
) -> dns.message.Message:
    wire = query if isinstance(query, bytes) else query.to_wire()
    reply = (handler or responder()).respond(wire, source, udp)
    assert reply is not None
    return dns.message.from_wire(reply)


def only_address(response: dns.message.Message) -> str:
    (rrset,) = response.answer
    (rdata,) = rrset
    return str(rdata)


def test_answer_is_authoritative_and_echoes_id_rd_and_question() -> None:
    query = a_query("Www.Millions.TEST")
    query.flags &= ~dns.flags.RD
    response = ask(query)
    assert query.is_response(response)
    assert response.flags & dns.flags.AA
    assert not response.flags & (dns.flags.RD | dns.flags.RA | dns.flags.TC)
    assert str(response.question[0].name) == "Www.Millions.TEST."
    assert only_address(response) == US_LB
    assert response.answer[0].ttl == 5
    assert ask(a_query("www.millions.test")).flags & dns.flags.RD


def test_edns_reply_advertises_our_payload() -> None:
    response = ask(a_query("www.millions.test", use_edns=0, payload=4096))
    assert response.edns == 0
    assert response.payload == 1232
    assert ask(a_query("www.millions.test")).edns == -1


def test_region_from_source_address() -> None:
    assert only_address(ask(a_query("www.millions.test"), EU_CLIENT)) == EU_LB
    assert only_address(ask(a_query("www.millions.test"), "127.0.132.200")) == US_LB
    assert only_address(ask(a_query("www.millions.test"), "127.0.133.7")) == US_LB


def ecs_query(address: str, srclen: int, name: str = "www.millions.test") -> dns.message.Message:
    return a_query(name, use_edns=0, options=[dns.edns.ECSOption(address, srclen)])


def echoed_ecs(response: dns.message.Message) -> dns.edns.ECSOption:
    (option,) = response.options
    assert isinstance(option, dns.edns.ECSOption)
    return option


def test_ecs_decides_the_region_and_is_echoed_with_its_scope() -> None:
    response = ask(ecs_query("127.0.132.0", 24), US_CLIENT)
    assert only_address(response) == EU_LB
    option = echoed_ecs(response)
    assert (option.address, option.srclen, option.scopelen) == ("127.0.132.0", 24, 25)
    response = ask(ecs_query("127.0.131.0", 24), EU_CLIENT)
    assert only_address(response) == US_LB
    assert echoed_ecs(response).scopelen == 24
    response = ask(ecs_query("2001:db8:aa::", 48), US_CLIENT)
    assert only_address(response) == EU_LB
    assert (echoed_ecs(response).srclen, echoed_ecs(response).scopelen) == (48, 32)


def test_ecs_answers_are_templated_per_client_network() -> None:
    handler = responder()
    first = ask(ecs_query("127.0.132.0", 24), US_CLIENT, handler=handler)
    again = ask(ecs_query("127.0.132.0", 24), US_CLIENT, handler=handler)
    other = ask(ecs_query("127.0.131.0", 24), US_CLIENT, handler=handler)
    assert handler.stats.template_hits == 1
    assert only_address(first) == only_address(again) == EU_LB
    assert echoed_ecs(again).scopelen == 25
    assert only_address(other) == US_LB


def test_ecs_source_prefix_zero_uses_the_source_address_with_scope_zero() -> None:
    response = ask(ecs_query("0.0.0.0", 0), EU_CLIENT)
    assert only_address(response) == EU_LB
    assert (echoed_ecs(response).srclen, echoed_ecs(response).scopelen) == (0, 0)


def test_ecs_scope_is_zero_for_answers_that_do_not_depend_on_the_client() -> None:
    response = ask(ecs_query("127.0.132.0", 24, "nope.millions.test"))
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert echoed_ecs(response).scopelen == 0


def test_two_ecs_options_or_dirty_ecs_address_bits_are_formerr() -> None:
    query = a_query(
        "www.millions.test",
        use_edns=0,
        options=[dns.edns.ECSOption("127.0.132.0", 24), dns.edns.ECSOption("127.0.131.0", 24)],
    )
    assert ask(query).rcode() == dns.rcode.FORMERR
    wire = bytearray(ecs_query("127.0.132.0", 20).to_wire())
    wire[-1] |= 0x01  # a bit past the /20 source prefix
    assert ask(bytes(wire)).rcode() == dns.rcode.FORMERR


def test_unknown_edns_version_is_badvers() -> None:
    response = ask(a_query("www.millions.test", use_edns=1))
    assert response.rcode() == dns.rcode.BADVERS
    assert response.edns == 0
    assert response.answer == []


@pytest.mark.parametrize("opcode", [dns.opcode.NOTIFY, dns.opcode.UPDATE, dns.opcode.STATUS])
def test_other_opcodes_are_notimp(opcode: dns.opcode.Opcode) -> None:
    query = a_query("millions.test")
    query.set_opcode(opcode)
    response = ask(query.to_wire())
    assert response.rcode() == dns.rcode.NOTIMP
    assert response.opcode() == opcode
    assert response.id == query.id


def test_malformed_queries_with_a_header_are_formerr() -> None:
    header = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    for wire in (
        header,  # a question is promised but missing
        header + b"\x03www",  # name cut short
        header[:5] + b"\x00" + header[6:],  # no question at all
        header[:5] + b"\x02" + header[6:] + a_query("a.millions.test").to_wire()[12:] * 2,
        a_query("www.millions.test").to_wire() + b"junk",
    ):
        response = ask(wire)
        assert response.rcode() == dns.rcode.FORMERR
        assert response.id == 0x1234 or wire[:2] != header[:2]
        assert response.flags & dns.flags.QR


def test_no_reply_to_short_packets_or_responses() -> None:
    handler = responder()
    assert handler.respond(b"", US_CLIENT, True) is None
    assert handler.respond(b"\x00" * 11, US_CLIENT, True) is None
    response_wire = dns.message.make_response(a_query("www.millions.test")).to_wire()
    assert handler.respond(response_wire, US_CLIENT, True) is None
    assert handler.stats.dropped == 3


def test_signed_query_with_unknown_key_is_notauth() -> None:
    query = a_query("www.millions.test")
    query.use_tsig({dns.name.from_text("key."): b"secret-secret-16"}, "key.")
    assert ask(query.to_wire()).rcode() == dns.rcode.NOTAUTH


def test_udp_replies_over_512_or_the_edns_size_are_truncated() -> None:
    handler = responder(many_nameservers=True)
    plain = ask(dns.message.make_query("millions.test", "NS"), handler=handler)
    assert plain.flags & dns.flags.TC
    assert len(plain.to_wire()) <= 512
    small = ask(
        dns.message.make_query("millions.test", "NS", use_edns=0, payload=600), handler=handler
    )
    assert small.flags & dns.flags.TC
    tcp = ask(dns.message.make_query("millions.test", "NS"), udp=False, handler=handler)
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 40 and len(tcp.additional) == 40
    assert handler.stats.truncated == 2


def test_dropping_glue_alone_does_not_set_tc_and_payload_is_capped() -> None:
    handler = responder(many_nameservers=True)
    reply = ask(
        dns.message.make_query("millions.test", "NS", use_edns=0, payload=4096), handler=handler
    )
    assert len(reply.to_wire()) <= 1232
    assert len(reply.answer[0]) == 40
    assert 0 < len(reply.additional) < 40
    assert not reply.flags & dns.flags.TC


def test_answers_follow_the_view_at_once() -> None:
    handler = responder()
    wire = a_query("www.millions.test").to_wire()
    assert only_address(ask(wire, handler=handler)) == US_LB
    assert only_address(ask(wire, handler=handler)) == US_LB
    assert handler.stats.template_hits == 1
    handler.set_view(HealthView({"us-east": False}, {}), frozenset())
    assert only_address(ask(wire, handler=handler)) == EU_LB
    handler.set_view(HealthView({}, {}), frozenset({"us-east"}))
    assert only_address(ask(wire, handler=handler)) == EU_LB
    handler.set_view(HealthView({}, {}), frozenset())
    assert only_address(ask(wire, handler=handler)) == US_LB


def test_counters_by_type_rcode_region_and_target() -> None:
    handler = responder()
    for _ in range(3):
        ask(a_query("www.millions.test"), US_CLIENT, handler=handler)
    ask(a_query("cdn.millions.test"), EU_CLIENT, handler=handler)
    ask(dns.message.make_query("nope.millions.test", "AAAA"), EU_CLIENT, handler=handler)
    ask(b"\x00\x01\x01\x00" + bytes(8), handler=handler)
    assert handler.stats.queries == {
        ("A", "NOERROR", "us"): 3,
        ("A", "NOERROR", "eu"): 1,
        ("AAAA", "NXDOMAIN", "eu"): 1,
        ("none", "FORMERR", "none"): 1,
    }
    assert handler.stats.answers == {("www", "us-east"): 3, ("cdn", "edge-eu"): 1}


# -- the template fast path against full rendering ------------------------------------------

NAMES = st.sampled_from(
    [
        "www.millions.test",
        "cdn.millions.test",
        "millions.test",
        "ns1.millions.test",
        "nope.millions.test",
        "a.b.www.millions.test",
        "example.com",
        "millions.test.org",
    ]
) | st.from_regex(r"[a-z0-9-]{1,30}(\.[a-z0-9-]{1,30}){0,4}\.millions\.test", fullmatch=True)
QTYPES = st.sampled_from([1, 2, 6, 15, 16, 28, 41, 99, 128, 251, 252, 255, 65535]) | st.integers(
    0, 65535
)
SOURCES = st.sampled_from([US_CLIENT, EU_CLIENT, "127.0.132.200", "127.0.133.7"])


@st.composite
def plain_queries(draw: st.DrawFn) -> bytes:
    query = dns.message.Message(id=draw(st.integers(0, 65535)))
    query.flags = draw(
        st.sampled_from([0, dns.flags.RD, dns.flags.AD | dns.flags.RD, dns.flags.CD])
    )
    name = dns.name.from_text(draw(NAMES))
    rdclass = dns.rdataclass.RdataClass.make(draw(st.sampled_from([1, 1, 3, 255])))
    rdtype = dns.rdatatype.RdataType.make(draw(QTYPES))
    query.question.append(dns.rrset.RRset(name, rdclass, rdtype))
    if draw(st.booleans()):
        query.use_edns(0, draw(st.sampled_from([0, dns.flags.DO])), draw(st.integers(0, 65535)))
    return query.to_wire()


def recased(wire: bytes, end: int, flips: list[bool], new_id: int) -> bytes:
    name = bytearray(wire[12 : end - 4])
    for i, flip in enumerate(flips[: len(name)]):
        if flip and chr(name[i]).isalpha():
            name[i] ^= 0x20
    return new_id.to_bytes(2, "big") + wire[2:12] + bytes(name) + wire[end - 4 :]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    wire=plain_queries(),
    source=SOURCES,
    udp=st.booleans(),
    flips=st.lists(st.booleans(), max_size=64),
    new_id=st.integers(0, 65535),
)
def test_template_replies_equal_fully_rendered_replies(
    wire: bytes, source: str, udp: bool, flips: list[bool], new_id: int
) -> None:
    end = simple_question_end(wire)
    assert end, "the strategy builds plain queries only"
    again = recased(wire, end, flips, new_id)
    warm = responder()
    warm.respond(wire, source, udp)
    from_template = warm.respond(again, source, udp)
    assert warm.stats.template_hits == 1
    assert from_template == responder().respond(again, source, udp)


QUERY_FIELDS = {
    "id": st.integers(0, 65535),
    "flags": st.sampled_from([0, dns.flags.RD, dns.flags.CD]),
    "name": st.sampled_from(["www.millions.test", "WWW.millions.test", "millions.test"]),
    "rdtype": st.sampled_from([dns.rdatatype.A, dns.rdatatype.NS, dns.rdatatype.ANY]),
    "payload": st.sampled_from([None, 512, 800, 4096]),
    "ednsflags": st.sampled_from([0, dns.flags.DO]),
    "ecs": st.sampled_from(
        [
            None,
            ("127.0.132.0", 24),
            ("127.0.132.128", 25),
            ("127.0.131.0", 24),
            ("127.0.132.0", 23),
            ("0.0.0.0", 0),
            ("2001:db8::", 48),
        ]
    ),
    "source": SOURCES,
    "udp": st.booleans(),
}


def build_query(fields: dict[str, Any]) -> bytes:
    query = dns.message.Message(id=fields["id"])
    query.flags = fields["flags"]
    name = dns.name.from_text(fields["name"])
    query.question.append(dns.rrset.RRset(name, dns.rdataclass.IN, fields["rdtype"]))
    if fields["payload"] is not None:
        ecs = fields["ecs"]
        options: list[dns.edns.Option] = [] if ecs is None else [dns.edns.ECSOption(*ecs)]
        query.use_edns(0, fields["ednsflags"], fields["payload"], options=options)
    return query.to_wire()


@st.composite
def similar_queries(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Plain queries (some with Client Subnet) that each differ from the first in one
    field."""
    base = draw(st.fixed_dictionaries(QUERY_FIELDS))
    variants = [base]
    for field in draw(st.lists(st.sampled_from(sorted(QUERY_FIELDS)), max_size=10)):
        variants.append({**base, field: draw(QUERY_FIELDS[field])})
    return draw(st.permutations(variants))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries=similar_queries())
def test_a_template_is_used_only_for_queries_with_the_same_answer(
    queries: list[dict[str, Any]],
) -> None:
    warm = responder(many_nameservers=True)  # big NS answers: truncation depends on the payload
    for fields in queries:
        wire, source, udp = build_query(fields), fields["source"], fields["udp"]
        fresh = responder(many_nameservers=True).respond(wire, source, udp)
        assert warm.respond(wire, source, udp) == fresh


def test_each_spelling_is_answered_as_spelled_from_the_exact_cache() -> None:
    handler = responder()
    for query_id, name in enumerate(["www.millions.test", "WWW.millions.test"] * 3):
        wire = a_query(name).to_wire()
        wire = query_id.to_bytes(2, "big") + wire[2:]
        assert handler.respond(wire, US_CLIENT, True) == responder().respond(wire, US_CLIENT, True)
    assert handler.stats.template_hits == 5
    assert handler.stats.queries == {("A", "NOERROR", "us"): 6}
    assert handler.stats.answers == {("www", "us-east"): 6}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    queries=similar_queries(),
    repeats=st.integers(1, 3),
    exact_cache=st.integers(1, 4),
    template_cache=st.integers(1, 4),
    new_view_at=st.integers(0, 30),
)
def test_counters_are_the_same_from_templates_as_from_rendering(
    queries: list[dict[str, Any]],
    repeats: int,
    exact_cache: int,
    template_cache: int,
    new_view_at: int,
) -> None:
    """Hits counted on templates and folded in later (on reading the stats, on a new
    view, when a cache starts over) add up to what rendering every query counts."""
    warm = responder(many_nameservers=True)
    rendered = ResponderStats()
    with (
        patch("millions.dns.responder.EXACT_CACHE_SIZE", exact_cache),
        patch("millions.dns.responder.TEMPLATE_CACHE_SIZE", template_cache),
    ):
        for index, fields in enumerate(queries * repeats):
            if index == new_view_at:
                warm.set_view(HealthView({}, {}), frozenset())
            wire, source, udp = build_query(fields), fields["source"], fields["udp"]
            fresh = responder(many_nameservers=True)
            fresh.respond(wire, source, udp)
            warm.respond(wire, source, udp)
            rendered.queries.update(fresh.stats.queries)
            rendered.answers.update(fresh.stats.answers)
            rendered.truncated += fresh.stats.truncated
    assert warm.stats.queries == rendered.queries
    assert warm.stats.answers == rendered.answers
    assert warm.stats.truncated == rendered.truncated
    assert warm.stats.dropped == 0


# -- fuzzing -------------------------------------------------------------------------------


def check_reply(handler: Responder, wire: bytes, udp: bool) -> None:
    reply = handler.respond(wire, US_CLIENT, udp)
    if reply is None:
        assert len(wire) < 12 or wire[2] & 0x80
        return
    assert reply[:2] == wire[:2]
    response = dns.message.from_wire(reply)
    assert response.flags & dns.flags.QR
    if udp:
        assert len(reply) <= 1232


@settings(max_examples=400, deadline=None)
@given(wire=st.binary(max_size=700), udp=st.booleans())
def test_random_packets_never_raise(wire: bytes, udp: bool) -> None:
    check_reply(responder(), wire, udp)


@st.composite
def valid_queries(draw: st.DrawFn) -> bytes:
    base = draw(plain_queries())
    if draw(st.booleans()):
        query = dns.message.from_wire(base)
        address = draw(st.sampled_from(["127.0.132.0", "127.0.131.0", "2001:db8::", "10.0.0.0"]))
        srclen = draw(st.integers(0, 32 if "." in address else 128))
        query.use_edns(0, 0, 1232, options=[dns.edns.ECSOption(address, srclen)])
        return query.to_wire()
    return base


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    wire=valid_queries(),
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    cut=st.none() | st.integers(0, 400),
    insert=st.binary(max_size=8),
    udp=st.booleans(),
)
def test_mutated_queries_never_raise(
    wire: bytes, edits: list[tuple[int, int]], cut: int | None, insert: bytes, udp: bool
) -> None:
    mutated = bytearray(wire)
    for position, value in edits:
        if position < len(mutated):
            mutated[position] = value
    if insert:
        middle = len(mutated) // 2
        mutated[middle:middle] = insert
    if cut is not None:
        del mutated[cut:]
    check_reply(responder(), bytes(mutated), udp)
