"""A stored response's metadata: what storage keeps beside the body.

Storage persists the seven constructor fields (status, headers, request_time,
response_time, initial_age, secondary_key, invalidated) and rebuilds the object with
`CachedResponse(...)` after a restart; everything else (parsed directives, validators,
freshness lifetime, surrogate keys) is derived in `__post_init__`, once per stored response.

`headers` are the stored header lines: the origin's, minus what must not be stored or is
per-hop (see `storability.stored_fields`), minus Age (kept as `initial_age`) and framing
(Content-Length / Transfer-Encoding: the server frames the stored body itself), plus a Date
when the origin sent none (RFC 9110 §6.6.1). The server writes them as they are, then adds
Content-Length, Age, X-Cache and Via.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from millions.edge.dates import format_http_date
from millions.edge.freshness import corrected_initial_age, freshness_lifetime
from millions.edge.headers import Header
from millions.edge.messages import RequestHead, ResponseHead, parse_response
from millions.edge.storability import StorageDecision, stored_fields
from millions.edge.surrogate_keys import surrogate_keys
from millions.edge.vary import secondary_key


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """One stored response (one variant of one primary key)."""

    status: int
    headers: tuple[Header, ...]
    request_time: float
    response_time: float
    initial_age: float
    secondary_key: bytes = b""
    invalidated: bool = False
    response: ResponseHead = field(init=False, repr=False, compare=False)
    freshness_lifetime: float = field(init=False, compare=False)
    surrogate_keys: frozenset[bytes] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        response = parse_response(self.status, self.headers)
        object.__setattr__(self, "response", response)
        object.__setattr__(
            self, "freshness_lifetime", freshness_lifetime(response, self.response_time)
        )
        object.__setattr__(self, "surrogate_keys", surrogate_keys(self.headers))

    @classmethod
    def from_origin(
        cls,
        request: RequestHead,
        response: ResponseHead,
        decision: StorageDecision,
        *,
        request_time: float,
        response_time: float,
    ) -> CachedResponse:
        """The entry to store for an origin response that `storage_decision` allowed.

        `request_time` is when the request to the origin was sent, `response_time` when its
        response head arrived (RFC 9111 §4.2.3).
        """
        headers = stored_fields(response.headers, decision)
        if response.date is None:
            headers.append((b"date", format_http_date(response_time)))
        vary = response.vary or ()
        return cls(
            status=response.status,
            headers=tuple(headers),
            request_time=request_time,
            response_time=response_time,
            initial_age=corrected_initial_age(
                response.age, response.date, request_time, response_time
            ),
            secondary_key=secondary_key(vary, request.headers),
        )

    def invalidate(self) -> CachedResponse:
        """This entry marked as needing validation before reuse (RFC 9111 §4.4, soft purge)."""
        return dataclasses.replace(self, invalidated=True)

    @property
    def etag(self) -> bytes | None:
        return self.response.etag

    @property
    def last_modified(self) -> float | None:
        return self.response.last_modified
