"""One reconciler acts at a time: a lock with an expiry, renewed by its holder on every tick.

In the Redis mode every server and worker process runs a reconciler, and the lock (SET NX PX
with a random token, renewed and released only by that token) picks the one that acts; if its
process dies, the lock expires and another takes over. The in-process mode has one process, so
its lock is always held.
"""

from __future__ import annotations

import logging
import uuid
from typing import Protocol

import redis

from samsvc.errors import Unavailable

log = logging.getLogger(__name__)

#: Milliseconds the lock lasts without renewal.
DEFAULT_LOCK_TTL_MS = 15_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Leadership(Protocol):
    def acquire(self) -> bool:
        """Take the lock, or keep it; whether this process holds it now."""

    def release(self) -> None: ...


class LocalLeadership:
    """The in-process mode's: one process, always the leader."""

    def acquire(self) -> bool:
        return True

    def release(self) -> None:
        return


class RedisLeadership:
    def __init__(self, client: redis.Redis, key: str, ttl_ms: int = DEFAULT_LOCK_TTL_MS) -> None:
        self.client = client
        self.key = key
        self.ttl_ms = ttl_ms
        self.token = uuid.uuid4().hex
        self.held = False
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def acquire(self) -> bool:
        try:
            if self.held and self._renew(keys=[self.key], args=[self.token, self.ttl_ms]):
                return True
            self.held = bool(self.client.set(self.key, self.token, nx=True, px=self.ttl_ms))
        except redis.RedisError as exc:
            self.held = False
            log.warning("reconciler lock unavailable: %s", exc)
            raise Unavailable("the reconciler lock is unreachable", reason="STORE_UNAVAILABLE") from exc
        return self.held

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        try:
            self._release(keys=[self.key], args=[self.token])
        except redis.RedisError as exc:
            log.warning("could not release the reconciler lock (it expires by itself): %s", exc)
