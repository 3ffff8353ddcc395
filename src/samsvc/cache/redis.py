"""The Redis byte cache (samsvc.cache.backend.ByteCache): shared by every replica, entries
expire after a TTL, and the entries of one cache hold at most `max_bytes` together (the oldest
go first), so a stream of distinct images cannot grow Redis, where the jobs live too. A Redis
failure is never a request failure: it is logged and read as a miss.

Keys: `{prefix}:{key}` the entries, `{prefix}:index` (zset: entry key by write time),
`{prefix}:sizes` (hash: entry key -> bytes), `{prefix}:bytes` (their sum).
"""

from __future__ import annotations

import logging
import time

import redis

from samsvc.infra.redis_budget import DROP_LUA

log = logging.getLogger(__name__)

_PUT = (
    DROP_LUA
    + """
local ttl, now, budget = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if ttl > 0 then
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 1000)) do drop(key) end
end
if redis.call('HEXISTS', KEYS[3], KEYS[1]) == 1 then drop(KEYS[1]) end
local size = string.len(ARGV[1])
if size > budget then return 0 end
if ttl > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl) else redis.call('SET', KEYS[1], ARGV[1]) end
redis.call('HSET', KEYS[3], KEYS[1], size)
redis.call('ZADD', KEYS[2], now, KEYS[1])
local total = redis.call('INCRBY', KEYS[4], size)
while total > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  total = drop(oldest)
end
return 1
"""
)


class RedisByteCache:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int, max_bytes: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._put = client.register_script(_PUT)

    def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = self.client.get(f"{self.prefix}:{key}")  # type: ignore[assignment]
        except redis.RedisError as exc:
            log.warning("cache read failed, treated as a miss: %s", exc)
            return None
        return value

    def put(self, key: str, value: bytes) -> None:
        keys = [f"{self.prefix}:{key}", f"{self.prefix}:index", f"{self.prefix}:sizes", f"{self.prefix}:bytes"]
        try:
            self._put(keys=keys, args=[value, self.ttl_s, int(time.time() * 1000), self.max_bytes])
        except redis.RedisError as exc:
            log.warning("cache write failed: %s", exc)

    def stored_bytes(self) -> int:
        """What the entries hold together (as counted by the cache)."""
        return int(self.client.get(f"{self.prefix}:bytes") or 0)
