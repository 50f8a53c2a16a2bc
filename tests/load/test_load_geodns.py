"""Simulated users that resolve the site's name through a geo DNS server, per region.

A fake authoritative server (dnspython on 127.0.61.53) answers by the query's source
address; one fake site listens on two addresses (127.0.61.1 "us", 127.0.61.2 "eu") with
shared state, so a user that moves between them keeps its session.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import cast

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from fake_photo_app import FakeServer

from millions.load import LoadConfig, LoadRunner
from millions.load.config import GeoDnsClients
from millions.load.resolver import AnswerCache, GeoDnsClient, Resolved, ResolveError

pytestmark = pytest.mark.timeout(30)

DNS_HOST = "127.0.61.53"
US_SITE, EU_SITE = "127.0.61.1", "127.0.61.2"
US_CLIENTS, EU_CLIENTS = "127.0.61.101", "127.0.61.102"
NAME = "www.millions.test"


@dataclass
class FakeGeoDns(asyncio.DatagramProtocol):
    """Answers A queries for NAME with `answers[source address]`; NXDOMAIN otherwise."""

    answers: dict[str, str]
    ttl: int = 1
    queries: Counter[str] = field(default_factory=Counter)
    transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        self.queries[addr[0]] += 1
        response = dns.message.make_response(query)
        question = query.question[0]
        address = self.answers.get(addr[0])
        if question.name.to_text().rstrip(".") == NAME and address is not None:
            response.answer.append(dns.rrset.from_text(NAME + ".", self.ttl, "IN", "A", address))
        else:
            response.set_rcode(dns.rcode.NXDOMAIN)
        assert self.transport is not None
        self.transport.sendto(response.to_wire(), addr)


@pytest.fixture
async def geo_dns() -> AsyncIterator[FakeGeoDns]:
    server = FakeGeoDns({US_CLIENTS: US_SITE, EU_CLIENTS: EU_SITE})
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: server, local_addr=(DNS_HOST, 0))
    yield server
    transport.close()


@pytest.fixture
def site() -> Iterator[FakeServer]:
    server = FakeServer(US_SITE, "site", extra_hosts=(EU_SITE,))
    server.start()
    yield server
    server.stop()


def dns_port(server: FakeGeoDns) -> int:
    assert server.transport is not None
    port: int = server.transport.get_extra_info("sockname")[1]
    return port


async def test_users_resolve_per_region_honour_ttls_and_follow_a_failover(
    geo_dns: FakeGeoDns, site: FakeServer
) -> None:
    clients = GeoDnsClients(
        server=f"{DNS_HOST}:{dns_port(geo_dns)}", sources={"us": US_CLIENTS, "eu": EU_CLIENTS}
    )
    runner = LoadRunner(
        LoadConfig(
            targets=[f"http://{NAME}:{site.port}"],
            users=4,
            duration_s=3.0,
            think_time_s=0.01,
            mix={"me": 1.0, "browse": 1.0},
            dns=clients,
        )
    )
    assert [u.region for u in runner.users] == ["us", "eu", "us", "eu"]
    failover_at: list[float] = []

    async def fail_over_us_at_half_time() -> None:
        deadline = time.monotonic() + 10
        while runner.snapshot().phase != "running":
            assert time.monotonic() < deadline, "the main phase never started"
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.2)  # the load runs on both sites for a while: not a sync
        geo_dns.answers[US_CLIENTS] = EU_SITE  # us-east is gone: DNS names eu-west
        failover_at.append(time.monotonic())

    flipper = asyncio.create_task(fail_over_us_at_half_time())
    report = await runner.run()
    await flipper

    assert report.failed_requests == 0, report.errors
    assert report.requests > 100
    # every request named the site, not an address; both addresses served
    assert set(site.state.host_headers) == {f"{NAME}:{site.port}"}
    before = Counter(a for t, a in site.state.served_at if t < failover_at[0])
    assert before[US_SITE] > 0 and before[EU_SITE] > 0
    # once the last answer cached before the failover expired, nobody used us-east
    settled = failover_at[0] + geo_dns.ttl + 0.2
    assert not [a for t, a in site.state.served_at if t > settled and a == US_SITE]
    # queries came from both client networks, and answers were reused within their TTL
    assert set(geo_dns.queries) == {US_CLIENTS, EU_CLIENTS}
    assert sum(geo_dns.queries.values()) <= 4 * (3 / geo_dns.ttl + 4)


async def test_a_name_that_does_not_resolve_is_a_dns_failure(geo_dns: FakeGeoDns) -> None:
    clients = GeoDnsClients(server=f"{DNS_HOST}:{dns_port(geo_dns)}", sources={"x": "127.0.61.9"})
    report = await LoadRunner(
        LoadConfig(targets=[f"http://{NAME}:1"], users=2, duration_s=0.3, dns=clients)
    ).run()
    assert report.users_ready == 0
    assert report.setup_errors == {"dns": 2}
    assert "NXDOMAIN" in report.setup_error_examples["dns"][0]


async def test_the_client_reports_timeouts_and_answer_cache_expires() -> None:
    silent = GeoDnsClient(("127.0.61.54", 9), timeout_s=0.2)  # nothing answers there
    with pytest.raises(ResolveError, match="no answer"):
        await silent.resolve(NAME, None)
    cache = AnswerCache()
    cache.put(NAME, Resolved("127.0.61.1", 5), now=100.0)
    assert cache.get(NAME, 104.9) == "127.0.61.1"
    assert cache.get(NAME, 105.0) is None
    assert cache.get("other.test", 100.0) is None


def test_geo_dns_clients_are_validated() -> None:
    with pytest.raises(ValueError, match=r"dns\.server"):
        GeoDnsClients(server="dns.example:53", sources={"us": US_CLIENTS})
    with pytest.raises(ValueError, match=r"dns\.sources"):
        GeoDnsClients(server=f"{DNS_HOST}:53", sources={"us": "10.0.0.1"})
    with pytest.raises(ValueError, match=r"dns\.sources"):
        GeoDnsClients(server=f"{DNS_HOST}:53", sources={})
