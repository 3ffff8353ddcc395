"""Which workers are alive, for estimates and health: each worker process announces itself
(host, pid, threads) in a Redis sorted set every few seconds; a Dramatiq middleware, so the
Dramatiq CLI's worker processes do it without any code of their own."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

import dramatiq
import redis

log = logging.getLogger(__name__)

#: Seconds between announcements; a worker silent for three of them is gone.
DEFAULT_INTERVAL_S = 2.0
PRESENCE_KEY_SUFFIX = "workers"


class WorkerPresence(dramatiq.Middleware):
    def __init__(self, client: redis.Redis, prefix: str, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.client = client
        self.key = f"{prefix}:{PRESENCE_KEY_SUFFIX}"
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._member = ""

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._member = f"{socket.gethostname()}:{os.getpid()}:{worker.worker_threads}"
        threading.Thread(target=self._beat, name="samsvc-presence", daemon=True).start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self._stop.set()
        try:
            self.client.zrem(self.key, self._member)
        except redis.RedisError as exc:
            log.warning("could not withdraw worker presence: %s", exc)

    def _beat(self) -> None:
        while not self._stop.is_set():
            try:
                self.client.zadd(self.key, {self._member: time.time()})
            except redis.RedisError as exc:
                log.warning("could not announce worker presence: %s", exc)
            self._stop.wait(self.interval_s)


def live_worker_threads(client: redis.Redis, prefix: str, interval_s: float = DEFAULT_INTERVAL_S) -> tuple[int, int]:
    """(live worker processes, their threads in all) from the presence set."""
    key = f"{prefix}:{PRESENCE_KEY_SUFFIX}"
    horizon = time.time() - 3 * interval_s
    client.zremrangebyscore(key, "-inf", horizon)
    members: list[str] = client.zrangebyscore(key, horizon, "+inf")  # type: ignore[assignment]
    return len(members), sum(int(m.rsplit(":", 1)[1]) for m in members)
