"""Admission control for inference: at most `max_running` at once, at most `max_waiting`
waiting in line, and anything beyond refused at once with RESOURCE_EXHAUSTED.

A waiter whose caller cancels or whose deadline passes leaves the line (grpc.aio cancels the
handler task); a slot freed by a finishing request passes straight to the next waiter.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from samsvc.errors import ResourceExhausted

#: Weight of the newest duration in the running mean used for retry hints.
DEFAULT_EWMA_WEIGHT = 0.2
#: Retry hint before any inference has been timed, in seconds.
DEFAULT_RETRY_AFTER_S = 1.0


class AdmissionControl:
    def __init__(self, max_running: int, max_waiting: int) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be >= 1 and max_waiting >= 0")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._running = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._mean_duration_s: float | None = None

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: one average inference per full round of slots."""
        if self._mean_duration_s is None:
            return DEFAULT_RETRY_AFTER_S
        rounds = (self.waiting + self._running) / self.max_running
        return max(0.1, round(self._mean_duration_s * max(rounds, 1.0), 1))

    def record_duration(self, seconds: float) -> None:
        previous = self._mean_duration_s
        self._mean_duration_s = seconds if previous is None else previous + DEFAULT_EWMA_WEIGHT * (seconds - previous)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one inference slot for the body of the `async with`."""
        await self._acquire()
        try:
            yield
        finally:
            self._release()

    async def _acquire(self) -> None:
        if self._running < self.max_running and not self.waiting:
            self._running += 1
            return
        if self.waiting >= self.max_waiting:
            raise ResourceExhausted(
                f"the server is busy: {self._running} inferences running and {self.waiting} waiting; retry later",
                reason="SERVER_OVERLOADED",
                retry_after=self.retry_after(),
                metadata={"running": str(self._running), "waiting": str(self.waiting)},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slot was handed over just as the caller left: pass it on.
                self._release()
            else:
                self._discard(waiter)
            raise

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            return

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; the count stays
                return
        self._running -= 1
