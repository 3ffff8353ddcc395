"""Where jobs, per-image results and event logs live: one interface, two stores.

- RedisJobStore (samsvc.jobs.redis_store): shared by servers and workers; survives restarts.
- MemoryJobStore (here): the embedded mode; one process, nothing survives a restart.

Recording a result is idempotent: an image's first result wins, later ones (a redelivered
message after a worker crash, a retry) change nothing. The event log of a job is append-only;
a cursor names a position in it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from samsvc.jobs.records import (
    EventKind,
    ImageResult,
    JobEvent,
    JobRecord,
    JobStatus,
    JobType,
    now_ms,
)

#: How long a job, its results and its events are kept after creation or their last change.
DEFAULT_RETENTION_S = 24 * 3600
#: Weight of the newest image time in a model's running mean.
DEFAULT_EWMA_WEIGHT = 0.2
#: The most jobs the memory store keeps; the oldest ended ones go first.
DEFAULT_MEMORY_MAX_JOBS = 10_000


class RecordOutcome(Enum):
    #: The job does not exist (expired or never created).
    MISSING = "missing"
    #: This image already has a result, or the job has ended: nothing changed.
    IGNORED = "ignored"
    #: The result was recorded; the job goes on.
    RECORDED = "recorded"
    #: The result was recorded and was the job's last: the job has ended.
    FINISHED = "finished"


@dataclass(frozen=True)
class ListCursor:
    """Position in the newest-first job listing: after this job."""

    created_at_ms: int
    job_id: str


class JobStore(Protocol):
    retention_s: int

    def ping(self) -> None:
        """Raise if the store cannot be reached."""

    def create(
        self, job: JobRecord, early_results: Sequence[ImageResult] = (), request_id: str = ""
    ) -> tuple[JobRecord, bool]:
        """Store a new job (with results known at submission, e.g. images refused by their
        header) and its ACCEPTED event. With a request_id already used, return that job and
        False instead."""

    def get(self, job_id: str) -> JobRecord | None: ...

    def record_result(self, job_id: str, result: ImageResult, model: str) -> RecordOutcome:
        """Record an image's result once, update counts, log IMAGE and PROGRESS events, end
        the job (COMPLETED, or FAILED when no image succeeded) after its last image."""

    def cancel(self, job_id: str, message: str) -> tuple[JobRecord | None, bool]:
        """End the job as CANCELLED unless it already ended; returns (job, whether it changed)."""

    def results(self, job_id: str, from_index: int, limit: int) -> tuple[list[ImageResult], bool]:
        """Finished images with index >= `from_index`, in index order; and whether more follow."""

    def result(self, job_id: str, index: int) -> ImageResult | None: ...

    def events(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        """Events after cursor `after` ("" for all), waiting up to `timeout_s` for one."""

    def list_jobs(
        self,
        status: JobStatus | None,
        job_type: JobType | None,
        after: ListCursor | None,
        limit: int,
        owner: str | None = None,
    ) -> list[JobRecord]:
        """Jobs newest first, filtered (owner None: every owner), starting after `after`."""

    def purge(self, job_id: str) -> bool:
        """Remove the job and everything kept for it; False when it did not exist."""

    def mean_image_seconds(self, model: str) -> float | None: ...

    def set_webhook_state(self, job_id: str, state: str, attempts: int) -> None: ...

    def webhook_state(self, job_id: str) -> tuple[str, int]: ...


def final_status(job: JobRecord) -> JobStatus:
    return JobStatus.COMPLETED if job.succeeded_images > 0 else JobStatus.FAILED


@dataclass
class _MemoryJob:
    record: JobRecord
    results: dict[int, ImageResult] = field(default_factory=dict)
    events: list[JobEvent] = field(default_factory=list)
    webhook: tuple[str, int] = ("", 0)


class MemoryJobStore:
    """The embedded mode's store: a dict behind a lock, with a condition for event waiters."""

    def __init__(self, retention_s: int = DEFAULT_RETENTION_S, max_jobs: int = DEFAULT_MEMORY_MAX_JOBS) -> None:
        self.retention_s = retention_s
        self.max_jobs = max_jobs
        self._jobs: dict[str, _MemoryJob] = {}
        self._requests: dict[str, str] = {}
        self._image_seconds: dict[str, float] = {}
        self._changed = threading.Condition()

    def ping(self) -> None:
        return

    def _append(self, job: _MemoryJob, kind: EventKind, data: dict[str, object]) -> None:
        job.events.append(JobEvent(cursor=str(len(job.events) + 1), kind=kind, data=json.dumps(data)))

    def _expire(self) -> None:
        horizon = now_ms() - self.retention_s * 1000
        stale = [
            job_id
            for job_id, job in self._jobs.items()
            if (job.record.completed_at_ms or job.record.created_at_ms) < horizon
        ]
        if len(self._jobs) - len(stale) >= self.max_jobs:
            ended = sorted(
                (j for j in self._jobs.values() if j.record.status.final), key=lambda j: j.record.created_at_ms
            )
            stale += [j.record.job_id for j in ended[: len(self._jobs) - self.max_jobs + 1]]
        for job_id in stale:
            self._jobs.pop(job_id, None)
        live = set(self._jobs)
        self._requests = {k: v for k, v in self._requests.items() if v in live}

    def create(
        self, job: JobRecord, early_results: Sequence[ImageResult] = (), request_id: str = ""
    ) -> tuple[JobRecord, bool]:
        with self._changed:
            self._expire()
            if request_id and request_id in self._requests and self._requests[request_id] in self._jobs:
                return self._jobs[self._requests[request_id]].record, False
            entry = _MemoryJob(record=job)
            self._jobs[job.job_id] = entry
            if request_id:
                self._requests[request_id] = job.job_id
            self._append(entry, EventKind.ACCEPTED, {"total_images": job.total_images})
            self._changed.notify_all()
        for result in early_results:
            self.record_result(job.job_id, result, job.spec.model)
        return self.get(job.job_id) or job, True

    def get(self, job_id: str) -> JobRecord | None:
        with self._changed:
            entry = self._jobs.get(job_id)
            return entry.record if entry else None

    def record_result(self, job_id: str, result: ImageResult, model: str) -> RecordOutcome:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return RecordOutcome.MISSING
            job = entry.record
            if job.status.final or result.index in entry.results:
                return RecordOutcome.IGNORED
            entry.results[result.index] = result
            stamp = now_ms()
            job = job.evolve(
                succeeded_images=job.succeeded_images + (1 if result.succeeded else 0),
                failed_images=job.failed_images + (0 if result.succeeded else 1),
                image_seconds=job.image_seconds + result.processing_time_s,
                started_at_ms=job.started_at_ms or stamp,
                status=JobStatus.PROCESSING,
            )
            if result.succeeded and result.processing_time_s > 0:
                old = self._image_seconds.get(model)
                new = result.processing_time_s
                self._image_seconds[model] = new if old is None else old + DEFAULT_EWMA_WEIGHT * (new - old)
            self._append(entry, EventKind.IMAGE, {"index": result.index})
            self._append(
                entry,
                EventKind.PROGRESS,
                {"processed": job.processed_images, "failed": job.failed_images, "total": job.total_images},
            )
            outcome = RecordOutcome.RECORDED
            if job.remaining_images == 0:
                job = job.evolve(status=final_status(job), completed_at_ms=stamp)
                self._append(entry, EventKind.FINISHED, {"status": job.status.value})
                outcome = RecordOutcome.FINISHED
            entry.record = job
            self._changed.notify_all()
            return outcome

    def cancel(self, job_id: str, message: str) -> tuple[JobRecord | None, bool]:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return None, False
            if entry.record.status.final:
                return entry.record, False
            entry.record = entry.record.evolve(
                status=JobStatus.CANCELLED, completed_at_ms=now_ms(), error_message=message
            )
            self._append(entry, EventKind.FINISHED, {"status": JobStatus.CANCELLED.value})
            self._changed.notify_all()
            return entry.record, True

    def results(self, job_id: str, from_index: int, limit: int) -> tuple[list[ImageResult], bool]:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return [], False
            ordered = [entry.results[i] for i in sorted(entry.results) if i >= from_index]
            return ordered[:limit], len(ordered) > limit

    def result(self, job_id: str, index: int) -> ImageResult | None:
        with self._changed:
            entry = self._jobs.get(job_id)
            return entry.results.get(index) if entry else None

    def events(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        start = int(after) if after else 0
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while True:
                entry = self._jobs.get(job_id)
                if entry is None:
                    return []
                if len(entry.events) > start:
                    return list(entry.events[start:])
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._changed.wait(remaining)

    def list_jobs(
        self,
        status: JobStatus | None,
        job_type: JobType | None,
        after: ListCursor | None,
        limit: int,
        owner: str | None = None,
    ) -> list[JobRecord]:
        with self._changed:
            records = sorted(
                (e.record for e in self._jobs.values()),
                key=lambda r: (r.created_at_ms, r.job_id),
                reverse=True,
            )
        if after is not None:
            records = [r for r in records if (r.created_at_ms, r.job_id) < (after.created_at_ms, after.job_id)]
        matching = [
            r
            for r in records
            if (status is None or r.status is status)
            and (job_type is None or r.job_type is job_type)
            and (owner is None or r.owner == owner)
        ]
        return matching[:limit]

    def purge(self, job_id: str) -> bool:
        with self._changed:
            found = self._jobs.pop(job_id, None) is not None
            self._requests = {k: v for k, v in self._requests.items() if v != job_id}
            self._changed.notify_all()
            return found

    def mean_image_seconds(self, model: str) -> float | None:
        with self._changed:
            return self._image_seconds.get(model)

    def set_webhook_state(self, job_id: str, state: str, attempts: int) -> None:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is not None:
                entry.webhook = (state, attempts)

    def webhook_state(self, job_id: str) -> tuple[str, int]:
        with self._changed:
            entry = self._jobs.get(job_id)
            return entry.webhook if entry else ("", 0)
