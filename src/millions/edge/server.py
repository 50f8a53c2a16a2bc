"""The CDN edge: a caching reverse proxy in front of one origin, on the proxy core.

`EdgeHandler.handle` follows the call sequence in `millions.edge`'s docstring: hits are
answered synchronously inside the proxy's callback (no task per hit); misses and
revalidations run as tasks that fetch whole responses through `OriginClient`, store them
and answer. Unsafe methods (and requests the edge must not answer, such as If-Match) are
streamed to the origin by the proxy core itself; their response head passes through a hook
that invalidates the affected URIs.

Concurrent misses for one primary key make one origin request (`_flights`): the first
request fetches; the others wait for it, then look the key up again. When the response
was stored they are answered from it; when it was not (private, no-store, another
variant), each fetches on its own, because an unstored response may not be shared. When
the fetch fails, every waiter gets the error (502).

Objects live in a `TieredStore` (memory LRU over a restart-safe disk tier). A hit whose
body is in memory is still answered synchronously; a body only on disk is read in a worker
thread by a task, then answered. The proxy core answers local responses from bytes
(`Exchange.respond_composed`), so disk hits are read rather than sent with
`loop.sendfile`. The origin client reads whole bodies (coalesced waiters share them), so a
large body reaches the disk tier through the store's streaming writer in
`DISK_CHUNK_BYTES` pieces once it has arrived, and small ones through `put`.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from millions.edge.entry import CachedResponse
from millions.edge.freshness import Reuse, ReuseDecision, current_age, decide_reuse
from millions.edge.headers import HOP_BY_HOP, SET_COOKIE_FIELDS, Header, connection_listed
from millions.edge.headers import first_value as first_header
from millions.edge.invalidation import invalidation_uris
from millions.edge.keys import UNKEYED_OVERRIDE_FIELDS, CacheKeyError, RequestKey, request_key
from millions.edge.messages import RequestHead, parse_request, parse_response
from millions.edge.origin import OriginClient, OriginError, OriginResponse, parse_origin
from millions.edge.ranges import (
    RangeOutcome,
    content_range,
    multipart_layout,
    new_boundary,
    plan_range,
    unsatisfied_content_range,
)
from millions.edge.storability import storage_decision
from millions.edge.storage import DiskBody, ObjectTooLarge, TieredStore
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


# -- storage --------------------------------------------------------------------------------

#: Bodies larger than the store's small-object size are written to disk in pieces this big.
DISK_CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A stored response's metadata and its whole body, as the handler answers from it."""

    entry: CachedResponse
    body: bytes


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
        if name in UNKEYED_OVERRIDE_FIELDS:
            dropped = True
            continue
        headers.append((name, lines[index + 2]))
        kept += lines[index : index + 4]
    if dropped:
        exchange.head_lines = kept
    return headers


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


class EdgeHandler:
    """The proxy core's `RequestHandler` for an edge: cache, coalesce, forward."""

    def __init__(
        self,
        store: TieredStore,
        origin: OriginClient,
        picker: SingleUpstream,
        stats: EdgeStats,
        name: str,
        *,
        error_grace_s: float = 0.0,
    ) -> None:
        self.store = store
        self.origin = origin
        self.picker = picker
        self.stats = stats
        self.via = b"1.1 " + name.encode("ascii", "replace")
        self.error_grace_s = error_grace_s
        self._flights: dict[bytes, asyncio.Future[None]] = {}
        self._refreshing: set[bytes] = set()
        self.tasks: set[asyncio.Task[None]] = set()

    def handle(self, exchange: Exchange) -> None:
        method = exchange.method
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
        self._serve(exchange, rkey, request, headers, StoredObject(entry, body))

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
        body = await self._body(rkey.key, entry)
        if body is None:  # evicted or purged since the lookup
            self._not_stored(exchange, rkey, request, headers)
            return
        self._serve(exchange, rkey, request, headers, StoredObject(entry, body))

    def _serve(
        self,
        exchange: Exchange,
        rkey: RequestKey,
        request: RequestHead,
        headers: list[Header],
        stored: StoredObject,
    ) -> None:
        """Answer from `stored`, or revalidate it, as its freshness allows."""
        decision = decide_reuse(
            stored.entry, request.cache_control, time.time(), error_grace=self.error_grace_s
        )
        reuse = decision.reuse
        if reuse is Reuse.FRESH:
            self._answer(exchange, request, stored, decision.age, HIT)
        elif reuse is Reuse.STALE_ALLOWED or reuse is Reuse.STALE_WHILE_REVALIDATE:
            if reuse is Reuse.STALE_WHILE_REVALIDATE and rkey.key not in self._refreshing:
                self._refreshing.add(rkey.key)
                self._spawn(self._refresh_in_background(rkey, headers, stored))
            self._answer(exchange, request, stored, decision.age, STALE)
        elif reuse is Reuse.GATEWAY_TIMEOUT:
            exchange.respond(504, b"504 Gateway Timeout: stale (only-if-cached)\n")
        else:
            self._spawn(self._revalidate(exchange, rkey, request, headers, stored, decision))

    # -- answering from the cache ---------------------------------------------------------

    def _lookup(self, key: bytes, headers: Sequence[Header]) -> CachedResponse | None:
        variants = self.store.variants(key)
        if not variants:
            return None
        return select_variant(variants, headers)

    async def _body(self, key: bytes, entry: CachedResponse) -> bytes | None:
        """The stored body of `entry` from either tier; None if it is gone."""
        body = await self.store.body(key, entry.secondary_key)
        if isinstance(body, DiskBody):
            with body:
                return await asyncio.to_thread(body.read_all)
        return body

    async def _load(self, key: bytes, headers: Sequence[Header]) -> StoredObject | None:
        entry = self._lookup(key, headers)
        if entry is None:
            return None
        body = await self._body(key, entry)
        return None if body is None else StoredObject(entry, body)

    def _answer(
        self,
        exchange: Exchange,
        request: RequestHead,
        stored: StoredObject,
        age: int,
        x_cache: bytes,
        extra: Sequence[Header] = (),
    ) -> None:
        """Answer from a stored response: 304, 200, 206 or 416 as the request asks."""
        entry = stored.entry
        conditional = evaluate_conditional(request, entry)
        if conditional is Conditional.FORWARD:
            self._forward(exchange, None)
            return
        tail = [(b"age", b"%d" % age), (b"x-cache", x_cache), (b"via", self.via), *extra]
        if conditional is Conditional.NOT_MODIFIED:
            self.stats.answered(x_cache, 0)
            exchange.respond_composed(304, [*not_modified_fields(entry), *tail], b"")
            return
        body = stored.body
        length = len(body)
        plan = plan_range(request, entry, length)
        if plan.outcome is RangeOutcome.FULL:
            headers = [*entry.headers, *tail]
            if entry.status == 200 and first_header(entry.headers, b"accept-ranges") is None:
                headers.append((b"accept-ranges", b"bytes"))
            status, payload = entry.status, body
        elif plan.outcome is RangeOutcome.UNSATISFIABLE:
            headers = [(b"content-range", unsatisfied_content_range(length)), *tail]
            status, payload = 416, b""
        elif len(plan.ranges) == 1:
            first, last = plan.ranges[0]
            headers = [*entry.headers, (b"content-range", content_range(first, last, length))]
            headers += tail
            status, payload = 206, body[first : last + 1]
        else:
            layout = multipart_layout(
                plan.ranges, length, first_header(entry.headers, b"content-type"), new_boundary()
            )
            headers = [(n, v) for n, v in entry.headers if n != b"content-type"]
            headers += [(b"content-type", layout.content_type), *tail]
            pieces: list[bytes] = []
            for part in layout.parts:
                pieces += (part.head, body[part.first : part.last + 1])
            pieces.append(layout.tail)
            status, payload = 206, b"".join(pieces)
        self.stats.answered(x_cache, 0 if request.method == _HEAD else len(payload))
        exchange.respond_composed(status, headers, payload)

    # -- the origin -------------------------------------------------------------------------

    async def _fetch(self, rkey: RequestKey, headers: Sequence[Header]) -> OriginResponse:
        self.stats.origin_fetches += 1
        started = time.perf_counter()
        try:
            return await self.origin.fetch(
                _GET, rkey.host, rkey.target, [*headers, (b"via", self.via)]
            )
        except OriginError as exc:
            self.stats.origin_errors += 1
            log.warning(
                "origin fetch failed", extra={"uri": rkey.uri.decode("latin-1"), "error": str(exc)}
            )
            raise
        finally:
            self.stats.origin_seconds += time.perf_counter() - started

    async def _store(
        self,
        rkey: RequestKey,
        headers: Sequence[Header],
        response: OriginResponse,
        superseded: CachedResponse | None,
    ) -> StoredObject | None:
        """Store an origin response if RFC 9111 allows; drop the entry it supersedes."""
        fill = parse_request(_GET, headers)
        head = parse_response(response.status, response.headers)
        decision = storage_decision(fill, head)
        if not decision.store:
            if superseded is not None:  # it must not be served again without asking
                await self.store.replace(rkey.key, superseded.invalidate())
            return None
        entry = CachedResponse.from_origin(
            fill,
            head,
            decision,
            request_time=response.request_time,
            response_time=response.response_time,
        )
        body = response.body
        if len(body) <= self.store.small_object_bytes:
            await self.store.put(rkey.key, entry, body)
        else:
            await self._write_to_disk(rkey.key, entry, body)
        return StoredObject(entry, body)

    async def _write_to_disk(self, key: bytes, entry: CachedResponse, body: bytes) -> None:
        """Stream a large body to the disk tier; a failed write leaves it uncached."""
        writer = await self.store.begin(key, entry.secondary_key)
        try:
            for offset in range(0, len(body), DISK_CHUNK_BYTES):
                await writer.write(body[offset : offset + DISK_CHUNK_BYTES])
            await writer.commit(entry)
        except (OSError, ObjectTooLarge):
            log.warning("cannot store on disk", extra={"key": key.decode("latin-1")})
            await writer.abort()
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
        stored = await self._store(rkey, headers, response, superseded)
        if stored is None:
            passed = [*_passed_on(response.headers), (b"x-cache", PASS), (b"via", self.via)]
            self.stats.answered(PASS, 0 if request.method == _HEAD else len(response.body))
            exchange.respond_composed(response.status, passed, response.body)
            return
        cookies = [(n, v) for n, v in response.headers if n in SET_COOKIE_FIELDS]
        age = int(current_age(stored.entry.initial_age, stored.entry.response_time, time.time()))
        self._answer(exchange, request, stored, age, MISS, cookies)

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
        stored = await self._load(rkey.key, headers)
        if stored is not None:
            decision = decide_reuse(stored.entry, request.cache_control, time.time())
            if decision.reuse in _SERVE_NOW:
                self._answer(exchange, request, stored, decision.age, MISS)
                return
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
        value is the freshened object for NOT_MODIFIED (None: the 304 selected nothing)."""
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
        body = await self._body(rkey.key, chosen)
        return outcome, response, None if body is None else StoredObject(chosen, body)

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
        if outcome is Revalidation.NOT_MODIFIED:
            assert response is not None
            if fresh is None:  # the 304 matched nothing stored: ask again, unconditionally
                await self._fill(exchange, rkey, request, headers, coalesce=False)
                return
            cookies = [(n, v) for n, v in response.headers if n in SET_COOKIE_FIELDS]
            age = int(current_age(fresh.entry.initial_age, fresh.entry.response_time, time.time()))
            self._answer(exchange, request, fresh, age, REVALIDATED, cookies)
        elif outcome is Revalidation.USE_RESPONSE:
            assert response is not None
            await self._use_response(exchange, rkey, request, headers, response, stored.entry)
        elif outcome is Revalidation.SERVE_STALE:
            age = int(
                current_age(stored.entry.initial_age, stored.entry.response_time, time.time())
            )
            self._answer(exchange, request, stored, age, STALE)
        else:
            exchange.respond(504, b"504 Gateway Timeout: origin unreachable\n")

    async def _refresh_in_background(
        self, rkey: RequestKey, headers: list[Header], stored: StoredObject
    ) -> None:
        """stale-while-revalidate: update the entry while clients get the stale one."""
        try:
            outcome, response, _ = await self._validate(rkey, headers, stored, True)
            if outcome is Revalidation.USE_RESPONSE and response is not None:
                await self._store(rkey, headers, response, stored.entry)
        finally:
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
    no `cache_dir` the disk tier lives in a temporary directory removed by `stop`."""

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
    ) -> None:
        parse_origin(origin)  # a bad origin fails here, before anything starts
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if disk_bytes <= 0:
            raise ValueError("disk_bytes must be positive")
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
            self.store, self._origin, SingleUpstream(self._pool), self.stats, self.name
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
            for task in tasks:
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
