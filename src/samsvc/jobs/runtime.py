"""Everything a job needs at run time, once per process: the store, the blob store, the broker
and its actors, the image leases, and (in workers) the models; built by samsvc.jobs.wiring,
where the in-process mode and the Redis mode differ (in which store and broker are plugged in);
the code above them is the same.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import dramatiq
import redis

from samsvc.engine.costs import WorkCost, grid_work
from samsvc.errors import Unavailable
from samsvc.infra import metrics
from samsvc.infra.logs import REQUEST_ID
from samsvc.jobs import failpoints
from samsvc.jobs.blobs import BlobStore
from samsvc.jobs.export import DEFAULT_MANIFEST_PAGE, ExportWriter, write_manifest
from samsvc.jobs.options import JobOptions
from samsvc.jobs.queues import ACTOR_PRIORITIES, IMAGE_QUEUES, Priority
from samsvc.jobs.records import ImageResult, JobRecord, JobTask, now_ms
from samsvc.jobs.recovery.leases import LeaseKeeper
from samsvc.jobs.store import JobStore
from samsvc.jobs.stores.redis_base import DEFAULT_PREFIX
from samsvc.jobs.worker.broker import IMAGE_ACTORS, WEBHOOK_ACTOR, queue_depth
from samsvc.jobs.worker.presence import live_worker_threads
from samsvc.validation.webhook_url import WebhookPolicy

if TYPE_CHECKING:  # the engine loads in the processes that run it, not in every importer
    from samsvc.engine.loader import ModelManager

log = logging.getLogger(__name__)

#: Seconds per image assumed before any has been measured for a model.
DEFAULT_IMAGE_SECONDS_GUESS = 10.0
#: Webhook states after which nothing more is sent.
WEBHOOK_FINAL_STATES = frozenset({"delivered", "refused", "failed"})
#: First and longest pause between attempts of a store call retried through an outage.
STORE_RETRY_FIRST_S = 0.1
STORE_RETRY_LONGEST_S = 5.0

T = TypeVar("T")


@dataclass
class JobRuntime:
    options: JobOptions
    store: JobStore
    blobs: BlobStore
    broker: dramatiq.Broker
    models_factory: Callable[[], ModelManager]
    leases: LeaseKeeper
    redis_client: redis.Redis | None = None
    #: Worker threads in this process (the in-process mode's workers).
    local_worker_threads: int = 0
    #: Where this process runs the engine for batch images: the server's inference lanes in
    #: in-process mode (samsvc.engine.threads), so a batch image alone gets the CPUs' torch threads
    #: and never throttles a click's; None: on the worker thread itself.
    compute: Executor | None = None

    @cached_property
    def models(self) -> ModelManager:
        return self.models_factory()

    @cached_property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy(list(self.options.webhooks.allowed_hosts))

    @property
    def in_process(self) -> bool:
        """Jobs run in this process (no Redis): the memory store and the stub broker."""
        return self.redis_client is None

    def run_engine(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` where this process runs the engine (`compute`), waiting for it."""
        return fn(*args) if self.compute is None else self.compute.submit(fn, *args).result()

    def enqueue_image(self, job_id: str, index: int, priority: Priority) -> None:
        failpoints.hit("jobs.enqueue", job_id=job_id, index=index)
        self._send(IMAGE_ACTORS[priority], job_id, index)

    def enqueue_webhook(self, job_id: str) -> None:
        self._send(WEBHOOK_ACTOR, job_id)

    def _send(self, actor_name: str, *args: Any) -> None:
        """Send to the actor of that name on this runtime's broker (samsvc.jobs.wiring declares
        them when it builds the runtime)."""
        actor = self.broker.get_actor(actor_name)
        try:
            actor.send_with_options(args=args, correlation_id=REQUEST_ID.get())
        except redis.RedisError as exc:
            log.warning("could not queue %s%s: %s", actor.actor_name, args, exc)
            raise Unavailable("the job queue is unreachable; try again shortly", reason="QUEUE_UNAVAILABLE") from exc

    def job_ended(self, job: JobRecord, *, count: bool = True) -> None:
        """Clean up after a job reached its end state: drop its images (its outputs stay for the
        retention time), send its webhook.
        Idempotent: the reconciler calls it again (count False) for a job whose ending process
        died first; the job stays in the store's outbox until its webhook is settled."""
        if count:
            metrics.JOBS_ENDED.labels(job.status.value).inc()
        if job.spec.export_url:
            self._write_manifest(job)
        self.blobs.delete_inputs(job.job_id)
        state = self.store.webhook_state(job.job_id)[0] if job.webhook_url else ""
        if job.webhook_url and state not in WEBHOOK_FINAL_STATES:
            self.store.defer_ending(job.job_id, now_ms() + self.webhook_patience_ms)
            self.enqueue_webhook(job.job_id)
        else:
            self.store.ending_done(job.job_id)

    def _write_manifest(self, job: JobRecord) -> None:
        """The export's manifest (every image's objects); written again if the job's ending is
        repeated, with the same content."""

        def results() -> Iterator[ImageResult]:
            start = 0
            while True:
                page, more = self.store.results(job.job_id, start, DEFAULT_MANIFEST_PAGE)
                yield from page
                if not more or not page:
                    return
                start = page[-1].index + 1

        writer = ExportWriter(job.spec.export_url, self.options.s3, self.options.export_roots)
        write_manifest(writer, job.job_id, job.status.value, results())

    @property
    def webhook_patience_ms(self) -> int:
        """How long a webhook attempt may take, its longest backoff included, before the
        reconciler sends it again."""
        webhooks = self.options.webhooks
        return int(webhooks.max_backoff_ms + webhooks.timeout_s * 1000 + self.options.reconcile_grace_s * 1000)

    def durably(self, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`call(*args)`, retried through a store outage for up to JOB_STORE_RETRY_S (then
        the outage's Unavailable is raised: the reconciler repairs what was not written)."""
        deadline = time.monotonic() + self.options.store_retry_s
        pause = STORE_RETRY_FIRST_S
        while True:
            try:
                return call(*args, **kwargs)
            except Unavailable:
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("job store unreachable; retrying %s in %.1f s", getattr(call, "__name__", call), pause)
                time.sleep(pause)
                pause = min(pause * 2, STORE_RETRY_LONGEST_S)

    def live_workers(self) -> tuple[int, int]:
        """(worker processes, worker threads) able to run images now."""
        if self.redis_client is None:
            return (1, self.local_worker_threads) if self.local_worker_threads else (0, 0)
        return live_worker_threads(self.redis_client, DEFAULT_PREFIX)

    def image_cost(self, job: JobRecord, expected: Callable[[WorkCost], float | None]) -> WorkCost:
        """What each image of `job` runs (from its options) and is expected to take: the mean of
        its own finished images (once one has succeeded: an image refused at once says little of
        the rest); before, `expected` (the model's figures measured where the
        estimate is made), else recent images of its model, else DEFAULT_IMAGE_SECONDS_GUESS."""
        work = WorkCost(1, 0) if job.spec.task is JobTask.EMBED else grid_work(job.spec.options)
        if job.succeeded_images:
            seconds = job.image_seconds / job.processed_images
        else:
            seconds = expected(work) or self.store.mean_image_seconds(job.spec.model) or DEFAULT_IMAGE_SECONDS_GUESS
        return WorkCost(work.encoder_passes, work.prompts, seconds)

    def estimate_seconds(self, job: JobRecord, image_s: float | None = None) -> int:
        """Seconds until `job` ends: seconds per image (`image_s`, else recent images of its
        model), the images queued at its priority or above, and the live worker threads."""
        if job.status.final:
            return 0
        mean = image_s or self.store.mean_image_seconds(job.spec.model) or DEFAULT_IMAGE_SECONDS_GUESS
        rank = ACTOR_PRIORITIES[job.priority]
        queues = [IMAGE_QUEUES[p] for p, r in ACTOR_PRIORITIES.items() if r <= rank]
        try:
            ahead = queue_depth(self.broker, queues)
            _, threads = self.live_workers()
        except redis.RedisError as exc:
            log.warning("no estimate for job %s: %s", job.job_id, exc)
            raise Unavailable("the job queue is unreachable; try again shortly", reason="QUEUE_UNAVAILABLE") from exc
        work = max(ahead, job.remaining_images)
        return math.ceil(math.ceil(work / max(threads, 1)) * mean)
