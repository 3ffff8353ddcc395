"""The byte cache interface: what the result and embedding caches need from a backend.
Backends: samsvc.cache.memory (this process, an LRU bounded by bytes) and
samsvc.cache.redis (shared by every replica). Neither fails a request: a backend that
cannot answer reads as a miss."""

from __future__ import annotations

from typing import Protocol


class ByteCache(Protocol):
    def get(self, key: str) -> bytes | None:
        """The value stored under `key`, or None (absent, expired, or unreadable)."""

    def put(self, key: str, value: bytes) -> None:
        """Store `value` under `key`; a value larger than the cache's budget is not kept."""
