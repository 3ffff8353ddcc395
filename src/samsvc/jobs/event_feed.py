"""Waiting for a job's next events without a thread per waiter (asyncio).

Job streams (WatchJob, SegmentBatch) spend their lives waiting for the next event. A blocking
read per stream would hold one thread of a shared pool each, so a few hundred open streams
would starve every other call of threads. Here waiting is a coroutine:

- RedisEventFeed: one reader for all the streams a process follows. A single task issues one
  `XREAD BLOCK` over every watched job's event stream at once and hands new entries to the
  waiters; a waiter first reads what is already there (one non-blocking XREAD), then joins it.
- PollingEventFeed (in-process mode, memory store): looks at the in-memory log every
  DEFAULT_POLL_S; no I/O is involved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
import redis.asyncio

from samsvc.errors import Unavailable
from samsvc.infra.redis_connection import connect_async
from samsvc.jobs.records import EventKind, JobEvent
from samsvc.jobs.store import JobStore
from samsvc.jobs.stores.redis_base import DEFAULT_PREFIX, UNREACHABLE_MESSAGE

log = logging.getLogger(__name__)

#: Seconds between looks at the memory store's event logs.
DEFAULT_POLL_S = 0.1
#: Milliseconds the shared reader blocks in XREAD before taking in newly watched streams.
DEFAULT_BLOCK_MS = 500
#: Entries one XREAD returns per stream at most.
READ_COUNT = 100


class EventFeed(Protocol):
    async def wait(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        """Events after cursor `after` ("" for all), waiting up to `timeout_s` for one."""

    async def close(self) -> None: ...


class PollingEventFeed:
    def __init__(self, store: JobStore, interval_s: float = DEFAULT_POLL_S) -> None:
        self.store = store
        self.interval_s = interval_s

    async def wait(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            events = self.store.events(job_id, after, 0)  # memory only: no I/O, no wait
            if events or loop.time() >= deadline:
                return events
            await asyncio.sleep(min(self.interval_s, max(deadline - loop.time(), 0)))

    async def close(self) -> None:
        return


def _position(cursor: str) -> tuple[int, int]:
    ms, _, seq = cursor.partition("-")
    return int(ms or 0), int(seq or 0)


@dataclass
class _Waiter:
    after: str
    future: asyncio.Future[list[JobEvent]] = field(repr=False)


class RedisEventFeed:
    def __init__(self, client: redis.asyncio.Redis, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix
        self._waiters: dict[str, list[_Waiter]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisEventFeed:
        return cls(connect_async(url))

    def _key(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    async def wait(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        key = self._key(job_id)
        ready = await self._read({key: after or "0-0"}, block_ms=None)
        if ready.get(key):
            return ready[key]
        waiter = _Waiter(after or "0-0", asyncio.get_running_loop().create_future())
        self._waiters.setdefault(key, []).append(waiter)
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_for_all(), name="samsvc-job-events")
        try:
            return await asyncio.wait_for(asyncio.shield(waiter.future), timeout_s)
        except TimeoutError:
            return []
        finally:
            self._forget(key, waiter)

    def _forget(self, key: str, waiter: _Waiter) -> None:
        waiters = self._waiters.get(key, [])
        if waiter in waiters:
            waiters.remove(waiter)
        if not waiters:
            self._waiters.pop(key, None)

    async def _read(self, streams: dict[str, str], block_ms: int | None) -> dict[str, list[JobEvent]]:
        try:
            reply: Any = await self.client.xread(streams, count=READ_COUNT, block=block_ms)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            log.warning("job events unreadable: %s", exc)
            raise Unavailable(UNREACHABLE_MESSAGE, reason="STORE_UNAVAILABLE") from exc
        found: dict[str, list[JobEvent]] = {}
        for key, entries in reply or []:
            found[key] = [
                JobEvent(cursor=entry_id, kind=EventKind(fields["kind"]), data=fields["data"])
                for entry_id, fields in entries
            ]
        return found

    async def _read_for_all(self) -> None:
        """The one reader: XREAD BLOCK over every watched stream until nobody waits."""
        while self._waiters:
            streams = {key: min((w.after for w in ws), key=_position) for key, ws in self._waiters.items() if ws}
            try:
                found = await self._read(streams, block_ms=DEFAULT_BLOCK_MS)
            except Unavailable as exc:
                for waiters in list(self._waiters.values()):
                    for waiter in waiters:
                        if not waiter.future.done():
                            waiter.future.set_exception(exc)
                await asyncio.sleep(DEFAULT_BLOCK_MS / 1000)
                continue
            for key, events in found.items():
                for waiter in list(self._waiters.get(key, [])):
                    mine = [e for e in events if _position(e.cursor) > _position(waiter.after)]
                    if mine and not waiter.future.done():
                        waiter.future.set_result(mine)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await self.client.aclose()
