"""The CDN edge: a caching reverse proxy in front of one origin, on the proxy core.

`EdgeHandler.handle` follows the call sequence in `millions.edge`'s docstring: hits are
answered synchronously inside the proxy's callback (no task per hit); misses and
revalidations run as tasks that fetch through `OriginClient`, store and answer. Unsafe
methods (and requests the edge must not answer, such as If-Match) are streamed to the
origin by the proxy core itself; their response head passes through a hook that
invalidates the affected URIs.

Concurrent misses for one primary key make one origin request (`_flights`): the first
request fetches; the others wait for it (for a streamed body, until it is complete and
stored), then look the key up again. When the response was stored they are answered
from it; when it was not (private, no-store, another variant), each fetches on its own,
because an unstored response may not be shared. When the fetch fails, every waiter gets
the error (502).

Objects live in a `TieredStore` (memory LRU over a restart-safe disk tier). A hit whose
body is in memory is answered synchronously from bytes. A body only on disk is opened by
a task and leaves through the proxy core's `Exchange.respond_file` (os.sendfile from the
file region; see `millions.proxy.bodies` for why not `loop.sendfile`), for 200s and
single ranges alike; HEAD sends the head only. Several ranges of a disk object are read
into a multipart body up to `MULTIPART_READ_LIMIT` bytes; beyond that the whole object
is sent from the file. `EdgeStats.sendfile_bytes` counts what left that way.

Origin bodies up to `stream_threshold_bytes` (1 MiB by default) are read whole: those up
to the store's small-object size are stored in memory and on disk, larger ones are
written to disk in `DISK_CHUNK_BYTES` pieces. A larger body is streamed
(`EdgeStats.streamed_fills`): each piece goes to the client (`Exchange.respond_stream`)
and to the disk tier's streaming writer as it arrives, and the object is committed once
the body is complete, so memory holds a few pieces, never the body.

* The client's pace bounds the fill (the stream waits while the client's buffer is
  full), so memory stays bounded. A client that stops reading is cut after the proxy's
  send timeout; a client that disconnects does not abort the fill: the body is still
  read, stored and then served to waiters and later requests.
* An origin that fails mid-body (reset, timeout, a body shorter than its Content-Length
  or a chunked body without its last chunk) discards the partial object and cuts the
  client's connection, so the client sees a short response and nothing is cached.
* A client that asked for a range or sent a precondition is not streamed to: it waits
  for the object to be stored and is answered from it (206, 304, 416).
* A response that may not be stored, or that the disk tier cannot take, is streamed to
  the client alone (X-Cache PASS).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from millions.edge.entry import CachedResponse
from millions.edge.freshness import Reuse, ReuseDecision, current_age, decide_reuse
from millions.edge.headers import HOP_BY_HOP, SET_COOKIE_FIELDS, Header, connection_listed
from millions.edge.headers import first_value as first_header
from millions.edge.invalidation import invalidation_uris
from millions.edge.keys import (
    UNKEYED_OVERRIDE_FIELDS,
    CacheKeyError,
    RequestKey,
    is_override_field,
    request_key,
)
from millions.edge.messages import RequestHead, parse_request, parse_response
from millions.edge.origin import OriginClient, OriginError, OriginResponse, parse_origin
from millions.edge.ranges import (
    MultipartLayout,
    MultipartPart,
    RangeOutcome,
    RangePlan,
    content_range,
    multipart_layout,
    new_boundary,
    plan_range,
    unsatisfied_content_range,
)
from millions.edge.storability import storage_decision
from millions.edge.storage import BodyWriter, DiskBody, ObjectTooLarge, TieredStore
from millions.edge.storage.memory import segment_of
from millions.edge.validation import (
    Conditional,
    Revalidation,
    evaluate_conditional,
    freshen,
    not_modified_fields,
    origin_request_fields,
    revalidation_outcome,
    select_for_update,
)
from millions.edge.vary import select_variant
from millions.proxy.bodies import ResponseStream
from millions.proxy.deadlines import Deadlines
from millions.proxy.exchange import Exchange
from millions.proxy.pickers import SingleUpstream
from millions.proxy.server import ProxyServer
from millions.proxy.settings import ProxySettings
from millions.proxy.stats import ProxyStats
from millions.proxy.upstream import UpstreamPool

log = logging.getLogger("millions.edge")

HIT = b"HIT"
MISS = b"MISS"
STALE = b"STALE"
REVALIDATED = b"REVALIDATED"
PASS = b"PASS"
X_CACHE_VALUES = (HIT, MISS, STALE, REVALIDATED, PASS)

_GET = b"GET"
_HEAD = b"HEAD"
_NOT_PASSED_ON = HOP_BY_HOP | {b"content-length"}
_SERVE_NOW = frozenset({Reuse.FRESH, Reuse.STALE_ALLOWED, Reuse.STALE_WHILE_REVALIDATE})
_WHOLE = RangePlan(RangeOutcome.FULL)


# -- storage --------------------------------------------------------------------------------

#: Origin bodies larger than this are streamed (to the client and the disk tier at once)
#: instead of being read whole.
DEFAULT_STREAM_THRESHOLD_BYTES = 1 << 20

#: Bodies are written to the disk tier in pieces of about this size.
DISK_CHUNK_BYTES = 256 * 1024

#: Several ranges of an object on disk are read into one multipart body up to this many
#: bytes; a request for more gets the whole object, sent from the file (RFC 9110 §14.2
#: lets a server ignore Range).
MULTIPART_READ_LIMIT = 1 << 20

#: Body bytes in memory: a view into the memory tier's arena, or bytes (from the origin).
InMemory = bytes | memoryview

#: A stored body: in memory, or an open file region from the disk tier.
Body = InMemory | DiskBody


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A stored response's metadata and its body: the bytes when they are in memory,
    None when the body is on disk (it is opened when the object is answered)."""

    entry: CachedResponse
    body: InMemory | None


def _in_memory(body: Body) -> InMemory | None:
    return None if isinstance(body, DiskBody) else body


def _respond(exchange: Exchange, status: int, headers: Sequence[Header], body: InMemory) -> None:
    """`respond_composed` with a body that may be a view into the memory tier: the exchange
    only joins it or hands it to the transport, both of which take any buffer."""
    exchange.respond_composed(status, headers, cast(bytes, body))


def _release(body: Body) -> None:
    """Close a disk body that will not be sent."""
    if isinstance(body, DiskBody):
        body.close()


def _read_parts(body: DiskBody, parts: Sequence[MultipartPart]) -> list[bytes]:
    """The byte ranges of `parts` from a disk body (runs in a worker thread)."""
    fileno = body.file.fileno()
    return [
        os.pread(fileno, part.last - part.first + 1, body.offset + part.first) for part in parts
    ]


# -- counters -------------------------------------------------------------------------------


@dataclass(slots=True)
class EdgeStats:
    """Plain counters, turned into metrics at scrape time."""

    responses: dict[bytes, int] = field(default_factory=lambda: dict.fromkeys(X_CACHE_VALUES, 0))
    response_bytes: dict[bytes, int] = field(
        default_factory=lambda: dict.fromkeys(X_CACHE_VALUES, 0)
    )
    origin_fetches: int = 0
    origin_errors: int = 0
    origin_seconds: float = 0.0
    coalesced_waiters: int = 0
    invalidations: int = 0
    bad_requests: int = 0
    #: Body bytes that left through os.sendfile (disk hits).
    sendfile_bytes: int = 0
    #: Origin responses read in pieces (larger than the stream threshold), not whole.
    streamed_fills: int = 0

    def answered(self, x_cache: bytes, body_bytes: int) -> None:
        self.responses[x_cache] += 1
        self.response_bytes[x_cache] += body_bytes


# -- the request handler ------------------------------------------------------------------------


def _request_headers(exchange: Exchange) -> list[Header]:
    """The request's end-to-end header lines, names lower-cased, override fields dropped
    (from the exchange too, so a forwarded request does not carry them either)."""
    lines = exchange.head_lines
    headers: list[Header] = []
    kept: list[bytes] = []
    dropped = False
    for index in range(0, len(lines), 4):
        name = lines[index].lower()
        if name in UNKEYED_OVERRIDE_FIELDS or (b"_" in name and is_override_field(name)):
            dropped = True
            continue
        headers.append((name, lines[index + 2]))
        kept += lines[index : index + 4]
    if dropped:
        exchange.head_lines = kept
    return headers


def _plain(lines: list[bytes]) -> bool:
    """Whether a request's header lines leave a fresh stored response's answer as it is
    (see `_FAST_PATH_EXCLUDED`)."""
    for index in range(0, len(lines), 4):
        name = lines[index].lower()
        if name in _FAST_PATH_EXCLUDED or name in UNKEYED_OVERRIDE_FIELDS or b"_" in name:
            return False
    return True


def _passed_on(headers: Sequence[Header]) -> list[Header]:
    """An origin response's header lines as the edge passes them on (framing and per-hop
    fields dropped: the proxy frames the body itself)."""
    excluded = _NOT_PASSED_ON | connection_listed(headers)
    return [(name, value) for name, value in headers if name not in excluded]


def _block_fields(block: bytes) -> list[Header]:
    """Header lines of a raw response block (each line preceded by CRLF)."""
    fields: list[Header] = []
    for line in block.split(b"\r\n"):
        name, colon, value = line.partition(b":")
        if colon:
            fields.append((name.strip().lower(), value.strip(b" \t")))
    return fields


def _full_fields(entry: CachedResponse, tail: Sequence[Header]) -> list[Header]:
    """Header lines of a 200 (or other full) answer from `entry`."""
    headers = [*entry.headers, *tail]
    if entry.status == 200 and first_header(entry.headers, b"accept-ranges") is None:
        headers.append((b"accept-ranges", b"bytes"))
    return headers


#: Request fields after which a stored response may answer differently (conditionals,
#: ranges, request directives) or not at all (credentials): such requests take the full
#: path, as do requests with override fields (`keys.UNKEYED_OVERRIDE_FIELDS`).
_FAST_PATH_EXCLUDED = frozenset(
    {
        b"range",
        b"if-match",
        b"if-none-match",
        b"if-modified-since",
        b"if-unmodified-since",
        b"if-range",
        b"cache-control",
        b"pragma",
        b"authorization",
    }
)
#: Most request targets remembered for the fast path (cleared when full).
FAST_HITS_MAX = 4096


@dataclass(slots=True)
class FastHit:
    """A fresh, Vary-less stored 200 in memory, ready to answer a plain GET for the same raw
    Host and target without recomputing the key, the variant and the head fields. It is
    used only while the memory tier still holds exactly this variant and metadata, and
    only while the response is fresh."""

    primary: bytes
    #: The memory tier's handle of the variant (`only_variant`).
    handle: int
    entry: CachedResponse
    headers: list[Header]
    #: A view of the body in the memory tier's arena; dropped with its segment
    #: (`EdgeHandler._segment_dropped`) so that it never holds memory past the budget.
    body: memoryview


class EdgeHandler:
    """The proxy core's `RequestHandler` for an edge: cache, coalesce, forward.

    Plain GETs that repeat a fresh hit (`FastHit`) skip the RFC 9111 decisions already
    taken for them; any other request, and any change to the stored object, takes the
    full path.
    """

    def __init__(
        self,
        store: TieredStore,
        origin: OriginClient,
        picker: SingleUpstream,
        stats: EdgeStats,
        name: str,
        *,
        error_grace_s: float = 0.0,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
    ) -> None:
        self.store = store
        self.origin = origin
        self.picker = picker
        self.stats = stats
        self.via = b"1.1 " + name.encode("ascii", "replace")
        self.error_grace_s = error_grace_s
        self.stream_threshold_bytes = stream_threshold_bytes
        self._flights: dict[bytes, asyncio.Future[None]] = {}
        self._fast_hits: dict[tuple[bytes | None, bytes], FastHit] = {}
        store.memory.on_segment_dropped = self._segment_dropped
        self._refreshing: set[bytes] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def handle(self, exchange: Exchange) -> None:
        method = exchange.method
        raw_target = (exchange.host, exchange.target)
        get = method == _GET and not exchange.has_body
        if get:
            fast = self._fast_hits.get(raw_target)
            if (
                fast is not None
                and _plain(exchange.head_lines)
                and self._answer_fast(exchange, raw_target, fast)
            ):
                return
        headers = _request_headers(exchange)
        try:
            rkey = request_key(method, b"http", exchange.host or b"", exchange.target)
        except CacheKeyError as exc:
            self.stats.bad_requests += 1
            exchange.respond(400, b"400 Bad Request: " + str(exc).encode() + b"\n", close=True)
            return
        exchange.host = rkey.host
        exchange.target = rkey.target
        if method not in (_GET, _HEAD) or exchange.has_body:
            self._forward(exchange, rkey)
            return
        request = parse_request(method, headers)
        entry = self._lookup(rkey.key, headers)
        if entry is None:
            self._not_stored(exchange, rkey, request, headers)
            return
        body = self.store.memory.read_body(rkey.key, entry.secondary_key)
        if body is None:
            self._spawn(self._serve_from_disk(exchange, rkey, request, headers, entry))
            return
        self._serve(exchange, rkey, request, headers, entry, body)
        # which requests the fast path may answer is checked when it answers (`_plain`)
        if get and entry.status == 200 and not entry.secondary_key:
            self._remember_fast_hit(raw_target, rkey.key, entry)

    def _remember_fast_hit(
        self,
        raw_target: tuple[bytes | None, bytes],
        primary: bytes,
        entry: CachedResponse,
    ) -> None:
        found = self.store.memory.only_variant(primary)
        if found is None or entry.response.cache_control.no_cache:
            return
        if len(self._fast_hits) >= FAST_HITS_MAX:
            self._fast_hits.clear()
        handle, body = found
        self._fast_hits[raw_target] = FastHit(primary, handle, entry, _full_fields(entry, ()), body)

    def _segment_dropped(self, segment: int) -> None:
        """Forget fast hits whose body view is in a segment the memory tier dropped (their
        handles no longer match anyway): the views would keep its memory alive."""
        fast_hits = self._fast_hits
        for raw_target in [
            target for target, fast in fast_hits.items() if segment_of(fast.handle) <= segment
        ]:
            del fast_hits[raw_target]

    def _answer_fast(
        self, exchange: Exchange, raw_target: tuple[bytes | None, bytes], fast: FastHit
    ) -> bool:
        """Answer a plain GET from `fast` while it is current and fresh; else forget it."""
        entry = fast.entry
        age = current_age(entry.initial_age, entry.response_time, time.time())
        if age >= entry.freshness_lifetime or not self.store.memory.hit_if_current(
            fast.primary, fast.handle
        ):
            del self._fast_hits[raw_target]
            return False
        body = fast.body
        self.stats.answered(HIT, len(body))
        headers = [*fast.headers, (b"age", b"%d" % age), (b"x-cache", HIT), (b"via", self.via)]
        exchange.respond_composed(200, headers, body)  # type: ignore[arg-type]
        return True

    def _not_stored(
        self, exchange: Exchange, rkey: RequestKey, request: RequestHead, headers: list[Header]
    ) -> None:
        if request.cache_control.only_if_cached:
            exchange.respond(504, b"504 Gateway Timeout: not cached (only-if-cached)\n")
            return
        self._spawn(self._miss(exchange, rkey, request, headers))

    async def _serve_from_disk(
        self,
        exchange: Exchange,
        rkey: RequestKey,
        request: RequestHead,
        headers: list[Header],
        entry: CachedResponse,
    ) -> None:
        body = await self.store.body(rkey.key, entry.secondary_key)
        if body is None:  # evicted or purged since the lookup
            self._not_stored(exchange, rkey, request, headers)
            return
        self._serve(exchange, rkey, request, headers, entry, body)

    def _serve(
        self,
        exchange: Exchange,
        rkey: RequestKey,
        request: RequestHead,
        headers: list[Header],
        entry: CachedResponse,
        body: Body,
    ) -> None:
        """Answer from a stored response, or revalidate it, as its freshness allows."""
        decision = decide_reuse(
            entry, request.cache_control, time.time(), error_grace=self.error_grace_s
        )
        reuse = decision.reuse
        if reuse is Reuse.FRESH:
            self._answer(exchange, request, entry, body, decision.age, HIT)
        elif reuse is Reuse.STALE_ALLOWED or reuse is Reuse.STALE_WHILE_REVALIDATE:
            if reuse is Reuse.STALE_WHILE_REVALIDATE and rkey.key not in self._refreshing:
                self._refreshing.add(rkey.key)
                stored = StoredObject(entry, _in_memory(body))
                self._spawn(self._refresh_in_background(rkey, headers, stored))
            self._answer(exchange, request, entry, body, decision.age, STALE)
        elif reuse is Reuse.GATEWAY_TIMEOUT:
            _release(body)
            exchange.respond(504, b"504 Gateway Timeout: stale (only-if-cached)\n")
        else:
            _release(body)
            stored = StoredObject(entry, _in_memory(body))
            self._spawn(self._revalidate(exchange, rkey, request, headers, stored, decision))

    # -- answering from the cache ---------------------------------------------------------

    def _lookup(self, key: bytes, headers: Sequence[Header]) -> CachedResponse | None:
        variants = self.store.variants(key)
        if not variants:
            return None
        return select_variant(variants, headers)

    async def _open(self, key: bytes, stored: StoredObject) -> Body | None:
        """The body of `stored`: its bytes, or the disk body opened; None if it is gone."""
        if stored.body is not None:
            return stored.body
        return await self.store.body(key, stored.entry.secondary_key)

    async def _load(
        self, key: bytes, headers: Sequence[Header]
    ) -> tuple[CachedResponse, Body] | None:
        entry = self._lookup(key, headers)
        if entry is None:
            return None
        body = await self.store.body(key, entry.secondary_key)
        return None if body is None else (entry, body)

    def _answer(
        self,
        exchange: Exchange,
        request: RequestHead,
        entry: CachedResponse,
        body: Body,
        age: int,
        x_cache: bytes,
        extra: Sequence[Header] = (),
    ) -> None:
        """Answer from a stored response: 304, 200, 206 or 416 as the request asks. A disk
        body leaves through sendfile (and is closed once sent); it is owned from here."""
        conditional = evaluate_conditional(request, entry)
        if conditional is Conditional.FORWARD:
            _release(body)
            self._forward(exchange, None)
            return
        tail = [(b"age", b"%d" % age), (b"x-cache", x_cache), (b"via", self.via), *extra]
        if conditional is Conditional.NOT_MODIFIED:
            _release(body)
            self.stats.answered(x_cache, 0)
            exchange.respond_composed(304, [*not_modified_fields(entry), *tail], b"")
            return
        length = body.length if isinstance(body, DiskBody) else len(body)
        plan = plan_range(request, entry, length)
        if plan.outcome is RangeOutcome.UNSATISFIABLE:
            _release(body)
            self.stats.answered(x_cache, 0)
            headers = [(b"content-range", unsatisfied_content_range(length)), *tail]
            exchange.respond_composed(416, headers, b"")
            return
        if plan.outcome is RangeOutcome.PARTIAL and len(plan.ranges) > 1:
            layout = multipart_layout(
                plan.ranges, length, first_header(entry.headers, b"content-type"), new_boundary()
            )
            headers = [(n, v) for n, v in entry.headers if n != b"content-type"]
            headers += [(b"content-type", layout.content_type), *tail]
            if not isinstance(body, DiskBody):
                pieces = [body[part.first : part.last + 1] for part in layout.parts]
                self._answer_multipart(exchange, request, headers, layout, pieces, x_cache)
                return
            if sum(p.last - p.first + 1 for p in layout.parts) <= MULTIPART_READ_LIMIT:
                self._spawn(
                    self._answer_multipart_from_disk(
                        exchange, request, headers, layout, body, x_cache
                    )
                )
                return
            plan = _WHOLE  # too much to read for one multipart answer: send it all
        if plan.outcome is RangeOutcome.FULL:
            status, headers, first, count = entry.status, _full_fields(entry, tail), 0, length
        else:
            first, last = plan.ranges[0]
            status, count = 206, last - first + 1
            headers = [*entry.headers, (b"content-range", content_range(first, last, length))]
            headers += tail
        self.stats.answered(x_cache, 0 if request.method == _HEAD else count)
        if not isinstance(body, DiskBody):
            payload = body if count == length else body[first : first + count]
            _respond(exchange, status, headers, payload)
            return
        stats = self.stats
        disk_body = body

        def sent(sent_bytes: int) -> None:
            disk_body.close()
            stats.sendfile_bytes += sent_bytes

        exchange.respond_file(status, headers, body.file.fileno(), body.offset + first, count, sent)

    def _answer_multipart(
        self,
        exchange: Exchange,
        request: RequestHead,
        headers: list[Header],
        layout: MultipartLayout,
        pieces: Sequence[InMemory],
        x_cache: bytes,
    ) -> None:
        body: list[InMemory] = []
        for part, piece in zip(layout.parts, pieces, strict=True):
            body += (part.head, piece)
        body.append(layout.tail)
        payload = b"".join(body)
        self.stats.answered(x_cache, 0 if request.method == _HEAD else len(payload))
        exchange.respond_composed(206, headers, payload)

    async def _answer_multipart_from_disk(
        self,
        exchange: Exchange,
        request: RequestHead,
        headers: list[Header],
        layout: MultipartLayout,
        body: DiskBody,
        x_cache: bytes,
    ) -> None:
        try:
            pieces = await asyncio.to_thread(_read_parts, body, layout.parts)
        except OSError as exc:
            log.warning("cannot read a stored body", extra={"error": str(exc)})
            exchange.respond(502, b"502 Bad Gateway: stored object unreadable\n")
            return
        finally:
            body.close()
        self._answer_multipart(exchange, request, headers, layout, pieces, x_cache)

    # -- the origin -------------------------------------------------------------------------

    async def _fetch(self, rkey: RequestKey, headers: Sequence[Header]) -> OriginResponse:
        """A GET to the origin; a body over the stream threshold is left unread (close the
        response)."""
        self.stats.origin_fetches += 1
        started = time.perf_counter()
        try:
            return await self.origin.fetch(
                _GET,
                rkey.host,
                rkey.target,
                [*headers, (b"via", self.via)],
                whole_up_to=self.stream_threshold_bytes,
            )
        except OriginError as exc:
            self.stats.origin_errors += 1
            log.warning(
                "origin fetch failed", extra={"uri": rkey.uri.decode("latin-1"), "error": str(exc)}
            )
            raise
        finally:
            self.stats.origin_seconds += time.perf_counter() - started

    def _new_entry(
        self, headers: Sequence[Header], response: OriginResponse
    ) -> CachedResponse | None:
        """The entry to store for an origin response; None if RFC 9111 forbids storing."""
        fill = parse_request(_GET, headers)
        head = parse_response(response.status, response.headers)
        decision = storage_decision(fill, head)
        if not decision.store:
            return None
        return CachedResponse.from_origin(
            fill,
            head,
            decision,
            request_time=response.request_time,
            response_time=response.response_time,
        )

    async def _drop(self, rkey: RequestKey, superseded: CachedResponse | None) -> None:
        """An unstorable response replaced `superseded`: it must not be served again
        without asking."""
        if superseded is not None:
            await self.store.replace(rkey.key, superseded.invalidate())

    async def _store(
        self,
        rkey: RequestKey,
        headers: Sequence[Header],
        response: OriginResponse,
        superseded: CachedResponse | None,
    ) -> StoredObject | None:
        """Store a complete origin response if RFC 9111 allows; drop the entry it supersedes."""
        entry = self._new_entry(headers, response)
        if entry is None:
            await self._drop(rkey, superseded)
            return None
        body = response.body
        if len(body) <= self.store.small_object_bytes:
            await self.store.put(rkey.key, entry, body)
        else:
            writer = await self._begin_disk(rkey.key, entry, len(body))
            for offset in range(0, len(body), DISK_CHUNK_BYTES):
                if writer is None:
                    break
                writer = await self._disk_write(
                    rkey.key, writer, body[offset : offset + DISK_CHUNK_BYTES]
                )
            if writer is not None:
                await self._commit(rkey.key, writer, entry)
        return StoredObject(entry, body)

    async def _begin_disk(
        self, key: bytes, entry: CachedResponse, length: int | None
    ) -> BodyWriter | None:
        """A streaming writer for a large body; None if the disk tier cannot take it."""
        if length is not None and length > self.store.disk.max_bytes:
            return None
        try:
            return await self.store.begin(key, entry.secondary_key)
        except OSError as exc:
            log.warning(
                "cannot store on disk", extra={"key": key.decode("latin-1"), "error": str(exc)}
            )
            return None

    async def _disk_write(self, key: bytes, writer: BodyWriter, data: bytes) -> BodyWriter | None:
        """Write one piece; a failed write discards the object (None: stop writing)."""
        try:
            await writer.write(data)
            return writer
        except (OSError, ObjectTooLarge) as exc:
            log.warning(
                "cannot store on disk", extra={"key": key.decode("latin-1"), "error": str(exc)}
            )
            await writer.abort()
            return None
        except BaseException:
            await asyncio.shield(writer.abort())
            raise

    async def _commit(self, key: bytes, writer: BodyWriter, entry: CachedResponse) -> bool:
        """Publish a written body; whether it was stored."""
        try:
            await writer.commit(entry)
            return True
        except OSError as exc:
            log.warning(
                "cannot store on disk", extra={"key": key.decode("latin-1"), "error": str(exc)}
            )
            await writer.abort()
            return False
        except BaseException:
            await asyncio.shield(writer.abort())
            raise

    async def _use_response(
        self,
        exchange: Exchange,
        rkey: RequestKey,
        request: RequestHead,
        headers: Sequence[Header],
        response: OriginResponse,
        superseded: CachedResponse | None,
    ) -> None:
        if not response.complete:
            await self._stream(exchange, rkey, request, headers, response, superseded)
            return
        stored = await self._store(rkey, headers, response, superseded)
        if stored is None:
            passed = [*_passed_on(response.headers), (b"x-cache", PASS), (b"via", self.via)]
            self.stats.answered(PASS, 0 if request.method == _HEAD else len(response.body))
            exchange.respond_composed(response.status, passed, response.body)
            return
        cookies = [(n, v) for n, v in response.headers if n in SET_COOKIE_FIELDS]
        entry = stored.entry
        age = int(current_age(entry.initial_age, entry.response_time, time.time()))
        self._answer(exchange, request, entry, response.body, age, MISS, cookies)

    async def _stream(
        self,
        exchange: Exchange | None,
        rkey: RequestKey,
        request: RequestHead | None,
        headers: Sequence[Header],
        response: OriginResponse,
        superseded: CachedResponse | None,
    ) -> None:
        """A large origin response: read in pieces, written to the disk tier and, when the
        client wants the plain representation, to the client as they arrive.

        A client that asked for a range or sent a precondition waits for the object to be
        stored and is answered from it. A client that leaves does not stop the fill. An
        origin that fails mid-body leaves nothing stored and the client's response cut."""
        self.stats.streamed_fills += 1
        entry = self._new_entry(headers, response)
        writer: BodyWriter | None = None
        if entry is None:
            await self._drop(rkey, superseded)
        else:
            writer = await self._begin_disk(rkey.key, entry, response.length)
            if writer is None:  # storable, but not by this disk tier: pass it on
                entry = None
        stream: ResponseStream | None = None
        x_cache = PASS if entry is None else MISS
        if exchange is not None and request is not None:
            if entry is None:
                passed = [*_passed_on(response.headers), (b"x-cache", PASS), (b"via", self.via)]
                stream = exchange.respond_stream(response.status, passed, response.length)
            elif self._plain(request, entry, response.length):
                cookies = [(n, v) for n, v in response.headers if n in SET_COOKIE_FIELDS]
                tail = [(b"age", b"%d" % self._age(entry)), (b"x-cache", MISS), (b"via", self.via)]
                stream = exchange.respond_stream(
                    entry.status, _full_fields(entry, [*tail, *cookies]), response.length
                )
        stored = await self._pump(rkey.key, response, stream, writer, entry)
        if stream is not None:
            self.stats.answered(x_cache, stream.written)
            return
        if exchange is None or request is None:
            return
        # the client asked for a part or a precondition: answer from the stored object
        found = await self.store.body(rkey.key, entry.secondary_key) if stored and entry else None
        if found is None or entry is None:
            exchange.respond(502, b"502 Bad Gateway: the response could not be stored\n")
            return
        cookies = [(n, v) for n, v in response.headers if n in SET_COOKIE_FIELDS]
        self._answer(exchange, request, entry, found, self._age(entry), MISS, cookies)

    async def _pump(
        self,
        key: bytes,
        response: OriginResponse,
        stream: ResponseStream | None,
        writer: BodyWriter | None,
        entry: CachedResponse | None,
    ) -> bool:
        """Move an unfinished body from the origin to the stream and the writer; whether
        the object was stored. OriginError when the body is cut short (the object is
        discarded and the stream aborted)."""
        pending: list[bytes] = []
        pending_size = 0
        data = response.body
        try:
            while True:
                if data:
                    if stream is not None:
                        stream.write(data)
                    if writer is not None:
                        pending.append(data)
                        pending_size += len(data)
                        if pending_size >= DISK_CHUNK_BYTES:
                            writer = await self._disk_write(key, writer, b"".join(pending))
                            pending.clear()
                            pending_size = 0
                    if stream is not None:
                        await stream.drain()
                data = await response.read_chunk()
                if not data:
                    break
            if writer is not None and pending:
                writer = await self._disk_write(key, writer, b"".join(pending))
        except BaseException:
            if writer is not None:
                await asyncio.shield(writer.abort())
            if stream is not None:
                stream.abort()
            raise
        finally:
            response.close()
        try:
            # commit before the exchange ends, so the client's next request on this
            # connection finds the object stored
            return (
                writer is not None and entry is not None and await self._commit(key, writer, entry)
            )
        finally:
            if stream is not None:
                stream.finish()

    @staticmethod
    def _plain(request: RequestHead, entry: CachedResponse, length: int | None) -> bool:
        """Whether the answer to `request` from `entry` is the whole representation."""
        if evaluate_conditional(request, entry) is not Conditional.FULL:
            return False
        if request.range is None:
            return True
        return (
            length is not None and plan_range(request, entry, length).outcome is RangeOutcome.FULL
        )

    @staticmethod
    def _age(entry: CachedResponse) -> int:
        return int(current_age(entry.initial_age, entry.response_time, time.time()))

    async def _miss(
        self, exchange: Exchange, rkey: RequestKey, request: RequestHead, headers: list[Header]
    ) -> None:
        flight = self._flights.get(rkey.key)
        if flight is None:
            await self._fill(exchange, rkey, request, headers, coalesce=True)
            return
        self.stats.coalesced_waiters += 1
        try:
            await asyncio.shield(flight)
        except OriginError:
            exchange.respond(502, b"502 Bad Gateway: origin unreachable\n")
            return
        loaded = await self._load(rkey.key, headers)
        if loaded is not None:
            entry, body = loaded
            decision = decide_reuse(entry, request.cache_control, time.time())
            if decision.reuse in _SERVE_NOW:
                self._answer(exchange, request, entry, body, decision.age, MISS)
                return
            _release(body)
        await self._fill(exchange, rkey, request, headers, coalesce=False)

    async def _fill(
        self,
        exchange: Exchange,
        rkey: RequestKey,
        request: RequestHead,
        headers: list[Header],
        *,
        coalesce: bool,
    ) -> None:
        flight: asyncio.Future[None] | None = None
        if coalesce:
            flight = self._flights[rkey.key] = asyncio.get_running_loop().create_future()
        try:
            response = await self._fetch(rkey, origin_request_fields(headers))
            async with response:
                await self._use_response(exchange, rkey, request, headers, response, None)
        except OriginError as exc:
            if flight is not None:
                flight.set_exception(exc)
                flight.exception()  # retrieved: waiters may be none
            exchange.respond(502, b"502 Bad Gateway: origin unreachable\n")
        finally:
            if flight is not None:
                if not flight.done():
                    flight.set_result(None)
                del self._flights[rkey.key]

    async def _validate(
        self, rkey: RequestKey, headers: list[Header], stored: StoredObject, on_error: bool
    ) -> tuple[Revalidation, OriginResponse | None, StoredObject | None]:
        """Send a conditional request for `stored`; apply a 304 to the store. The third
        value is the freshened object for NOT_MODIFIED (None: the 304 selected nothing).
        A returned response may be unfinished: the caller closes it."""
        mine = stored.entry.secondary_key
        variants = self.store.variants(rkey.key)
        others = [e for e in variants if e.secondary_key != mine]
        try:
            response = await self._fetch(rkey, origin_request_fields(headers, stored.entry, others))
        except OriginError:
            return revalidation_outcome(None, on_error), None, None
        outcome = revalidation_outcome(response.status, on_error)
        if outcome is not Revalidation.NOT_MODIFIED:
            return outcome, response, None
        not_modified = parse_response(304, response.headers)
        chosen: CachedResponse | None = None
        for entry in select_for_update(not_modified, variants):
            fresh = freshen(
                entry,
                not_modified,
                request_time=response.request_time,
                response_time=response.response_time,
            )
            replaced = await self.store.replace(rkey.key, fresh)
            if replaced and (chosen is None or entry.secondary_key == mine):
                chosen = fresh
        if chosen is None:
            return outcome, response, None
        if chosen.secondary_key == mine:
            return outcome, response, StoredObject(chosen, stored.body)
        return (
            outcome,
            response,
            StoredObject(chosen, self.store.memory.read_body(rkey.key, chosen.secondary_key)),
        )

    async def _revalidate(
        self,
        exchange: Exchange,
        rkey: RequestKey,
        request: RequestHead,
        headers: list[Header],
        stored: StoredObject,
        decision: ReuseDecision,
    ) -> None:
        outcome, response, fresh = await self._validate(
            rkey, headers, stored, decision.serve_stale_on_error
        )
        try:
            await self._after_validation(
                exchange, rkey, request, headers, stored, outcome, response, fresh
            )
        except OriginError:  # a new body cut short (a streamed client was cut already)
            exchange.respond(502, b"502 Bad Gateway: origin unreachable\n")
        finally:
            if response is not None:
                response.close()

    async def _after_validation(
        self,
        exchange: Exchange,
        rkey: RequestKey,
        request: RequestHead,
        headers: list[Header],
        stored: StoredObject,
        outcome: Revalidation,
        response: OriginResponse | None,
        fresh: StoredObject | None,
    ) -> None:
        if outcome is Revalidation.NOT_MODIFIED:
            assert response is not None
            body = None if fresh is None else await self._open(rkey.key, fresh)
            if fresh is None or body is None:
                # the 304 matched nothing stored (or it went since): ask again, unconditionally
                await self._fill(exchange, rkey, request, headers, coalesce=False)
                return
            cookies = [(n, v) for n, v in response.headers if n in SET_COOKIE_FIELDS]
            self._answer(
                exchange, request, fresh.entry, body, self._age(fresh.entry), REVALIDATED, cookies
            )
        elif outcome is Revalidation.USE_RESPONSE:
            assert response is not None
            await self._use_response(exchange, rkey, request, headers, response, stored.entry)
        elif outcome is Revalidation.SERVE_STALE:
            body = await self._open(rkey.key, stored)
            if body is None:
                exchange.respond(504, b"504 Gateway Timeout: origin unreachable\n")
                return
            self._answer(exchange, request, stored.entry, body, self._age(stored.entry), STALE)
        else:
            exchange.respond(504, b"504 Gateway Timeout: origin unreachable\n")

    async def _refresh_in_background(
        self, rkey: RequestKey, headers: list[Header], stored: StoredObject
    ) -> None:
        """stale-while-revalidate: update the entry while clients get the stale one."""
        response: OriginResponse | None = None
        try:
            outcome, response, _ = await self._validate(rkey, headers, stored, True)
            if outcome is Revalidation.USE_RESPONSE and response is not None:
                if response.complete:
                    await self._store(rkey, headers, response, stored.entry)
                else:
                    await self._stream(None, rkey, None, headers, response, stored.entry)
        except OriginError:
            pass  # the body was cut short: nothing was stored, the stale entry stays
        finally:
            if response is not None:
                response.close()
            self._refreshing.discard(rkey.key)

    # -- passing through --------------------------------------------------------------------

    def _forward(self, exchange: Exchange, rkey: RequestKey | None) -> None:
        """Stream the request to the origin through the proxy core; with `rkey`, invalidate
        what an unsafe method changed once the response head arrives."""
        method = exchange.method
        via_lines = b"\r\nx-cache: PASS\r\nvia: " + self.via

        def on_head(status: int, block: bytes) -> bytes:
            if rkey is not None:
                for uri in invalidation_uris(method, status, rkey, _block_fields(block)):
                    self._spawn(self._invalidate(uri))
                    self.stats.invalidations += 1
            self.stats.answered(PASS, 0)
            return block + via_lines

        exchange.response_head_hook = on_head
        exchange.forward(self.picker)

    async def _invalidate(self, uri: bytes) -> None:
        """Mark every variant of `uri` as needing validation (RFC 9111 §4.4)."""
        await self.store.purge(uri, soft=True)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("edge task failed", exc_info=task.exception())


# -- the server ---------------------------------------------------------------------------------


#: Disk tier budget when none is given.
DEFAULT_DISK_BYTES = 1 << 30


class EdgeServer:
    """One edge: a listener, its store, the origin client; start it, stop it.

    `max_bytes` bounds the memory tier, `disk_bytes` the disk tier under `cache_dir`; with
    no `cache_dir` the disk tier lives in a temporary directory removed by `stop`. Origin
    bodies over `stream_threshold_bytes` are streamed rather than read whole."""

    store: TieredStore

    def __init__(
        self,
        origin: str,
        listen: tuple[str, int],
        max_bytes: int,
        name: str = "edge",
        settings: ProxySettings | None = None,
        *,
        cache_dir: Path | None = None,
        disk_bytes: int = DEFAULT_DISK_BYTES,
        stream_threshold_bytes: int = DEFAULT_STREAM_THRESHOLD_BYTES,
    ) -> None:
        parse_origin(origin)  # a bad origin fails here, before anything starts
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if disk_bytes <= 0:
            raise ValueError("disk_bytes must be positive")
        if stream_threshold_bytes <= 0:
            raise ValueError("stream_threshold_bytes must be positive")
        self.stream_threshold_bytes = stream_threshold_bytes
        self.origin_url = origin
        self.listen = listen
        self.name = name
        self.settings = settings or ProxySettings(via=b"1.1 " + name.encode("ascii", "replace"))
        self.max_bytes = max_bytes
        self.disk_bytes = disk_bytes
        self.cache_dir = cache_dir
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self.stats = EdgeStats()
        self.proxy_stats = ProxyStats()
        self.proxy: ProxyServer | None = None
        self._origin: OriginClient | None = None
        self._pool: UpstreamPool | None = None
        self.handler: EdgeHandler | None = None

    @property
    def port(self) -> int:
        assert self.proxy is not None
        return self.proxy.port

    async def start(self, deadlines: Deadlines | None = None) -> None:
        loop = asyncio.get_running_loop()
        settings = self.settings
        self.deadlines = deadlines or Deadlines(loop, settings.timer_resolution_s)
        self._own_deadlines = deadlines is None
        cache_dir = self.cache_dir
        if cache_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix=f"millions-{self.name}-")
            cache_dir = Path(self._temp_dir.name)
        self.store = await TieredStore.open(
            cache_dir, memory_bytes=self.max_bytes, disk_bytes=self.disk_bytes
        )
        host, port = parse_origin(self.origin_url)
        self._pool = UpstreamPool(f"{host}:{port}", settings, self.deadlines, loop)
        self._origin = OriginClient(
            self.origin_url,
            connect_timeout_s=settings.connect_timeout_s,
            response_timeout_s=settings.response_timeout_s,
        )
        self.handler = EdgeHandler(
            self.store,
            self._origin,
            SingleUpstream(self._pool),
            self.stats,
            self.name,
            stream_threshold_bytes=self.stream_threshold_bytes,
        )
        self.proxy = ProxyServer(self.handler, settings, self.proxy_stats, self.deadlines, loop)
        await self.proxy.start(*self.listen)
        log.info(
            "edge listening",
            extra={"listen": f"{self.listen[0]}:{self.proxy.port}", "origin": self.origin_url},
        )

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, let requests in flight finish within `grace_s`, close all."""
        if self.proxy is not None:
            await self.proxy.shutdown(grace_s)
        if self.handler is not None:
            tasks = list(self.handler.tasks)
            if tasks:  # fills still writing to the store get the grace period too
                _, unfinished = await asyncio.wait(tasks, timeout=grace_s)
                for task in unfinished:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        if self._pool is not None:
            self._pool.close()
        if self._origin is not None:
            await self._origin.close()
        if self._own_deadlines:
            self.deadlines.stop()
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
            self._temp_dir = None
        log.info("edge stopped")
