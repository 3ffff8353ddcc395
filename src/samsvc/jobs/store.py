"""Where jobs, per-image results, event logs and the image ledger live: one interface, two
backends, as Dramatiq keeps its brokers:

- RedisJobStore (samsvc.jobs.stores.redis): shared by servers and workers; survives restarts.
- MemoryJobStore (samsvc.jobs.stores.memory): the in-process mode; one process, nothing survives
  a restart.

Recording a result is idempotent: an image's first result wins, later ones (a redelivered
message after a worker crash, a retry) change nothing. The event log of a job is append-only;
a cursor names a position in it.

The image ledger is what makes every accepted image end recorded whatever fails: per image,
the deliveries begun and ended (a delivery that began and never ended died with its worker),
transient failures, re-enqueues by the reconciler, the lease of the worker holding it (renewed
while it runs) and when it was last queued. Jobs that have not ended are indexed (`active`),
retries wait in a schedule with their due time, and ended jobs whose clean-up and webhook are
not done yet wait in an outbox; the reconciler (samsvc.jobs.recovery.reconciler) reads all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from samsvc.errors import ResourceExhausted
from samsvc.jobs.records import ImageResult, JobEvent, JobRecord, JobStatus, JobType

#: How long a job, its results and its events are kept after creation or their last change.
DEFAULT_RETENTION_S = 24 * 3600
#: Weight of the newest image time in a model's running mean.
DEFAULT_EWMA_WEIGHT = 0.2
#: The most jobs the memory store keeps; the oldest ended ones go first.
DEFAULT_MEMORY_MAX_JOBS = 10_000
#: Milliseconds after a job ends before the reconciler finishes its clean-up and webhook, if the
#: process that ended it did not.
DEFAULT_ENDING_GRACE_MS = 60_000


class RecordOutcome(Enum):
    #: The job does not exist (expired or never created).
    MISSING = "missing"
    #: This image already has a result, or the job has ended: nothing changed.
    IGNORED = "ignored"
    #: The result was recorded; the job goes on.
    RECORDED = "recorded"
    #: The result was recorded and was the job's last: the job has ended.
    FINISHED = "finished"


class BeginOutcome(Enum):
    #: The job does not exist (expired, purged).
    MISSING = "missing"
    #: The job has ended or the image has its result: nothing to do.
    SKIP = "skip"
    #: Another delivery holds the image's lease (a duplicate message): leave it to that one.
    BUSY = "busy"
    #: Earlier deliveries died mid-image (the worker was killed) as often as allowed.
    CRASHED = "crashed"
    #: Run the image.
    RUN = "run"


@dataclass(frozen=True)
class Begin:
    outcome: BeginOutcome
    #: Transient failures of this image so far.
    failures: int = 0
    #: Deliveries that began and never ended (their worker died).
    crashes: int = 0


@dataclass(frozen=True)
class PendingImage:
    """The ledger of an image that has no result yet."""

    index: int
    lease_token: str = ""
    lease_until_ms: int = 0
    started: int = 0
    ended: int = 0
    failures: int = 0
    requeues: int = 0
    #: When it was last queued (or, for a retry, when it is due).
    touched_ms: int = 0

    @property
    def crashes(self) -> int:
        return max(self.started - self.ended, 0)


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
        self,
        job: JobRecord,
        early_results: Sequence[ImageResult] = (),
        request_id: str = "",
        queued_limit: int = 0,
    ) -> tuple[JobRecord, bool]:
        """Store a new job, its ACCEPTED event and the results known at submission (images
        refused by their header), all at once. With a request_id already used, return that job
        and False instead. With `queued_limit`, refuse (ResourceExhausted) a batch that would
        bring its owner's images still to run above it."""

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

    # --- the image ledger ----------------------------------------------------------------------

    def begin_image(self, job_id: str, index: int, token: str, lease_ms: int, max_crashes: int) -> Begin:
        """A delivery `token` starts the image: unless it must not run (see BeginOutcome), count
        the delivery and take the image's lease for `lease_ms`."""

    def hold_image(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        """A worker took the image's message off the queue (it may wait there behind others):
        take the lease unless another delivery holds it or nothing is left to do."""

    def renew_lease(self, job_id: str, index: int, token: str, lease_ms: int) -> bool:
        """Extend the lease `token` holds; False when it holds none."""

    def release_image(self, job_id: str, index: int, token: str, *, ended: bool) -> None:
        """Drop the lease `token` holds; `ended`: its delivery began and is over without a result
        (the job was cancelled)."""

    def schedule_retry(self, job_id: str, index: int, token: str, due_ms: int) -> int:
        """The delivery ended in a transient failure: count it, drop the lease and schedule the
        image for `due_ms`. Returns the failures so far."""

    def take_due_retries(self, now_ms: int, limit: int) -> list[tuple[str, int]]:
        """Remove and return up to `limit` (job id, index) whose retry is due."""

    def mark_enqueued(self, job_id: str, indexes: Sequence[int]) -> None:
        """The images were queued now (the reconciler leaves them alone for its grace time)."""

    def requeue_lost(self, job_id: str, index: int) -> int:
        """The reconciler queues a lost image again: count it; returns the re-enqueues so far."""

    def pending_images(self, job_id: str) -> list[PendingImage]:
        """The ledger of every image of the job that has no result yet."""

    def active_jobs(self, limit: int) -> list[str]:
        """Ids of jobs that have not ended (at most `limit`)."""

    def forget_active(self, job_id: str) -> None: ...

    def finish_if_complete(self, job_id: str) -> JobRecord | None:
        """End a job whose every image has its result but which has not ended; returns it."""

    def overdue_endings(self, now_ms: int, limit: int) -> list[str]:
        """Ended jobs whose clean-up or webhook is due and not done."""

    def defer_ending(self, job_id: str, due_ms: int) -> None:
        """Look at the ended job's clean-up and webhook again at `due_ms` unless done by then."""

    def ending_done(self, job_id: str) -> None: ...


def queued_images_refusal(queued: int, job: JobRecord, early: int, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"this key has {queued} batch images still to run; {job.total_images - early} more would pass its limit of "
        f"{limit} (MAX_QUEUED_IMAGES_PER_KEY): wait for some to finish",
        reason="QUEUED_IMAGES_LIMIT",
        retry_after=30.0,
    )


def final_status(job: JobRecord) -> JobStatus:
    return JobStatus.COMPLETED if job.succeeded_images > 0 else JobStatus.FAILED
