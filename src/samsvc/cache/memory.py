"""The in-memory byte cache (samsvc.cache.backend.ByteCache): an LRU bounded by bytes, with a
TTL, for one server process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class MemoryByteCache:
    """Least recently used entries go first once `max_bytes` is exceeded; entries older than
    `ttl_s` (0: no limit) are misses."""

    def __init__(self, max_bytes: int, ttl_s: float = 0.0) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            stored, value = entry
            if self.ttl_s and time.monotonic() - stored > self.ttl_s:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        if len(value) > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (time.monotonic(), value)
            self._bytes += len(value)
            while self._bytes > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self._bytes -= len(value)

    @property
    def size_bytes(self) -> int:
        return self._bytes
