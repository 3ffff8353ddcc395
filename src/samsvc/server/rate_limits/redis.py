"""Rate limit buckets in Redis (samsvc.server.rate_limit), shared by every server replica: one
Lua script takes from both buckets or from neither, on Redis's clock. Redis unreachable:
Unavailable, because limits that cannot be checked are not enforced silently."""

from __future__ import annotations

import logging

import redis

from samsvc.errors import Unavailable
from samsvc.server.rate_limit import Limits, check_cost, refusal

log = logging.getLogger(__name__)

#: Key prefix of the buckets in Redis.
DEFAULT_PREFIX = "samsvc:ratelimit"
#: Seconds an idle bucket is kept in Redis (it is full again after a minute anyway).
BUCKET_TTL_S = 120

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local levels = {}
local wait = 0
for i = 1, 2 do
  local limit = tonumber(ARGV[2 * i - 1])
  local cost = tonumber(ARGV[2 * i])
  if limit > 0 then
    local v = redis.call('HMGET', KEYS[i], 'tokens', 'at')
    local tokens = tonumber(v[1]) or limit
    local at = tonumber(v[2]) or now
    tokens = math.min(limit, tokens + math.max(now - at, 0) * limit / 60000)
    levels[i] = tokens
    if tokens < cost then wait = math.max(wait, (cost - tokens) * 60000 / limit) end
  end
end
if wait > 0 then return tostring(wait) end
for i = 1, 2 do
  if levels[i] then
    redis.call('HSET', KEYS[i], 'tokens', tostring(levels[i] - tonumber(ARGV[2 * i])), 'at', now)
    redis.call('EXPIRE', KEYS[i], ARGV[5])
  end
end
return '0'
"""


class RedisRateLimiter:
    """Buckets in Redis, shared by every server process using it."""

    def __init__(self, client: redis.Redis, limits: Limits, prefix: str = DEFAULT_PREFIX) -> None:
        self.limits = limits
        self.prefix = prefix
        self._take = client.register_script(_TAKE)

    def take(self, caller: str, images: int) -> None:
        check_cost(images, self.limits)
        try:
            wait = self._take(
                keys=[f"{self.prefix}:{caller}:requests", f"{self.prefix}:{caller}:images"],
                args=[self.limits.requests_per_minute, 1, self.limits.images_per_minute, images, BUCKET_TTL_S],
            )
        except redis.RedisError as exc:
            log.warning("rate limit store call failed: %s", exc)
            raise Unavailable(
                "rate limits are kept in Redis, which is unreachable; try again shortly",
                reason="RATE_LIMIT_UNAVAILABLE",
            ) from exc
        wait_ms = float(wait)
        if wait_ms > 0:
            raise refusal(caller, wait_ms, self.limits)
