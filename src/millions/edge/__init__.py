"""The CDN edge's caching decisions, without I/O (RFC 9111, RFC 9110, RFC 5861, RFC 9213).

Like hishel's `_spec` module or h11, this package only decides; the proxy server and the
storage tiers that call it do all reading, writing and waiting. Header blocks are
sequences of `(name, value)` bytes pairs with lower-case names, as a server on httptools
collects them. Times are seconds since the epoch (floats), passed in by the caller.

Modules, one question each:

- `cache_control`  Cache-Control and CDN-Cache-Control directives (RFC 9111 §5.2, 9213)
- `messages`       the cache-relevant facts of a request / response head, parsed once
- `keys`           primary cache key; hostile targets and hosts are refused
- `vary`           secondary keys and variant selection (§4.1)
- `storability`    may a response be stored, and without which fields (§3)
- `entry`          `CachedResponse`: a stored response's metadata
- `freshness`      lifetime, age, and the reuse decision (§4.2, RFC 5861)
- `validation`     conditional requests out, 304s in, 304s to clients (§4.3, 9110 §13)
- `invalidation`   URIs to invalidate after unsafe methods (§4.4)
- `ranges`         206 / 416 / multipart answers from stored responses (9110 §14)
- `surrogate_keys` Surrogate-Key / Cache-Tag groups for purging
- `dates`, `headers`, `structured_fields`: the shared syntax underneath

How a proxy uses it, per request (`now` from its clock; `storage` is the proxy's own):

    rkey = request_key(method, scheme, host, target)      # CacheKeyError -> 400
    request = parse_request(method, headers)
    # strip UNKEYED_OVERRIDE_FIELDS from headers; forward rkey.host / rkey.target
    if method not in (b"GET", b"HEAD"):                    # -- unsafe or other: pass
        status, resp_headers = <forward to origin>
        for uri in invalidation_uris(method, status, rkey, resp_headers):
            <mark every variant under key `uri` invalid: entry.invalidate()>
        return
    entry = select_variant(storage.variants(rkey.key), headers)
    if entry is None:                                      # -- miss
        if request.cache_control.only_if_cached: <answer 504>
        fill = parse_request(b"GET", headers)             # a HEAD miss fetches GET too
        fetch GET with origin_request_fields(headers); t0 = sent, t1 = head received
        response = parse_response(status, resp_headers)
        decision = storage_decision(fill, response)        # .reason: why not (logs)
        if decision.store:
            stored = CachedResponse.from_origin(fill, response, decision,
                                                request_time=t0, response_time=t1)
            <store stored + body once the body is complete>
            <answer from `stored` as below (so the client's conditionals and Range
             apply), X-Cache MISS>
        else: <forward the origin response, X-Cache PASS>
        return
    decision = decide_reuse(entry, request.cache_control, now)
    match decision.reuse:                                  # -- hit
        FRESH: answer from entry (below), X-Cache HIT
        STALE_ALLOWED / STALE_WHILE_REVALIDATE: answer from entry, X-Cache STALE; for
            STALE_WHILE_REVALIDATE also start one background revalidation (coalesced)
        GATEWAY_TIMEOUT: <answer 504>
        REVALIDATE:                                        # -- revalidation
            send origin_request_fields(headers, entry, other_variants) to the origin
            match revalidation_outcome(status or None, decision.serve_stale_on_error):
                NOT_MODIFIED: nm = parse_response(304, h)
                              for e in select_for_update(nm, variants):
                                  storage.replace(e, freshen(e, nm, request_time=t0,
                                                             response_time=t1))
                              (none selected: repeat the fetch without validators)
                              answer from the freshened entry, X-Cache REVALIDATED, plus
                              the 304's Set-Cookie lines for this client only
                USE_RESPONSE: handle it like a miss's origin response; if it is not
                              stored, drop the superseded entry
                SERVE_STALE:  answer from entry, X-Cache STALE
                FAIL:         <answer 504>

Answering from an entry: `evaluate_conditional(request, entry)` gives NOT_MODIFIED (send
304 with `not_modified_fields(entry)`), FORWARD (pass the request to the origin untouched)
or FULL; for FULL, `plan_range(request, entry, body_length)` gives 200 (entry.headers +
body), 206 (`content_range(...)`, or `multipart_layout(...)` for several ranges) or 416
(`unsatisfied_content_range(length)`). Every answer from an entry carries
`Age: decision.age`. HEAD gets the same head without a body. Purges work on keys, key
prefixes (`RequestKey.uri`) and `entry.surrogate_keys`; a soft purge stores
`entry.invalidate()`.
"""

from millions.edge.cache_control import (
    NO_DIRECTIVES,
    CacheControl,
    parse_cache_control,
    parse_targeted_cache_control,
)
from millions.edge.entry import CachedResponse
from millions.edge.freshness import Reuse, ReuseDecision, decide_reuse
from millions.edge.invalidation import invalidation_uris
from millions.edge.keys import UNKEYED_OVERRIDE_FIELDS, CacheKeyError, RequestKey, request_key
from millions.edge.messages import RequestHead, ResponseHead, parse_request, parse_response
from millions.edge.ranges import (
    RangeOutcome,
    RangePlan,
    content_range,
    multipart_layout,
    new_boundary,
    plan_range,
    unsatisfied_content_range,
)
from millions.edge.storability import StorageDecision, storage_decision
from millions.edge.surrogate_keys import SURROGATE_KEY_FIELDS, surrogate_keys
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
from millions.edge.vary import secondary_key, select_variant

__all__ = [
    "NO_DIRECTIVES",
    "SURROGATE_KEY_FIELDS",
    "UNKEYED_OVERRIDE_FIELDS",
    "CacheControl",
    "CacheKeyError",
    "CachedResponse",
    "Conditional",
    "RangeOutcome",
    "RangePlan",
    "RequestHead",
    "RequestKey",
    "ResponseHead",
    "Reuse",
    "ReuseDecision",
    "Revalidation",
    "StorageDecision",
    "content_range",
    "decide_reuse",
    "evaluate_conditional",
    "freshen",
    "invalidation_uris",
    "multipart_layout",
    "new_boundary",
    "not_modified_fields",
    "origin_request_fields",
    "parse_cache_control",
    "parse_request",
    "parse_response",
    "parse_targeted_cache_control",
    "plan_range",
    "request_key",
    "revalidation_outcome",
    "secondary_key",
    "select_for_update",
    "select_variant",
    "storage_decision",
    "surrogate_keys",
    "unsatisfied_content_range",
]
