"""How many calls the sidecar serves at once, in all and per credential."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import threading
from collections.abc import Iterator

#: Calls the sidecar serves at once, in all and per credential (the rest: 429 at once).
DEFAULT_MAX_CALLS = 64
DEFAULT_MAX_CALLS_PER_KEY = 8


class CallLimits:
    """At most `most` calls at once, `per_key` of them with the same credential."""

    def __init__(self, most: int = DEFAULT_MAX_CALLS, per_key: int = DEFAULT_MAX_CALLS_PER_KEY) -> None:
        self.most, self.per_key = most, per_key
        self._running = 0
        self._by_key: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    @property
    def running(self) -> int:
        """Calls holding a place now."""
        return self._running

    @contextlib.contextmanager
    def hold(self, credential: str) -> Iterator[bool]:
        """True while the call holds its place; False (nothing held) when it has none."""
        key = hashlib.sha256(credential.encode()).hexdigest()  # never kept in the clear
        with self._lock:
            admitted = self._running < self.most and self._by_key[key] < self.per_key
            if admitted:
                self._running += 1
                self._by_key[key] += 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._running -= 1
                    self._by_key[key] -= 1
                    if not self._by_key[key]:
                        del self._by_key[key]
