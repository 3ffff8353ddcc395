"""The Redis byte cache: shared by every replica, entries expire after a TTL. A Redis failure
is never a request failure: it is logged and read as a miss."""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)


class RedisByteCache:
    def __init__(self, client: redis.Redis, prefix: str, ttl_s: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_s = ttl_s

    def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = self.client.get(f"{self.prefix}:{key}")  # type: ignore[assignment]
        except redis.RedisError as exc:
            log.warning("cache read failed, treated as a miss: %s", exc)
            return None
        return value

    def put(self, key: str, value: bytes) -> None:
        try:
            self.client.set(f"{self.prefix}:{key}", value, ex=self.ttl_s or None)
        except redis.RedisError as exc:
            log.warning("cache write failed: %s", exc)
