"""Image sessions in this process's memory (samsvc.sessions.store.SessionStore): an LRU bounded
by bytes, each session renewed on use. Sessions live as long as the process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from samsvc.errors import FailedPrecondition
from samsvc.sessions.store import DEFAULT_MAX_BYTES, DEFAULT_TTL_S, ImageSessionRecord


class MemorySessionStore:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        # Least recently used first; with one TTL for all, that is also soonest to expire.
        self._sessions: OrderedDict[tuple[str, str], ImageSessionRecord] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._sessions)

    def put(self, record: ImageSessionRecord) -> ImageSessionRecord:
        if record.nbytes > self.max_bytes:
            raise too_large(record.nbytes, self.max_bytes)
        stored = record.evolve(expires_at=time.time() + self.ttl_s)
        key = (record.owner, record.image_id)
        with self._lock:
            self._drop_expired()
            self._drop(key)
            self._sessions[key] = stored
            self._bytes += stored.nbytes
            while self._bytes > self.max_bytes:
                self._drop(next(iter(self._sessions)))
        return stored

    def get(self, owner: str, image_id: str, renew: bool = True) -> ImageSessionRecord | None:
        key = (owner, image_id)
        with self._lock:
            record = self._sessions.get(key)
            if record is None:
                return None
            if record.expires_at <= time.time():
                self._drop(key)
                return None
            if not renew:
                return record
            record = record.evolve(expires_at=time.time() + self.ttl_s)
            self._sessions[key] = record
            self._sessions.move_to_end(key)
            return record

    def set_previous(self, owner: str, image_id: str, previous: tuple[npt.NDArray[np.float32], ...]) -> bool:
        key = (owner, image_id)
        with self._lock:
            record = self._sessions.get(key)
            if record is None or record.expires_at <= time.time():
                return False
            updated = record.evolve(previous=previous)
            self._bytes += updated.nbytes - record.nbytes
            self._sessions[key] = updated
            self._sessions.move_to_end(key)
            while self._bytes > self.max_bytes and len(self._sessions) > 1:
                self._drop(next(iter(self._sessions)))
            return True

    def delete(self, owner: str, image_id: str) -> bool:
        with self._lock:
            return self._drop((owner, image_id))

    def _drop(self, key: tuple[str, str]) -> bool:
        record = self._sessions.pop(key, None)
        if record is None:
            return False
        self._bytes -= record.nbytes
        return True

    def _drop_expired(self) -> None:
        now = time.time()
        while self._sessions:
            key, record = next(iter(self._sessions.items()))
            if record.expires_at > now:
                return
            self._drop(key)


def too_large(size: int, budget: int) -> FailedPrecondition:
    return FailedPrecondition(
        f"an image session of {size} bytes does not fit IMAGE_SESSION_BYTES ({budget})",
        reason="IMAGE_SESSION_TOO_LARGE",
    )
