"""Name resolution the way a simulated user's machine does it: through the geo DNS.

Each user sits in a region, which is a client network: its queries and its HTTP
connections leave from that region's source address (127.x), so the geo DNS server maps
it to a region exactly as it maps a real resolver's address. Answers are cached per user
until their TTL runs out, as a stub resolver does; then the next request asks again and,
after a failover, lands in the data center the DNS now names.

Queries use dnspython's asyncio API over UDP, retried over TCP when the answer is
truncated.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

DEFAULT_TIMEOUT_S = 1.0


class ResolveError(Exception):
    """A name did not resolve to an IPv4 address; the message says why."""


@dataclass(frozen=True)
class Resolved:
    """One answer: the address to connect to and how long it may be reused."""

    address: str
    ttl_s: int


@dataclass
class AnswerCache:
    """One user's cached answers: name -> (address, expiry on the caller's clock)."""

    answers: dict[str, tuple[str, float]] = field(default_factory=dict)

    def get(self, name: str, now: float) -> str | None:
        cached = self.answers.get(name)
        if cached is None or cached[1] <= now:
            return None
        return cached[0]

    def put(self, name: str, answer: Resolved, now: float) -> None:
        self.answers[name] = (answer.address, now + answer.ttl_s)


class GeoDnsClient:
    """Asks one DNS server for A records, from a given source address."""

    def __init__(self, server: tuple[str, int], timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.server = server
        self.timeout_s = timeout_s
        self.queries = 0

    async def resolve(self, name: str, source: str | None) -> Resolved:
        """The first A record of `name` as seen from `source`; ResolveError otherwise."""
        query = dns.message.make_query(name, dns.rdatatype.A)
        host, port = self.server
        self.queries += 1
        try:
            response = await dns.asyncquery.udp(
                query, host, timeout=self.timeout_s, port=port, source=source
            )
            if response.flags & dns.flags.TC:
                response = await dns.asyncquery.tcp(
                    query, host, timeout=self.timeout_s, port=port, source=source
                )
        except dns.exception.Timeout:
            raise ResolveError(
                f"{name}: no answer from {host}:{port} in {self.timeout_s}s"
            ) from None
        except (dns.exception.DNSException, OSError) as exc:
            raise ResolveError(f"{name}: {type(exc).__name__}: {exc}") from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            raise ResolveError(f"{name}: {dns.rcode.to_text(rcode)}")
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.A and len(rrset):
                return Resolved(str(rrset[0]), int(rrset.ttl))
        raise ResolveError(f"{name}: no A record in the answer")


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
