"""Rate limit buckets in this process's memory (samsvc.server.rate_limit): one server process,
or limits per replica."""

from __future__ import annotations

import threading
import time

from samsvc.server.rate_limit import Limits, check_cost, refusal


class MemoryRateLimiter:
    """Buckets in this process's memory (one server process, or limits per replica)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._buckets: dict[tuple[str, int], tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, caller: str, images: int) -> None:
        check_cost(images, self.limits)
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
                raise refusal(caller, wait_ms, self.limits)
            for kind, _limit, cost in wanted:
                if kind in levels:
                    self._buckets[(caller, kind)] = (levels[kind] - cost, now)
