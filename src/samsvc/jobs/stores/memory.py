"""The in-process mode's job store: dicts behind one lock, with a condition for event waiters.
Same behaviour as the Redis store (tests/jobs/test_store.py runs both); nothing survives the
process."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from samsvc.jobs.records import EventKind, ImageResult, JobEvent, JobRecord, JobStatus, JobType, now_ms
from samsvc.jobs.store import (
    DEFAULT_ENDING_GRACE_MS,
    DEFAULT_EWMA_WEIGHT,
    DEFAULT_MEMORY_MAX_JOBS,
    DEFAULT_RETENTION_S,
    Begin,
    BeginOutcome,
    ListCursor,
    PendingImage,
    RecordOutcome,
    final_status,
    queued_images_refusal,
)


@dataclass
class _MemoryJob:
    record: JobRecord
    results: dict[int, ImageResult] = field(default_factory=dict)
    events: list[JobEvent] = field(default_factory=list)
    webhook: tuple[str, int] = ("", 0)
    ledger: dict[int, PendingImage] = field(default_factory=dict)

    def image(self, index: int) -> PendingImage:
        return self.ledger.get(index) or PendingImage(index, touched_ms=self.record.created_at_ms)


def cursor_position(cursor: str) -> int:
    """The event count a cursor names ("12", or "12-0" as the Redis store's cursors look)."""
    return int(cursor.split("-", 1)[0]) if cursor else 0


class MemoryJobStore:
    def __init__(
        self,
        retention_s: int = DEFAULT_RETENTION_S,
        max_jobs: int = DEFAULT_MEMORY_MAX_JOBS,
        ending_grace_ms: int = DEFAULT_ENDING_GRACE_MS,
    ) -> None:
        self.retention_s = retention_s
        self.max_jobs = max_jobs
        self.ending_grace_ms = ending_grace_ms
        self._jobs: dict[str, _MemoryJob] = {}
        self._requests: dict[str, str] = {}
        self._by_owner: dict[str, set[str]] = {}
        self._image_seconds: dict[str, float] = {}
        self._active: set[str] = set()
        self._retries: dict[tuple[str, int], int] = {}
        self._outbox: dict[str, int] = {}
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
            gone = self._jobs.pop(job_id, None)
            if gone is not None:
                self._by_owner.get(gone.record.owner, set()).discard(job_id)
        live = set(self._jobs)
        self._requests = {k: v for k, v in self._requests.items() if v in live}

    def _end(self, entry: _MemoryJob, status: JobStatus, stamp: int, **changes: object) -> None:
        entry.record = entry.record.evolve(status=status, completed_at_ms=stamp, **changes)
        self._append(entry, EventKind.FINISHED, {"status": status.value})
        self._active.discard(entry.record.job_id)
        if entry.record.job_type.queued:
            self._outbox[entry.record.job_id] = stamp + self.ending_grace_ms

    def create(
        self,
        job: JobRecord,
        early_results: Sequence[ImageResult] = (),
        request_id: str = "",
        queued_limit: int = 0,
    ) -> tuple[JobRecord, bool]:
        with self._changed:
            self._expire()
            if request_id and request_id in self._requests and self._requests[request_id] in self._jobs:
                return self._jobs[self._requests[request_id]].record, False
            if queued_limit and job.job_type.queued:
                queued = sum(
                    self._jobs[other].record.remaining_images
                    for other in self._active
                    if other in self._jobs and self._jobs[other].record.owner == job.owner
                )
                if queued + job.total_images - len(early_results) > queued_limit:
                    raise queued_images_refusal(queued, job, len(early_results), queued_limit)
            entry = _MemoryJob(record=job)
            self._jobs[job.job_id] = entry
            self._by_owner.setdefault(job.owner, set()).add(job.job_id)
            if request_id:
                self._requests[request_id] = job.job_id
            if not job.status.final:  # created ended: a Segment call kept as its status only
                self._append(entry, EventKind.ACCEPTED, {"total_images": job.total_images})
            if job.job_type.queued:
                self._active.add(job.job_id)
            for result in early_results:
                self._record(entry, result, job.spec.model)
            self._changed.notify_all()
            return entry.record, True

    def get(self, job_id: str) -> JobRecord | None:
        with self._changed:
            entry = self._jobs.get(job_id)
            return entry.record if entry else None

    def record_result(self, job_id: str, result: ImageResult, model: str) -> RecordOutcome:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return RecordOutcome.MISSING
            outcome = self._record(entry, result, model)
            self._changed.notify_all()
            return outcome

    def _record(self, entry: _MemoryJob, result: ImageResult, model: str) -> RecordOutcome:
        job = entry.record
        if job.status.final or result.index in entry.results:
            return RecordOutcome.IGNORED
        entry.results[result.index] = result
        entry.ledger.pop(result.index, None)
        self._retries.pop((job.job_id, result.index), None)
        stamp = now_ms()
        entry.record = job = job.evolve(
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
        if job.remaining_images == 0:
            self._end(entry, final_status(job), stamp)
            return RecordOutcome.FINISHED
        return RecordOutcome.RECORDED

    def cancel(self, job_id: str, message: str) -> tuple[JobRecord | None, bool]:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return None, False
            if entry.record.status.final:
                return entry.record, False
            self._end(entry, JobStatus.CANCELLED, now_ms(), error_message=message)
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
        start = cursor_position(after)
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
            ids = self._jobs.keys() if owner is None else self._by_owner.get(owner, set())
            records = sorted(
                (self._jobs[job_id].record for job_id in ids),
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
            gone = self._jobs.pop(job_id, None)
            found = gone is not None
            if gone is not None:
                self._by_owner.get(gone.record.owner, set()).discard(job_id)
            self._requests = {k: v for k, v in self._requests.items() if v != job_id}
            self._active.discard(job_id)
            self._outbox.pop(job_id, None)
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

    # --- the image ledger ----------------------------------------------------------------------

    def _open(self, job_id: str, index: int) -> _MemoryJob | None:
        """The job, if the image still needs work (the job runs and the image has no result)."""
        entry = self._jobs.get(job_id)
        if entry is None or entry.record.status.final or index in entry.results:
            return None
        return entry

    def begin_image(self, job_id: str, index: int, token: str, lease_ms: int, max_crashes: int) -> Begin:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return Begin(BeginOutcome.MISSING)
            if self._open(job_id, index) is None:
                return Begin(BeginOutcome.SKIP)
            image = entry.image(index)
            stamp = now_ms()
            if image.lease_token not in ("", token) and image.lease_until_ms > stamp:
                return Begin(BeginOutcome.BUSY)
            if image.crashes >= max_crashes:
                return Begin(BeginOutcome.CRASHED, image.failures, image.crashes)
            entry.ledger[index] = replace(
                image, started=image.started + 1, lease_token=token, lease_until_ms=stamp + lease_ms
            )
            if entry.record.status is JobStatus.QUEUED:
                entry.record = entry.record.evolve(status=JobStatus.PROCESSING, started_at_ms=stamp)
            return Begin(BeginOutcome.RUN, image.failures, image.crashes)

    def hold_image(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        with self._changed:
            entry = self._open(job_id, index)
            if entry is None:
                return False
            image = entry.image(index)
            stamp = now_ms()
            if image.lease_token not in ("", token) and image.lease_until_ms > stamp:
                return False
            entry.ledger[index] = replace(image, lease_token=token, lease_until_ms=stamp + lease_ms)
            return True

    def renew_lease(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        with self._changed:
            entry = self._open(job_id, index)
            if entry is None or entry.image(index).lease_token != token:
                return False
            entry.ledger[index] = replace(entry.image(index), lease_until_ms=now_ms() + lease_ms)
            return True

    def release_image(self, job_id: str, index: int, token: str, *, ended: bool) -> None:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None or index in entry.results:
                return
            image = entry.image(index)
            if image.lease_token == token:
                image = replace(image, lease_token="", lease_until_ms=0)
            entry.ledger[index] = replace(image, ended=image.ended + (1 if ended else 0))

    def schedule_retry(self, job_id: str, index: int, token: str, due_ms: int) -> int:
        with self._changed:
            entry = self._open(job_id, index)
            if entry is None:
                return 0
            image = entry.image(index)
            entry.ledger[index] = image = replace(
                image,
                ended=image.ended + 1,
                failures=image.failures + 1,
                lease_token="" if image.lease_token == token else image.lease_token,
                lease_until_ms=0 if image.lease_token == token else image.lease_until_ms,
                touched_ms=due_ms,
            )
            self._retries[(job_id, index)] = due_ms
            return image.failures

    def take_due_retries(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        with self._changed:
            due = sorted((at, key) for key, at in self._retries.items() if at <= now_ms)[:limit]
            for _, key in due:
                del self._retries[key]
            return [key for _, key in due]

    def mark_enqueued(self, job_id: str, indexes: Sequence[int]) -> None:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return
            stamp = now_ms()
            for index in indexes:
                entry.ledger[index] = replace(entry.image(index), touched_ms=stamp)

    def requeue_lost(self, job_id: str, index: int) -> int:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return 0
            image = entry.image(index)
            entry.ledger[index] = image = replace(image, requeues=image.requeues + 1, touched_ms=now_ms())
            return image.requeues

    def pending_images(self, job_id: str) -> list[PendingImage]:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None:
                return []
            total = entry.record.total_images
            return [entry.image(i) for i in range(total) if i not in entry.results]

    def active_jobs(self, limit: int) -> list[str]:
        with self._changed:
            return sorted(self._active)[:limit]

    def forget_active(self, job_id: str) -> None:
        with self._changed:
            self._active.discard(job_id)

    def finish_if_complete(self, job_id: str) -> JobRecord | None:
        with self._changed:
            entry = self._jobs.get(job_id)
            if entry is None or entry.record.status.final or len(entry.results) < entry.record.total_images:
                return None
            self._end(entry, final_status(entry.record), now_ms())
            self._changed.notify_all()
            return entry.record

    def overdue_endings(self, now_ms: int, limit: int) -> list[str]:
        with self._changed:
            return [job_id for at, job_id in sorted((at, j) for j, at in self._outbox.items()) if at <= now_ms][:limit]

    def defer_ending(self, job_id: str, due_ms: int) -> None:
        with self._changed:
            if job_id in self._outbox:
                self._outbox[job_id] = due_ms

    def ending_done(self, job_id: str) -> None:
        with self._changed:
            self._outbox.pop(job_id, None)
