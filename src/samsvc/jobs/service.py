"""The one entry to jobs for the server: starting and stopping the job machinery of a process
(runtime, in-process workers, reconciler, event feed), and the job operations (submit, status,
results, cancel, list, follow, health, recording synchronous Segment calls as single jobs).
The operations block on store I/O: the server runs them in its store thread pool."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import dramatiq
import redis

from samsvc.engine.costs import WorkCost
from samsvc.engine.loader import ModelManager
from samsvc.errors import NotFound, SamsvcError, Unavailable
from samsvc.infra import metrics
from samsvc.jobs import failpoints
from samsvc.jobs.event_feed import EventFeed, PollingEventFeed, RedisEventFeed
from samsvc.jobs.options import JobOptions
from samsvc.jobs.queues import IMAGE_QUEUES, Priority
from samsvc.jobs.records import ImageError, ImageResult, JobEvent, JobRecord, JobSpec, JobStatus, JobType, now_ms
from samsvc.jobs.recovery.reconciler import Reconciler, build_reconciler
from samsvc.jobs.runtime import JobRuntime
from samsvc.jobs.store import ListCursor
from samsvc.jobs.wiring import build_runtime
from samsvc.jobs.worker.broker import queue_depth
from samsvc.jobs.worker.in_process import start_in_process_workers
from samsvc.validation.sources import check_job_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchImage:
    """One submitted image: its bytes when its header passed, or why it was refused."""

    data: bytes | None
    error: ImageError | None = None


@dataclass(frozen=True)
class JobsHealth:
    mode: str
    store_reachable: bool
    live_workers: int
    live_worker_threads: int


def _unknown(work: WorkCost) -> float | None:
    """No figures: estimates fall back on recent images of the model."""
    return None


def new_job_id(kind: JobType) -> str:
    return ("job_" if kind.queued else "seg_") + uuid.uuid4().hex


@dataclass
class _Machinery:
    """What JobService.start runs beside the server, stopped by JobService.stop."""

    reconciler: Reconciler
    feed: EventFeed
    workers: list[dramatiq.Worker] = field(default_factory=list)


class JobService:
    def __init__(self, runtime: JobRuntime) -> None:
        self.runtime = runtime
        self.store = runtime.store
        self._machinery: _Machinery | None = None

    @classmethod
    def start(
        cls, options: JobOptions, models_factory: Callable[[], ModelManager], compute: Executor | None = None
    ) -> JobService:
        """The jobs of a server process: its runtime, the in-process workers when there is no
        Redis (running the engine on `compute`, the server's inference lanes), its reconciler
        (running), and the event feed that job streams wait on."""
        service = cls(build_runtime(options, models_factory))
        runtime = service.runtime
        runtime.compute = compute
        feed: EventFeed = (
            RedisEventFeed.from_url(options.redis_url) if options.redis_url else PollingEventFeed(runtime.store)
        )
        workers = start_in_process_workers(runtime) if runtime.in_process else []
        reconciler = build_reconciler(runtime)
        reconciler.start()
        service._machinery = _Machinery(reconciler, feed, workers)
        return service

    @property
    def feed(self) -> EventFeed:
        if self._machinery is None:
            raise RuntimeError("JobService.start makes the event feed")
        return self._machinery.feed

    @property
    def reconciler(self) -> Reconciler:
        if self._machinery is None:
            raise RuntimeError("JobService.start runs the reconciler")
        return self._machinery.reconciler

    async def close_feed(self) -> None:
        if self._machinery is not None:
            await self._machinery.feed.close()

    def stop(self, timeout_ms: int) -> None:
        """Stop the reconciler, let the in-process workers finish for up to `timeout_ms`, stop
        renewing leases (blocking)."""
        if self._machinery is not None:
            self._machinery.reconciler.stop()
            for worker in self._machinery.workers:
                worker.stop(timeout_ms)
        self.runtime.leases.stop()

    def health(self) -> JobsHealth:
        """The job store's reachability and the live workers (blocking)."""
        # The in-process mode is "embedded" on the wire (CheckHealth's jobs.mode).
        mode = "embedded" if self.runtime.in_process else "redis"
        try:
            self.store.ping()
            processes, threads = self.runtime.live_workers()
        except (Unavailable, redis.RedisError):
            return JobsHealth(mode, False, 0, 0)
        return JobsHealth(mode, True, processes, threads)

    def queue_depths(self) -> dict[str, int]:
        """Image messages waiting per priority (for the queue depth gauge)."""
        return {priority.value: queue_depth(self.runtime.broker, [queue]) for priority, queue in IMAGE_QUEUES.items()}

    def sweep_images(self) -> int:
        """Remove stored images of jobs older than JOB_RETENTION_S (ended jobs remove their
        own); returns how many jobs' images went."""
        return self.runtime.blobs.sweep(float(self.runtime.options.retention_s))

    def submit(
        self,
        images: Sequence[BatchImage],
        spec: JobSpec,
        *,
        priority: Priority = Priority.NORMAL,
        webhook_url: str = "",
        request_id: str = "",
        owner: str = "",
    ) -> tuple[JobRecord, bool]:
        """Store the images, create the job, queue one message per image.

        All or nothing for the caller: until the job is created nothing is (images stored for
        a job that never came to be are swept); once it is, it is accepted, and images that
        could not be queued now are queued by the reconciler after its grace time. With a
        `request_id` seen before, returns that job and False, storing nothing.
        """
        job_id = new_job_id(spec.job_type)
        early = [ImageResult(i, error=img.error) for i, img in enumerate(images) if img.error is not None]
        queued = [(i, img.data) for i, img in enumerate(images) if img.data is not None]
        for index, data in queued:
            self.runtime.blobs.put(job_id, index, data)
        failpoints.hit("jobs.submit.after_blobs", job_id=job_id)
        record = JobRecord(
            job_id=job_id,
            job_type=spec.job_type,
            status=JobStatus.QUEUED,
            total_images=len(images),
            spec=spec,
            priority=priority,
            webhook_url=webhook_url,
            owner=owner,
        )
        try:
            limit = self.runtime.options.max_queued_images_per_key
            job, created = self.store.create(record, early, request_id, queued_limit=limit)
        except SamsvcError:
            self._drop_images_unless_created(job_id)
            raise
        failpoints.hit("jobs.submit.after_create", job_id=job_id)
        if not created:
            self.runtime.blobs.delete_job(job_id)
            return job, False
        metrics.JOBS_SUBMITTED.labels(spec.job_type.value).inc()
        try:
            for index, _ in queued:
                self.runtime.enqueue_image(job_id, index, priority)
                failpoints.hit("jobs.submit.after_enqueue", job_id=job_id, index=index)
        except Unavailable as exc:
            log.warning("job %s accepted; images not queued yet are queued by the reconciler: %s", job_id, exc.message)
        if job.status.final:
            self._ended(job)
        log.info(
            "job %s accepted: %d images, %d refused at once, priority %s",
            job_id,
            len(images),
            len(early),
            priority.value,
        )
        return job, True

    def _drop_images_unless_created(self, job_id: str) -> None:
        """After a failed create: drop the stored images if the job surely does not exist (a
        create whose answer was lost may have happened; then they stay for the job)."""
        try:
            exists = self.store.get(job_id) is not None
        except Unavailable:
            return  # unknown: the blob sweep removes them after JOB_RETENTION_S if no job appears
        if not exists:
            self.runtime.blobs.delete_job(job_id)

    def _ended(self, job: JobRecord) -> None:
        try:
            self.runtime.job_ended(job)
        except Unavailable as exc:
            log.warning("job %s ended; its clean-up waits for the reconciler: %s", job.job_id, exc.message)

    def record_single(self, job_id: str, spec: JobSpec, result: ImageResult, owner: str = "") -> None:
        """Keep a synchronous Segment call as a completed single job: its status, and its masks
        only with SINGLE_JOB_RESULTS (the caller has them in the answer already, and storage
        should grow with batch work, not with calls)."""
        record = JobRecord(
            job_id=job_id,
            job_type=JobType.SINGLE,
            status=JobStatus.QUEUED,
            total_images=1,
            spec=spec,
            owner=owner,
        )
        if self.runtime.options.single_job_results:
            self.store.create(record, [result])
        else:
            stamp = now_ms()
            ended = record.evolve(
                status=JobStatus.COMPLETED if result.succeeded else JobStatus.FAILED,
                succeeded_images=1 if result.succeeded else 0,
                failed_images=0 if result.succeeded else 1,
                image_seconds=result.processing_time_s,
                started_at_ms=stamp - int(result.processing_time_s * 1000),
                completed_at_ms=stamp,
            )
            self.store.create(ended)
        metrics.JOBS_SUBMITTED.labels("single").inc()
        metrics.JOBS_ENDED.labels("completed").inc()

    def get(self, job_id: str, owner: str | None = None) -> JobRecord:
        """The job, if it exists and belongs to `owner` (None: anyone's); NotFound otherwise, so
        that another caller's job ids reveal nothing."""
        job = self.store.get(job_id) if job_id else None
        if job is None or (owner is not None and job.owner != owner):
            raise NotFound(
                f"job {job_id!r} does not exist or has expired", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
            )
        return job

    def cancel(self, job_id: str, owner: str | None = None) -> JobRecord:
        if owner is not None:
            self.get(job_id, owner)
        job, changed = self.store.cancel(job_id, "cancelled by request")
        if job is None:
            raise NotFound(
                f"job {job_id!r} does not exist or has expired", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
            )
        if changed:
            log.info("job %s cancelled", job_id)
            self._ended(job)
        return job

    def results(
        self, job_id: str, from_index: int, limit: int, owner: str | None = None
    ) -> tuple[JobRecord, list[ImageResult], bool]:
        job = self.get(job_id, owner)
        results, more = self.store.results(job_id, from_index, limit)
        return job, results, more

    def result(self, job_id: str, index: int) -> ImageResult | None:
        return self.store.result(job_id, index)

    def events(self, job_id: str, after: str, timeout_s: float) -> list[JobEvent]:
        return self.store.events(job_id, after, timeout_s)

    def list_jobs(
        self,
        status: JobStatus | None,
        job_type: JobType | None,
        after: ListCursor | None,
        limit: int,
        owner: str | None = None,
    ) -> list[JobRecord]:
        return self.store.list_jobs(status, job_type, after, limit, owner)

    def purge(self, job_id: str) -> bool:
        """Cancel the job if it runs, then remove its record, results, events and images;
        returns whether it was running."""
        job, cancelled = self.store.cancel(job_id, "purged by an admin")
        if job is None:
            raise NotFound(
                f"job {job_id!r} does not exist or has expired", reason="JOB_NOT_FOUND", metadata={"job_id": job_id}
            )
        self.store.purge(job_id)
        self.runtime.blobs.delete_job(job_id)
        if cancelled:
            metrics.JOBS_ENDED.labels("cancelled").inc()
        log.info("job %s purged%s", job_id, " (cancelled first)" if cancelled else "")
        return cancelled

    def embedding(self, job_id: str, index: int, owner: str | None = None, *, field: str) -> tuple[bytes, ImageResult]:
        """An embedding job's stored embedding of image `index` (ImageEmbedding.to_bytes, with
        the model, identity, digest and image id in its meta) and the image's result; `field`
        is where the request named the job's image (for the error that refuses it)."""
        job = self.get(job_id, owner)
        check_job_image(job_id, index, job.total_images, embedding_job=job.job_type is JobType.EMBEDDING, field=field)
        result = self.store.result(job_id, index)
        if result is None or not result.succeeded:
            state = "has not finished" if result is None else f"failed ({result.error.reason if result.error else ''})"
            raise NotFound(
                f"image {index} of job {job_id!r} {state}: it has no embedding",
                reason="EMBEDDING_NOT_FOUND",
                metadata={"job_id": job_id, "index": str(index)},
            )
        return self.runtime.blobs.get_output(job_id, index), result

    def estimate(self, job: JobRecord, expected: Callable[[WorkCost], float | None] = _unknown) -> tuple[int, WorkCost]:
        """Seconds until `job` ends, and what each of its images is expected to cost;
        `expected` gives the seconds of some work on the job's model where it is measured."""
        cost = self.runtime.image_cost(job, expected)
        return self.runtime.estimate_seconds(job, cost.compute_s), cost
