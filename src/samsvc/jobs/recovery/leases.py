"""Leases on images: how the reconciler tells an image a worker holds from one that is lost.

A worker process takes an image's lease when it takes the image's message off the queue (the
message may wait in the worker behind the image running), keeps it while it holds the image
(a thread renews every lease a third of DEFAULT_LEASE before it runs out), and drops it when the
image is recorded, scheduled for a retry or handed back to the queue. A process that dies
stops renewing: its leases run out, and the reconciler queues those images again. Each
delivery has its own token, so a duplicate message finds the lease taken and leaves the
image to the delivery holding it.
"""

from __future__ import annotations

import logging
import threading
import uuid

from samsvc.errors import Unavailable
from samsvc.jobs.store import JobStore

log = logging.getLogger(__name__)


def new_token() -> str:
    return uuid.uuid4().hex


class LeaseKeeper:
    """The leases this process holds, renewed by one thread."""

    def __init__(self, store: JobStore, lease_s: float) -> None:
        self.store = store
        self.lease_ms = max(int(lease_s * 1000), 1)
        self._held: dict[str, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: str, index: int, token: str) -> bool:
        """A message was taken: take the image's lease (False: another delivery holds it, or
        the image needs nothing more; the delivery will find that out when it starts)."""
        try:
            taken = self.store.hold_image(job_id, index, token, self.lease_ms)
        except Unavailable as exc:
            log.warning("could not take the lease of image %d of job %s: %s", index, job_id, exc.message)
            return False
        if taken:
            self.keep(job_id, index, token)
        return taken

    def keep(self, job_id: str, index: int, token: str) -> None:
        """Renew this lease (taken by the store when the delivery began) until `forget`."""
        with self._lock:
            self._held[token] = (job_id, index)
        self._ensure_running()

    def forget(self, token: str) -> None:
        """Stop renewing (the store already dropped the lease with the result or the retry)."""
        with self._lock:
            self._held.pop(token, None)

    def release(self, token: str) -> None:
        """The message goes back to the queue unprocessed: drop its lease now."""
        with self._lock:
            held = self._held.pop(token, None)
        if held is not None:
            try:
                self.store.release_image(held[0], held[1], token, ended=False)
            except Unavailable as exc:
                log.warning("could not drop the lease of image %d of job %s: %s", held[1], held[0], exc.message)

    def held(self) -> dict[str, tuple[str, int]]:
        with self._lock:
            return dict(self._held)

    def renew_all(self) -> None:
        for token, (job_id, index) in self.held().items():
            try:
                if not self.store.renew_lease(job_id, index, token, self.lease_ms):
                    self.forget(token)  # recorded, or taken over after this process lost it
            except Unavailable as exc:
                log.warning("could not renew the lease of image %d of job %s: %s", index, job_id, exc.message)
                return

    def _ensure_running(self) -> None:
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="samsvc-leases", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.lease_ms / 3000):
            self.renew_all()

    def stop(self) -> None:
        self._stop.set()
