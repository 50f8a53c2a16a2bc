"""The read cache in Redis, shared by every process (read-your-writes across web servers).

Each tag has a generation counter (`<prefix>g:<tag>`); entries live under
`<prefix>e:<tag>:<generation>:<query>` with the TTL. A lookup reads the generation and the
entry in one round trip (a small Lua script); the token is the generation. Invalidating
increments the generation, so every entry of the tag becomes unreachable at once, and a
fill holding an older token writes under the old generation, where no lookup looks.
Generation counters expire `GENERATION_TTL_FACTOR` x TTL (at least an hour) after the last
write: by then every entry filled under an earlier generation has expired.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio
import redis.exceptions

from millions.shards.cache.base import CacheLookup
from millions.shards.errors import ShardUnavailableError

GENERATION_TTL_FACTOR = 10
MIN_GENERATION_TTL_S = 3600
_LOOKUP = """
local generation = redis.call('GET', KEYS[1]) or '0'
return {generation, redis.call('GET', ARGV[1] .. generation .. ARGV[2])}
"""


class RedisReadCache:
    """A `ReadCache` in Redis."""

    def __init__(self, url: str, *, ttl_s: float, prefix: str = "millions:shards:") -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be > 0")
        self.url = url
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.generation_ttl_ms = max(
            self.ttl_ms * GENERATION_TTL_FACTOR, MIN_GENERATION_TTL_S * 1000
        )
        self._client: redis.asyncio.Redis = redis.asyncio.Redis.from_url(url)
        self._lookup: Any = self._client.register_script(_LOOKUP)

    async def get(self, tag: str, query: str) -> CacheLookup:
        try:
            generation, value = await self._lookup(
                keys=[f"{self.prefix}g:{tag}"], args=[f"{self.prefix}e:{tag}:", f":{query}"]
            )
        except redis.exceptions.RedisError as exc:
            raise ShardUnavailableError(f"read cache: {exc}") from exc
        return CacheLookup(value, int(generation))

    async def fill(self, tag: str, query: str, value: bytes, token: int) -> None:
        try:
            await self._client.set(f"{self.prefix}e:{tag}:{token}:{query}", value, px=self.ttl_ms)
        except redis.exceptions.RedisError as exc:
            raise ShardUnavailableError(f"read cache: {exc}") from exc

    async def invalidate(self, tag: str) -> None:
        key = f"{self.prefix}g:{tag}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, self.generation_ttl_ms)
                await pipe.execute()
        except redis.exceptions.RedisError as exc:
            raise ShardUnavailableError(f"read cache: {exc}") from exc

    async def close(self) -> None:
        await self._client.aclose()
