"""Admission control for inference: `max_running` slots, at most `max_waiting` requests
waiting in line, and anything beyond refused at once with RESOURCE_EXHAUSTED.

Admission counts work, not calls: a request takes as many slots as its work needs (one per
PROMPTS_PER_SLOT prompts, at least one, at most all), so a heavy request holds more of the
server than a light one. The line is first come, first served: a heavy request at its head
waits for enough slots, and lighter ones behind it wait too (so it cannot starve).

A waiter whose caller cancels or whose deadline passes leaves the line (grpc.aio cancels the
handler task); slots freed by a finishing request pass straight to the waiters they fit.
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
        self._waiters: collections.deque[tuple[asyncio.Future[None], int]] = collections.deque()
        self._mean_duration_s: float | None = None

    @property
    def running(self) -> int:
        """Slots in use."""
        return self._running

    @property
    def waiting(self) -> int:
        return sum(1 for f, _ in self._waiters if not f.done())

    def weight(self, work: int, per_slot: int) -> int:
        """Slots a request of `work` (prompts) takes: one per `per_slot`, at least one, at most all."""
        return min(max(-(-work // per_slot), 1), self.max_running)

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
    async def slot(self, weight: int = 1) -> AsyncIterator[None]:
        """Hold `weight` slots (at most all of them) for the body of the `async with`."""
        weight = min(max(weight, 1), self.max_running)
        await self._acquire(weight)
        try:
            yield
        finally:
            self._release(weight)

    async def _acquire(self, weight: int) -> None:
        if self._running + weight <= self.max_running and not self.waiting:
            self._running += weight
            return
        if self.waiting >= self.max_waiting:
            raise ResourceExhausted(
                f"the server is busy: {self._running} of {self.max_running} inference slots taken and "
                f"{self.waiting} requests waiting; retry later",
                reason="SERVER_OVERLOADED",
                retry_after=self.retry_after(),
                metadata={"running": str(self._running), "waiting": str(self.waiting)},
            )
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((waiter, weight))
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                # The slots were handed over just as the caller left: pass them on.
                self._release(weight)
            else:
                self._discard(waiter)
            raise

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        self._waiters = collections.deque((f, w) for f, w in self._waiters if f is not waiter)
        self._wake()  # lighter waiters behind a heavy one that left may fit now

    def _release(self, weight: int) -> None:
        self._running -= weight
        self._wake()

    def _wake(self) -> None:
        """Hand free slots to the waiters at the head of the line, as long as they fit."""
        while self._waiters:
            waiter, weight = self._waiters[0]
            if waiter.done():
                self._waiters.popleft()
                continue
            if self._running + weight > self.max_running:
                return
            self._waiters.popleft()
            self._running += weight
            waiter.set_result(None)
