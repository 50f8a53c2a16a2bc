"""Sessions in Redis: one key per session, expiry by Redis itself (SET EX / EXPIRE).

Redis deletes expired keys on its own, so `purge_expired` has nothing to do. `count`
walks the store's keys with SCAN (never KEYS, which blocks the server); it is meant for
operators and tests, not for the request path.

The client fails fast when Redis is down (2 s timeouts, one quick retry that heals a
pooled connection broken by a Redis restart) so the web tier answers 503 promptly
instead of piling up requests, and it caps its connections so many web server processes
cannot exhaust Redis's client limit.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from millions.sessions.base import SessionStoreError, check_ttl, decode_data, encode_data

DEFAULT_PREFIX = "millions:session:"
TIMEOUT_S = 2.0
MAX_CONNECTIONS = 64
SCAN_BATCH = 1000

T = TypeVar("T")


def scan_pattern(prefix: str) -> str:
    """A SCAN MATCH pattern for every key under `prefix`, glob characters escaped."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", prefix) + "*"


class RedisSessionStore:
    """A `SessionStore` in Redis, keys `<prefix><session id>` holding the JSON data."""

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        if not prefix:
            raise ValueError("a Redis session store needs a non-empty key prefix")
        self.url = url
        self.prefix = prefix
        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS,
                timeout=TIMEOUT_S,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
                retry=Retry(ExponentialBackoff(cap=0.1, base=0.01), retries=1),
            )
        except ValueError as exc:
            raise ValueError(f"bad Redis URL {url!r}: {exc}") from exc
        self._redis = redis.asyncio.Redis.from_pool(pool)

    async def load(self, session_id: str) -> dict[str, Any] | None:
        stored = await self._call(self._redis.get(self.prefix + session_id))
        return None if stored is None else decode_data(stored)

    async def save(self, session_id: str, data: dict[str, Any], ttl_s: int) -> None:
        encoded = encode_data(data)
        await self._call(self._redis.set(self.prefix + session_id, encoded, ex=check_ttl(ttl_s)))

    async def touch(self, session_id: str, ttl_s: int) -> None:
        await self._call(self._redis.expire(self.prefix + session_id, check_ttl(ttl_s)))

    async def delete(self, session_id: str) -> None:
        await self._call(self._redis.delete(self.prefix + session_id))

    async def purge_expired(self) -> int:
        return 0

    async def count(self) -> int:
        async def count_keys() -> int:
            found = 0
            async for _key in self._redis.scan_iter(
                match=scan_pattern(self.prefix), count=SCAN_BATCH
            ):
                found += 1
            return found

        return await self._call(count_keys())

    async def close(self) -> None:
        await self._redis.aclose()

    async def _call(self, operation: Awaitable[T]) -> T:
        try:
            return await operation
        except (RedisError, OSError) as exc:
            raise SessionStoreError(f"redis session store: {exc}") from exc
