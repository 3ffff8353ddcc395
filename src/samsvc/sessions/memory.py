"""Image sessions in this process's memory (samsvc.sessions.store.SessionStore): an LRU bounded
by bytes in all and per key (the owner's own sessions evicted first), each session renewed on
use. Sessions live as long as the process."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np
import numpy.typing as npt

from samsvc.errors import FailedPrecondition
from samsvc.sessions.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_BYTES_PER_KEY, DEFAULT_TTL_S, ImageSessionRecord

_Key = tuple[str, str]  # (owner, image_id)


class MemorySessionStore:
    def __init__(
        self,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl_s: float = DEFAULT_TTL_S,
        max_bytes_per_key: int = DEFAULT_MAX_BYTES_PER_KEY,
    ) -> None:
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.max_bytes_per_key = max_bytes_per_key
        # Least recently used first; with one TTL for all, that is also soonest to expire.
        self._sessions: OrderedDict[_Key, ImageSessionRecord] = OrderedDict()
        self._bytes = 0
        self._owner_bytes: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._sessions)

    def put(self, record: ImageSessionRecord) -> ImageSessionRecord:
        check_fits(record.nbytes, self.max_bytes, self.max_bytes_per_key)
        stored = record.evolve(expires_at=time.time() + self.ttl_s)
        key = (record.owner, record.image_id)
        with self._lock:
            self._drop_expired()
            self._drop(key)
            self._sessions[key] = stored
            self._add(key, stored.nbytes)
            self._fit(key)
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
            self._add(key, updated.nbytes - record.nbytes)
            self._sessions[key] = updated
            self._sessions.move_to_end(key)
            self._fit(key)
            return True

    def delete(self, owner: str, image_id: str) -> bool:
        with self._lock:
            return self._drop((owner, image_id))

    def _add(self, key: _Key, size: int) -> None:
        self._bytes += size
        self._owner_bytes[key[0]] = self._owner_bytes.get(key[0], 0) + size

    def _fit(self, keep: _Key) -> None:
        """Evict until the owner of `keep` is within its budget and the store within its own:
        the owner's least recently used sessions first, others' only when it has none left."""
        owner = keep[0]
        while self.max_bytes_per_key and self._owner_bytes.get(owner, 0) > self.max_bytes_per_key:
            if not self._drop_oldest(keep, owner):
                break
        while self._bytes > self.max_bytes:
            if not (self._drop_oldest(keep, owner) or self._drop_oldest(keep)):
                break

    def _drop_oldest(self, keep: _Key, owner: str | None = None) -> bool:
        victim = next((k for k in self._sessions if k != keep and (owner is None or k[0] == owner)), None)
        return victim is not None and self._drop(victim)

    def _drop(self, key: _Key) -> bool:
        record = self._sessions.pop(key, None)
        if record is None:
            return False
        self._bytes -= record.nbytes
        left = self._owner_bytes.get(key[0], 0) - record.nbytes
        if left > 0:
            self._owner_bytes[key[0]] = left
        else:
            self._owner_bytes.pop(key[0], None)
        return True

    def _drop_expired(self) -> None:
        now = time.time()
        while self._sessions:
            key, record = next(iter(self._sessions.items()))
            if record.expires_at > now:
                return
            self._drop(key)


def check_fits(size: int, budget: int, per_key: int) -> None:
    """FAILED_PRECONDITION (IMAGE_SESSION_TOO_LARGE) for a session larger than either budget."""
    for limit, setting in ((budget, "IMAGE_SESSION_BYTES"), (per_key, "IMAGE_SESSION_BYTES_PER_KEY")):
        if limit and size > limit:
            raise FailedPrecondition(
                f"an image session of {size} bytes does not fit {setting} ({limit})", reason="IMAGE_SESSION_TOO_LARGE"
            )
