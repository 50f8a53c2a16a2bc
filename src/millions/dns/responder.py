"""From query bytes to reply bytes: parsing, EDNS and Client Subnet, truncation, counting.

`Responder.respond(wire, source, udp)` is deterministic given the health view and the
drained set, and does no I/O, so it is tested directly and fuzzed. Plain queries are
answered from rendered templates (see `millions.dns.wire`); the templates are dropped
whenever the view changes, so every answer follows the current health. A query whose
bytes after the ID were seen before from the same region is answered by one dict lookup
(its template under those exact bytes) and the ID prepended: no parsing at all, which
is what the common case of a resolver asking the same names again costs. Hits are
counted on the template and folded into `stats` when it is read, so the hot path bumps
one integer instead of the labelled counters.

Rules beyond `answers.resolve`: packets shorter than a header and responses (QR set) get
no reply; opcodes other than QUERY get NOTIMP; packets dnspython cannot parse get FORMERR
(NOTAUTH when signed with an unknown TSIG key), as do queries without exactly one
question, a second ECS option or an ECS address with bits past its source prefix; EDNS
versions above 0 get BADVERS (RFC 6891). With EDNS the reply carries OPT with our payload
size, and the ECS option is echoed with the scope of the answer (RFC 7871: the matched
network's prefix length for geo answers, 0 for answers that do not depend on the client).
Record sets are rendered in config order (no shuffling), so a template and a fresh
rendering are the same bytes. UDP replies larger than the client's limit (its EDNS
payload size, at most `max_udp_payload`, else 512 bytes) are cut at a record set
boundary, with TC set when answer or authority records were cut.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Set
from dataclasses import dataclass, field

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from millions.dns.answers import resolve
from millions.dns.health import HealthView
from millions.dns.regions import Locator
from millions.dns.wire import (
    HEADER_BYTES,
    cache_key,
    header_reply,
    patch_reply,
    simple_question_end,
)
from millions.dns.zone import Zone

#: Plain-query templates kept before starting over (each is a few hundred bytes).
TEMPLATE_CACHE_SIZE = 8192
#: Exact query spellings (bytes after the ID) remembered before starting over; resolvers
#: that randomise the letter case (0x20) make many spellings of one template.
EXACT_CACHE_SIZE = 16384
#: Query types counted under their own name in metrics; the rest count as "other".
COUNTED_QTYPES = frozenset(
    dns.rdatatype.from_text(t)
    for t in "A AAAA NS SOA ANY CNAME MX TXT PTR SRV HTTPS SVCB CAA DS DNSKEY AXFR IXFR".split()
)
NO_REGION = "none"
NO_QTYPE = "none"
_TCP_MAX = 65535
_PLAIN_UDP_MAX = 512


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a reply was, for the counters: labels and, for geo answers, the target."""

    qtype: str
    rcode: str
    region: str
    kind: str | None = None
    target: str | None = None
    fail_open: bool = False


@dataclass
class ResponderStats:
    queries: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    fail_open: Counter[str] = field(default_factory=Counter)
    dropped: int = 0
    truncated: int = 0
    template_hits: int = 0

    def count(self, outcome: Outcome, times: int = 1) -> None:
        self.queries[outcome.qtype, outcome.rcode, outcome.region] += times
        if outcome.target is not None and outcome.kind is not None:
            self.answers[outcome.kind, outcome.target] += times
            if outcome.fail_open:
                self.fail_open[outcome.kind] += times


@dataclass(slots=True)
class _Template:
    """A rendered reply to a plain query, without its ID, and how often it was sent
    since its hits were last folded into the stats."""

    tail: bytes
    outcome: Outcome
    truncated: bool
    hits: int = 0


def _qtype_label(qtype: int) -> str:
    return (
        dns.rdatatype.to_text(dns.rdatatype.RdataType(qtype))
        if qtype in COUNTED_QTYPES
        else "other"
    )


def _rcode_label(rcode: dns.rcode.Rcode) -> str:
    return dns.rcode.to_text(rcode)


class Responder:
    """Answers DNS queries for one zone from the current health view and drained set."""

    def __init__(self, zone: Zone, locator: Locator, max_udp_payload: int = 1232) -> None:
        self.zone = zone
        self.locator = locator
        self.max_udp_payload = max_udp_payload
        self.health = HealthView({}, {})
        self.drained: frozenset[str] = frozenset()
        self._stats = ResponderStats()
        #: (region, udp, cache key) -> template: every template lives here.
        self._templates: dict[tuple[str, bool, bytes], _Template] = {}
        #: (region, udp, query bytes after the ID) -> a template's answer spelled as asked.
        self._exact: dict[tuple[str, bool, bytes], _Template] = {}

    @property
    def stats(self) -> ResponderStats:
        """The counters, with the template hits so far folded in."""
        self._fold_hits()
        return self._stats

    def _fold_hits(self) -> None:
        self._fold(self._templates.values())
        self._fold(self._exact.values())

    def _fold(self, templates: Iterable[_Template]) -> None:
        stats = self._stats
        for template in templates:
            hits = template.hits
            if hits:
                template.hits = 0
                stats.count(template.outcome, hits)
                stats.template_hits += hits
                if template.truncated:
                    stats.truncated += hits

    def _drop_templates(self) -> None:
        self._fold_hits()
        self._templates.clear()
        self._exact.clear()

    def set_view(self, health: HealthView, drained: Set[str]) -> None:
        """Answer from now on with this health and drained set."""
        self.health = health
        self.drained = frozenset(drained)
        self._drop_templates()

    def respond(self, wire: bytes, source: str, udp: bool) -> bytes | None:
        """The reply to `wire` from `source` (None: send nothing)."""
        region = self.locator.region_of_source(source)
        exact = (region, udp, wire[2:])
        template = self._exact.get(exact)
        if template is not None:
            template.hits += 1
            return wire[:2] + template.tail
        question_end = simple_question_end(wire)
        if not question_end:
            reply, outcome = self._respond(wire, source, udp)
            if outcome is not None:
                self._stats.count(outcome)
            else:
                self._stats.dropped += 1
            return reply
        key = (region, udp, cache_key(wire, question_end))
        template = self._templates.get(key)
        if template is not None:
            template.hits += 1
            reply = patch_reply(template.tail, wire, question_end)
            self._remember_exact(exact, template, reply)
            return reply
        reply, outcome = self._respond(wire, source, udp)
        if reply is None or outcome is None:  # not reached for a plain query; kept total
            self._stats.dropped += 1
            return reply
        self._stats.count(outcome)
        if reply[4:6] == b"\x00\x01" and (
            reply[HEADER_BYTES:question_end].lower() == wire[HEADER_BYTES:question_end].lower()
        ):
            if len(self._templates) >= TEMPLATE_CACHE_SIZE:
                self._drop_templates()
            template = _Template(reply[2:], outcome, bool(reply[2] & 0x02))
            self._templates[key] = template
            self._remember_exact(exact, template, reply)
        return reply

    def _remember_exact(
        self, exact: tuple[str, bool, bytes], template: _Template, reply: bytes
    ) -> None:
        """Answer the exact spelling of this query with `reply` (the template's answer
        with the question as spelled) from now on; its hits are counted apart."""
        if len(self._exact) >= EXACT_CACHE_SIZE:
            self._fold(self._exact.values())
            self._exact.clear()
        self._exact[exact] = _Template(reply[2:], template.outcome, template.truncated)

    def _respond(self, wire: bytes, source: str, udp: bool) -> tuple[bytes | None, Outcome | None]:
        if len(wire) < HEADER_BYTES or wire[2] & 0x80:
            return None, None
        opcode = (wire[2] >> 3) & 0x0F
        if opcode != dns.opcode.QUERY:
            return header_reply(wire, dns.rcode.NOTIMP), Outcome(NO_QTYPE, "NOTIMP", NO_REGION)
        try:
            query = dns.message.from_wire(wire)
        except dns.message.UnknownTSIGKey:
            return header_reply(wire, dns.rcode.NOTAUTH), Outcome(NO_QTYPE, "NOTAUTH", NO_REGION)
        except Exception:  # dnspython raises many kinds for malformed input: all mean FORMERR
            return header_reply(wire, dns.rcode.FORMERR), Outcome(NO_QTYPE, "FORMERR", NO_REGION)
        if len(query.question) != 1:
            return header_reply(wire, dns.rcode.FORMERR), Outcome(NO_QTYPE, "FORMERR", NO_REGION)
        question = query.question[0]
        qtype = _qtype_label(question.rdtype)
        response = dns.message.make_response(query, our_payload=self.max_udp_payload)
        if query.edns > 0:
            response.set_rcode(dns.rcode.BADVERS)
            return self._render(response, query, udp), Outcome(qtype, "BADVERS", NO_REGION)
        ecs_options = [o for o in query.options if o.otype == dns.edns.OptionType.ECS]
        if len(ecs_options) > 1:
            return header_reply(wire, dns.rcode.FORMERR), Outcome(qtype, "FORMERR", NO_REGION)
        ecs = ecs_options[0] if ecs_options else None
        if isinstance(ecs, dns.edns.ECSOption) and ecs.srclen > 0:
            location = self.locator.locate(ipaddress.ip_address(ecs.address))
            region, scope = location.region, location.scope
        else:
            region, scope = self.locator.region_of_source(source), 0
        answer = resolve(
            self.zone,
            question.name,
            question.rdtype,
            question.rdclass,
            region,
            self.health,
            self.drained,
        )
        response.set_rcode(answer.rcode)
        if answer.authoritative:
            response.flags |= dns.flags.AA
        response.answer = list(answer.answer)
        response.authority = list(answer.authority)
        response.additional = list(answer.additional)
        if isinstance(ecs, dns.edns.ECSOption):
            echoed = dns.edns.ECSOption(
                ecs.address, ecs.srclen, scope if answer.target is not None else 0
            )
            response.use_edns(0, 0, self.max_udp_payload, query.payload, options=[echoed])
        outcome = Outcome(
            qtype,
            _rcode_label(answer.rcode),
            region,
            None if answer.kind is None else answer.kind.value,
            answer.target,
            answer.fail_open,
        )
        return self._render(response, query, udp), outcome

    def _render(
        self, response: dns.message.Message, query: dns.message.Message, udp: bool
    ) -> bytes:
        if not udp:
            limit = _TCP_MAX
        elif query.edns >= 0:
            limit = max(_PLAIN_UDP_MAX, min(query.payload, self.max_udp_payload))
        else:
            limit = _PLAIN_UDP_MAX
        reply = response.to_wire(max_size=limit, prefer_truncation=True, want_shuffle=False)
        if reply[2] & 0x02:
            self._stats.truncated += 1
        return reply
