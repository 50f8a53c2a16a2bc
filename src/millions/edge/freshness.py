"""Freshness, age and the reuse decision (RFC 9111 §4.2, §4.2.4, RFC 5861, RFC 8246).

`freshness_lifetime` and `corrected_initial_age` run once when a response is stored; a hit
then costs `decide_reuse`: one subtraction for the age and a few comparisons.

Choices where the RFCs leave room, all in the conservative direction for a shared cache:

- must-revalidate, proxy-revalidate and an unqualified no-cache forbid serving stale in any
  way, including on origin errors (§5.2.2.2, §5.2.2.8, §4.2.4).
- s-maxage implies proxy-revalidate (§5.2.2.10): a client's max-stale or stale-if-error
  and the edge's own `error_grace` cannot make such a response usable when stale, but the
  origin's own stale-while-revalidate / stale-if-error in the same response still apply,
  since the origin grants them explicitly.
- Request directives (§5.2.1) are honoured. A proxy that wants to ignore clients' cache
  directives, as Varnish and nginx do by default, passes NO_DIRECTIVES instead.
- immutable (RFC 8246): while fresh, request no-cache / max-age / min-fresh (a browser
  reload) do not force revalidation; once stale it is revalidated like anything else.
- An invalidated entry (§4.4, or a soft purge) is always revalidated before use, but may
  still be served on origin errors within its stale-if-error window.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from millions.edge.cache_control import DELTA_SECONDS_MAX, CacheControl
from millions.edge.messages import ResponseHead

if TYPE_CHECKING:
    from millions.edge.entry import CachedResponse

#: Status codes that are heuristically cacheable (RFC 9110 §15.1).
HEURISTIC_STATUSES = frozenset({200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501})
#: Heuristic lifetime: this fraction of the time since Last-Modified (RFC 9111 §4.2.2)...
HEURISTIC_FRACTION = 0.1
#: ...capped at one day, as Squid and Traffic Server cap it by default.
HEURISTIC_MAX_SECONDS = 86_400.0


def freshness_lifetime(response: ResponseHead, received_at: float) -> float:
    """Seconds the response is fresh for a shared cache (RFC 9111 §4.2.1):
    s-maxage, else max-age, else Expires - Date, else the §4.2.2 heuristic, else 0.

    `received_at` stands in for a missing Date.
    """
    directives = response.cache_control
    if directives.s_maxage is not None:
        return float(directives.s_maxage)
    if directives.max_age is not None:
        return float(directives.max_age)
    date = response.date if response.date is not None else received_at
    if response.expires is not None:
        return max(0.0, response.expires - date)
    if response.last_modified is not None and (
        response.status in HEURISTIC_STATUSES or directives.public
    ):
        heuristic = (date - response.last_modified) * HEURISTIC_FRACTION
        return min(max(0.0, heuristic), HEURISTIC_MAX_SECONDS)
    return 0.0


def corrected_initial_age(
    age_value: int, date: float | None, request_time: float, response_time: float
) -> float:
    """corrected_initial_age of RFC 9111 §4.2.3, capped at 2^31 (§5.1).

    apparent_age = max(0, response_time - date_value)
    corrected_age_value = age_value + (response_time - request_time)
    """
    apparent_age = max(0.0, response_time - date) if date is not None else 0.0
    response_delay = max(0.0, response_time - request_time)
    corrected_age_value = age_value + response_delay
    return min(max(apparent_age, corrected_age_value), float(DELTA_SECONDS_MAX))


def current_age(initial_age: float, response_time: float, now: float) -> float:
    """current_age = corrected_initial_age + resident_time (RFC 9111 §4.2.3)."""
    return initial_age + max(0.0, now - response_time)


class Reuse(enum.Enum):
    """What to do with a selected stored response."""

    #: Serve it (X-Cache: HIT).
    FRESH = "fresh"
    #: Serve it although stale: the client's max-stale accepts it (X-Cache: STALE).
    STALE_ALLOWED = "stale-allowed"
    #: Serve it stale now and revalidate in the background (RFC 5861 §3).
    STALE_WHILE_REVALIDATE = "stale-while-revalidate"
    #: Validate with the origin before use (§4.3); see `serve_stale_on_error`.
    REVALIDATE = "revalidate"
    #: The request said only-if-cached and the entry needs the origin: answer 504 (§5.2.1.7).
    GATEWAY_TIMEOUT = "gateway-timeout"


@dataclass(frozen=True, slots=True)
class ReuseDecision:
    """`age` is the Age header value to send. `serve_stale_on_error` says whether, if
    revalidation fails (connection error or 5xx), the stored response may be served
    instead of the error (RFC 5861 §4, RFC 9111 §4.2.4)."""

    reuse: Reuse
    age: int
    serve_stale_on_error: bool


def decide_reuse(
    entry: CachedResponse,
    request: CacheControl,
    now: float,
    *,
    error_grace: float = 0.0,
) -> ReuseDecision:
    """Decide how a stored response may answer a request with directives `request`.

    `error_grace` is how long past freshness the edge may serve a response on origin
    errors when the response has no stale-if-error (RFC 9111 §4.2.4 permits serving stale
    when the origin is unreachable; Varnish calls this grace).
    """
    directives = entry.response.cache_control
    age = current_age(entry.initial_age, entry.response_time, now)
    lifetime = entry.freshness_lifetime
    staleness = age - lifetime
    fresh = staleness < 0
    header_age = min(int(age), DELTA_SECONDS_MAX)

    implies_revalidate = directives.s_maxage is not None
    if directives.no_cache:
        on_error = False
    elif fresh:
        on_error = True
    elif directives.must_revalidate or directives.proxy_revalidate:
        on_error = False
    else:
        window = float(directives.stale_if_error or 0)
        if not implies_revalidate:
            window = max(window, float(request.stale_if_error or 0), error_grace)
        on_error = staleness <= window

    reuse = _reuse(entry, directives, request, age, lifetime, staleness, fresh)
    if reuse is Reuse.REVALIDATE and request.only_if_cached:
        reuse = Reuse.GATEWAY_TIMEOUT
    return ReuseDecision(reuse, header_age, on_error)


def _reuse(
    entry: CachedResponse,
    directives: CacheControl,
    request: CacheControl,
    age: float,
    lifetime: float,
    staleness: float,
    fresh: bool,
) -> Reuse:
    if directives.no_cache or entry.invalidated:
        return Reuse.REVALIDATE
    if fresh:
        if directives.immutable:
            return Reuse.FRESH
        if request.no_cache:
            return Reuse.REVALIDATE
        if request.max_age is not None and age > request.max_age:
            return Reuse.REVALIDATE
        if request.min_fresh is not None and lifetime - age < request.min_fresh:
            return Reuse.REVALIDATE
        return Reuse.FRESH
    if (
        request.no_cache
        or request.min_fresh is not None
        or (request.max_age is not None and age > request.max_age)
    ):
        return Reuse.REVALIDATE
    if directives.must_revalidate or directives.proxy_revalidate:
        return Reuse.REVALIDATE
    swr = directives.stale_while_revalidate
    if swr is not None and staleness < swr:
        return Reuse.STALE_WHILE_REVALIDATE
    if (
        request.max_stale is not None
        and directives.s_maxage is None
        and staleness <= request.max_stale
    ):
        return Reuse.STALE_ALLOWED
    return Reuse.REVALIDATE
