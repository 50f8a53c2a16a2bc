"""The DNS server on real sockets: dnspython's resolver over UDP and TCP, regions by
source address and ECS, truncation with TCP fallback, TCP framing, pipelining, idle
timeout and connection limit, and hostile packets that must not stop it."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
from collections.abc import Iterator

import dns.asyncquery
import dns.asyncresolver
import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.resolver
import pytest
from dns_support import (
    DNS_HOST,
    EU_CLIENT,
    EU_EDGE,
    EU_LB,
    UNMAPPED_CLIENT,
    US_CLIENT,
    US_EDGE,
    US_LB,
    a_query,
    address_of,
    dns_in_thread,
    eventually,
    make_config,
    running_dns,
    tcp,
    udp,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from millions.dns.main import GeoDns
from millions.dns.server import UDP_BATCH

pytestmark = pytest.mark.timeout(60)


def resolver(server: GeoDns) -> dns.asyncresolver.Resolver:
    resolver = dns.asyncresolver.Resolver(configure=False)
    resolver.nameservers = [DNS_HOST]
    resolver.port = server.port
    resolver.lifetime = 3.0
    return resolver


@pytest.mark.parametrize("over_tcp", [False, True])
async def test_dnspython_resolver_accepts_the_answers(over_tcp: bool) -> None:
    async with running_dns() as server:
        ask = resolver(server)
        www = await ask.resolve("www.millions.test", "A", tcp=over_tcp, source=US_CLIENT)
        assert [r.address for r in www] == [US_LB]
        assert www.rrset is not None and www.rrset.ttl == 5
        cdn = await ask.resolve("cdn.millions.test", "A", tcp=over_tcp, source=EU_CLIENT)
        assert [r.address for r in cdn] == [EU_EDGE]
        soa = await ask.resolve("millions.test", "SOA", tcp=over_tcp, source=US_CLIENT)
        assert soa[0].minimum == 5
        ns = await ask.resolve("millions.test", "NS", tcp=over_tcp, source=US_CLIENT)
        assert [str(r.target) for r in ns] == ["ns1.millions.test."]
        glue = await ask.resolve("ns1.millions.test", "A", tcp=over_tcp, source=US_CLIENT)
        assert [r.address for r in glue] == [DNS_HOST]
        with pytest.raises(dns.resolver.NXDOMAIN):
            await ask.resolve("nope.millions.test", "A", tcp=over_tcp, source=US_CLIENT)
        with pytest.raises(dns.resolver.NoAnswer):
            await ask.resolve("www.millions.test", "AAAA", tcp=over_tcp, source=US_CLIENT)
        with pytest.raises(dns.resolver.NoNameservers):  # REFUSED from the only server
            await ask.resolve("example.com", "A", tcp=over_tcp, source=US_CLIENT)


async def test_negative_answers_and_refused_on_the_wire() -> None:
    async with running_dns() as server:
        for send in (udp, tcp):
            nx = await send(server, a_query("nope.millions.test"))
            assert nx.rcode() == dns.rcode.NXDOMAIN and nx.flags & dns.flags.AA
            assert [(r.rdtype, r.ttl) for r in nx.authority] == [(dns.rdatatype.SOA, 5)]
            nodata = await send(server, dns.message.make_query("www.millions.test", "AAAA"))
            assert nodata.rcode() == dns.rcode.NOERROR and nodata.answer == []
            assert nodata.authority[0].rdtype == dns.rdatatype.SOA
            refused = await send(server, a_query("example.com"))
            assert refused.rcode() == dns.rcode.REFUSED
            assert not refused.flags & dns.flags.AA


@pytest.mark.parametrize(
    ("source", "lb", "edge"),
    [
        (US_CLIENT, US_LB, US_EDGE),
        (EU_CLIENT, EU_LB, EU_EDGE),
        ("127.0.132.200", US_LB, US_EDGE),  # the /25 inside the eu /24
        (UNMAPPED_CLIENT, US_LB, US_EDGE),  # the default region
    ],
)
async def test_region_by_source_address(source: str, lb: str, edge: str) -> None:
    async with running_dns() as server:
        assert await address_of(server, "www.millions.test", source) == lb
        assert await address_of(server, "cdn.millions.test", source) == edge
        response = await tcp(server, a_query("www.millions.test"), source)
        assert str(response.answer[0][0]) == lb


async def test_region_by_client_subnet_with_scope_echo() -> None:
    async with running_dns() as server:
        query = a_query(
            "www.millions.test", use_edns=0, options=[dns.edns.ECSOption("127.0.132.0", 24)]
        )
        response = await udp(server, query, US_CLIENT)
        assert str(response.answer[0][0]) == EU_LB
        (option,) = response.options
        assert isinstance(option, dns.edns.ECSOption)
        assert (option.address, option.srclen, option.scopelen) == ("127.0.132.0", 24, 25)


async def test_truncated_udp_answer_is_fetched_again_over_tcp() -> None:
    many = make_config(nameservers={f"ns{i}": f"127.0.130.{i + 1}" for i in range(40)})
    async with running_dns(many) as server:
        query = dns.message.make_query("millions.test", "NS")
        truncated = await udp(server, query)
        assert truncated.flags & dns.flags.TC
        response, used_tcp = await dns.asyncquery.udp_with_fallback(
            query, DNS_HOST, timeout=2, port=server.port, source=US_CLIENT
        )
        assert used_tcp
        assert len(response.answer[0]) == 40
        assert server.responder.stats.truncated == 2


def framed(query: dns.message.Message) -> bytes:
    wire = query.to_wire()
    return len(wire).to_bytes(2, "big") + wire


async def read_framed(reader: asyncio.StreamReader) -> dns.message.Message:
    size = int.from_bytes(await reader.readexactly(2), "big")
    return dns.message.from_wire(await reader.readexactly(size))


async def test_tcp_pipelined_queries_are_answered_in_order() -> None:
    async with running_dns() as server:
        reader, writer = await asyncio.open_connection(
            DNS_HOST, server.port, local_addr=(EU_CLIENT, 0)
        )
        queries = [a_query(name) for name in ("www.millions.test", "cdn.millions.test")] * 5
        queries.append(a_query("nope.millions.test"))
        writer.write(b"".join(framed(q) for q in queries))
        first = framed(a_query("www.millions.test"))
        for byte in first:  # one query split into single bytes
            writer.write(bytes([byte]))
            await writer.drain()
        replies = [await read_framed(reader) for _ in range(len(queries) + 1)]
        assert [r.id for r in replies[:-1]] == [q.id for q in queries]
        assert [str(r.answer[0][0]) for r in replies[:10]] == [EU_LB, EU_EDGE] * 5
        assert replies[10].rcode() == dns.rcode.NXDOMAIN
        assert str(replies[11].answer[0][0]) == EU_LB
        writer.close()
        await writer.wait_closed()


async def test_idle_tcp_connections_are_closed() -> None:
    async with running_dns(make_config(tcp_idle_timeout_s=0.3)) as server:
        reader, writer = await asyncio.open_connection(DNS_HOST, server.port)
        writer.write(framed(a_query("www.millions.test")))
        assert (await read_framed(reader)).rcode() == dns.rcode.NOERROR
        async with asyncio.timeout(5):
            assert await reader.read() == b""  # closed by the server
        assert server.server.stats.tcp_idle_closed == 1
        writer.close()


async def test_connections_past_the_limit_are_closed_at_once() -> None:
    async with running_dns(make_config(tcp_max_connections=2)) as server:
        held = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(DNS_HOST, server.port)
            writer.write(framed(a_query("www.millions.test")))
            await read_framed(reader)
            held.append(writer)
        reader, writer = await asyncio.open_connection(DNS_HOST, server.port)
        async with asyncio.timeout(5):
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass
        writer.close()
        assert server.server.stats.tcp_refused == 1
        held.pop().close()

        async def accepted_again() -> bool:
            reader, writer = await asyncio.open_connection(DNS_HOST, server.port)
            try:
                writer.write(framed(a_query("www.millions.test")))
                async with asyncio.timeout(0.5):
                    return (await read_framed(reader)).rcode() == dns.rcode.NOERROR
            except (ConnectionResetError, asyncio.IncompleteReadError, TimeoutError):
                return False
            finally:
                writer.close()

        await eventually(accepted_again, "a new connection once one closed")
        for writer in held:
            writer.close()


HOSTILE_DATAGRAMS = [
    b"",
    b"\x00",
    b"\x12\x34" + b"\x00" * 9,
    b"\x12\x34\x01\x00\xff\xff\xff\xff\xff\xff\xff\xff",  # counts far beyond the data
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # pointer loop
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + b"\x3f" + b"a" * 63 + b"\x00" * 4,
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    + (b"\x01a" * 200)
    + b"\x00\x00\x01\x00\x01",
    b"\x12\x34\x81\x80" + b"\x00" * 8,  # a response
    b"\xff" * 65000,  # oversized
    random.Random(7).randbytes(1500),
]


async def test_hostile_packets_do_not_stop_the_server() -> None:
    async with running_dns() as server:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((US_CLIENT, 0))
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        for packet in HOSTILE_DATAGRAMS:
            sender.sendto(packet, (DNS_HOST, server.port))
        sender.close()
        assert await address_of(server, "www.millions.test") == US_LB
        streams = [
            b"\x00\x00",  # an empty frame
            b"\x00\x05hello",
            b"\xff\xff" + b"\x00" * 100,  # a frame that never completes
            b"\x00\x0c" + b"\x12\x34\x01\x00" + b"\x00" * 8,
        ]
        for stream in streams:
            _, writer = await asyncio.open_connection(DNS_HOST, server.port)
            writer.write(stream)
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        assert str((await tcp(server, a_query("www.millions.test"))).answer[0][0]) == US_LB
        assert server.server.stats.internal_errors == 0


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig is not installed")
async def test_dig_gets_the_answer() -> None:
    async with running_dns() as server:
        dig = await asyncio.create_subprocess_exec(
            "dig",
            f"@{DNS_HOST}",
            "-p",
            str(server.port),
            "-b",
            EU_CLIENT,
            "+short",
            "www.millions.test",
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        stdout, _ = await asyncio.wait_for(dig.communicate(), 10)
        assert stdout.decode().split() == [EU_LB]


def test_a_burst_larger_than_one_batch_is_answered_whole(live: GeoDns) -> None:
    """More datagrams than one readable event drains: every query gets its own answer."""
    count = UDP_BATCH * 3 + 5
    names = ["www.millions.test", "cdn.millions.test", "WWW.Millions.Test", "nope.millions.test"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((EU_CLIENT, 0))
        sock.settimeout(2.0)
        for query_id in range(count):
            query = a_query(names[query_id % len(names)])
            sock.sendto(query_id.to_bytes(2, "big") + query.to_wire()[2:], (DNS_HOST, live.port))
        answered: dict[int, dns.message.Message] = {}
        while len(answered) < count:
            reply = dns.message.from_wire(sock.recv(65535))
            answered[reply.id] = reply
    for query_id, reply in answered.items():
        name = names[query_id % len(names)]
        assert str(reply.question[0].name) == name + "."
        expected = {0: EU_LB, 1: EU_EDGE, 2: EU_LB}.get(query_id % len(names))
        if expected is None:
            assert reply.rcode() == dns.rcode.NXDOMAIN
        else:
            assert str(reply.answer[0][0]) == expected
    assert live.server.stats.internal_errors == 0


# -- Hypothesis packets against the live server -----------------------------------------------


@pytest.fixture(scope="module")
def live() -> Iterator[GeoDns]:
    with dns_in_thread(make_config()) as server:
        yield server


def still_answers_udp(sock: socket.socket, port: int) -> None:
    """A normal query sent after the fuzz packet gets its answer."""
    query = a_query("www.millions.test")
    sock.sendto(query.to_wire(), (DNS_HOST, port))
    while True:
        data = sock.recv(65535)
        if data[:2] == query.id.to_bytes(2, "big") and len(data) > 12:
            response = dns.message.from_wire(data)
            if query.is_response(response):
                assert str(response.answer[0][0]) == US_LB
                return


VALID_QUERY = a_query("www.millions.test", use_edns=0).to_wire()


def _edited(wire: bytes, edits: list[tuple[int, int]]) -> bytes:
    mutated = bytearray(wire)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    return bytes(mutated)


FUZZ_PACKETS = st.binary(max_size=600) | st.builds(
    _edited,
    st.just(VALID_QUERY),
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), min_size=1, max_size=4),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(packet=FUZZ_PACKETS)
def test_fuzzed_udp_packets_against_the_live_server(live: GeoDns, packet: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((US_CLIENT, 0))
        sock.settimeout(2.0)
        sock.sendto(packet, (DNS_HOST, live.port))
        still_answers_udp(sock, live.port)
    assert live.server.stats.internal_errors == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(st.binary(max_size=300), max_size=4))
def test_fuzzed_tcp_frames_against_the_live_server(live: GeoDns, frames: list[bytes]) -> None:
    query = a_query("cdn.millions.test")
    with socket.create_connection((DNS_HOST, live.port), timeout=2.0) as sock:
        payload = b"".join(len(f).to_bytes(2, "big") + f for f in frames)
        sock.sendall(payload + framed(query))
        buffer = b""
        while True:
            chunk = sock.recv(65535)
            assert chunk, "the server closed the connection"
            buffer += chunk
            while len(buffer) >= 2 and len(buffer) >= 2 + int.from_bytes(buffer[:2], "big"):
                size = int.from_bytes(buffer[:2], "big")
                message, buffer = buffer[2 : 2 + size], buffer[2 + size :]
                if message[:2] == query.id.to_bytes(2, "big") and len(message) > 12:
                    response = dns.message.from_wire(message)
                    if query.is_response(response):
                        assert str(response.answer[0][0]) == US_EDGE
                        assert live.server.stats.internal_errors == 0
                        return
