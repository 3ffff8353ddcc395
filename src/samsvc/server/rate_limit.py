"""Per-caller rate limits: calls and images per minute, as token buckets.

Each caller (an API key's name) has a bucket per limit holding up to the per-minute limit and
refilling continuously at limit/60 per second. A call takes one token from the calls bucket and
one per image from the images bucket, from both or from neither. With REDIS_URL the buckets live
in Redis (one Lua script, Redis's clock), so every server replica shares them; otherwise in this
process's memory. Over the limit: ResourceExhausted with the seconds until enough tokens are back
(sent as google.rpc.RetryInfo, HTTP 429 through Envoy). Redis unreachable: Unavailable, because
limits that cannot be checked are not enforced silently.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

import redis

from samsvc.errors import InvalidArgument, ResourceExhausted, Unavailable

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


@dataclass(frozen=True)
class Limits:
    """Per-minute limits of one caller; 0 means no limit."""

    requests_per_minute: int = 0
    images_per_minute: int = 0

    @property
    def active(self) -> bool:
        return self.requests_per_minute > 0 or self.images_per_minute > 0


class RateLimiter(Protocol):
    limits: Limits

    def take(self, caller: str, images: int) -> None:
        """Charge one call and `images` images to `caller`, or raise ResourceExhausted."""


def _refuse(caller: str, wait_ms: float, limits: Limits) -> ResourceExhausted:
    seconds = math.ceil(wait_ms) / 1000
    return ResourceExhausted(
        f"rate limit of {caller or 'anonymous callers'} reached "
        f"({limits.requests_per_minute or 'unlimited'} calls, {limits.images_per_minute or 'unlimited'} images "
        f"per minute); retry in {seconds:.1f} s",
        retry_after=seconds,
        reason="RATE_LIMITED",
        metadata={
            "requests_per_minute": str(limits.requests_per_minute),
            "images_per_minute": str(limits.images_per_minute),
        },
    )


def _check_cost(images: int, limits: Limits) -> None:
    if limits.images_per_minute and images > limits.images_per_minute:
        raise InvalidArgument.for_field(
            "images",
            f"holds {images} images; this caller may send at most {limits.images_per_minute} per minute",
            reason="EXCEEDS_RATE_LIMIT",
        )


class MemoryRateLimiter:
    """Buckets in this process's memory (one server process, or limits per replica)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buckets: dict[tuple[str, int], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str, images: int) -> None:
        _check_cost(images, self.limits)
        now = time.monotonic()
        wanted = ((0, self.limits.requests_per_minute, 1), (1, self.limits.images_per_minute, images))
        with self._lock:
            levels: dict[int, float] = {}
            wait_ms = 0.0
            for kind, limit, cost in wanted:
                if limit <= 0:
                    continue
                tokens, at = self._buckets.get((caller, kind), (float(limit), now))
                tokens = min(float(limit), tokens + (now - at) * limit / 60.0)
                levels[kind] = tokens
                if tokens < cost:
                    wait_ms = max(wait_ms, (cost - tokens) * 60000.0 / limit)
            if wait_ms > 0:
                raise _refuse(caller, wait_ms, self.limits)
            for kind, _limit, cost in wanted:
                if kind in levels:
                    self._buckets[(caller, kind)] = (levels[kind] - cost, now)


class RedisRateLimiter:
    """Buckets in Redis, shared by every server process using it."""

    def __init__(self, client: redis.Redis, limits: Limits, prefix: str = DEFAULT_PREFIX) -> None:
        self.limits = limits
        self.prefix = prefix
        self._take = client.register_script(_TAKE)

    def take(self, caller: str, images: int) -> None:
        _check_cost(images, self.limits)
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
            raise _refuse(caller, wait_ms, self.limits)
