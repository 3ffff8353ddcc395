"""Everything a job needs at run time, wired once per process: the store, the blob store,
the broker and its actors, and (in workers) the models.

The embedded mode and the Redis mode differ only here, in which store and broker are
plugged in; the code above them is the same.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dramatiq
import redis

from samsvc import metrics
from samsvc.config import Settings
from samsvc.engine.loader import ModelManager
from samsvc.jobs.blobs import BlobStore, LocalBlobStore
from samsvc.jobs.broker import ACTOR_PRIORITIES, IMAGE_QUEUES, build_broker, queue_depth
from samsvc.jobs.presence import WorkerPresence, live_worker_threads
from samsvc.jobs.records import JobRecord, Priority
from samsvc.jobs.redis_store import DEFAULT_PREFIX, RedisJobStore, connect
from samsvc.jobs.store import JobStore, MemoryJobStore
from samsvc.logs import REQUEST_ID
from samsvc.validation.webhook_url import WebhookPolicy

log = logging.getLogger(__name__)

#: Seconds per image assumed before any has been measured for a model.
DEFAULT_IMAGE_SECONDS_GUESS = 10.0


@dataclass
class JobRuntime:
    settings: Settings
    store: JobStore
    blobs: BlobStore
    broker: dramatiq.Broker
    models_factory: Callable[[], ModelManager]
    redis_client: redis.Redis | None = None
    actors: dict[str, dramatiq.Actor[Any, Any]] = field(default_factory=dict)
    #: Worker threads in this process (the embedded mode's in-process worker).
    local_worker_threads: int = 0

    @cached_property
    def models(self) -> ModelManager:
        return self.models_factory()

    @cached_property
    def webhook_policy(self) -> WebhookPolicy:
        return WebhookPolicy(self.settings.webhook_allowed_hosts)

    def redis_client_bytes(self) -> redis.Redis:
        """A client on the same Redis that returns bytes (the store's decodes text)."""
        return redis.Redis.from_url(self.settings.redis_url or "", decode_responses=False)

    @property
    def embedded(self) -> bool:
        return self.redis_client is None

    def enqueue_image(self, job_id: str, index: int, priority: Priority) -> None:
        actor = self.actors[f"segment_image_{priority.value}"]
        actor.send_with_options(args=(job_id, index), correlation_id=REQUEST_ID.get())

    def enqueue_webhook(self, job_id: str) -> None:
        self.actors["deliver_webhook"].send_with_options(args=(job_id,), correlation_id=REQUEST_ID.get())

    def job_ended(self, job: JobRecord) -> None:
        """Clean up after a job reached its end state: drop its images, send its webhook."""
        metrics.JOBS_ENDED.labels(job.status.value).inc()
        self.blobs.delete_job(job.job_id)
        if job.webhook_url:
            self.enqueue_webhook(job.job_id)

    def live_workers(self) -> tuple[int, int]:
        """(worker processes, worker threads) able to run images now."""
        if self.redis_client is None:
            return (1, self.local_worker_threads) if self.local_worker_threads else (0, 0)
        return live_worker_threads(self.redis_client, DEFAULT_PREFIX)

    def estimate_seconds(self, job: JobRecord) -> int:
        """Seconds until `job` ends: measured seconds per image for its model, the images queued
        at its priority or above, and the live worker threads."""
        if job.status.final:
            return 0
        mean = self.store.mean_image_seconds(job.spec.model) or DEFAULT_IMAGE_SECONDS_GUESS
        rank = ACTOR_PRIORITIES[job.priority]
        queues = [IMAGE_QUEUES[p] for p, r in ACTOR_PRIORITIES.items() if r <= rank]
        ahead = queue_depth(self.broker, queues)
        _, threads = self.live_workers()
        work = max(ahead, job.remaining_images)
        return math.ceil(math.ceil(work / max(threads, 1)) * mean)


def build_runtime(
    settings: Settings, models_factory: Callable[[], ModelManager], *, worker: bool = False
) -> JobRuntime:
    """Wire the runtime for `settings`; `worker` adds the presence announcements."""
    from samsvc.jobs.actors import declare_actors

    broker = build_broker(settings)
    client: redis.Redis | None = None
    store: JobStore
    if settings.redis_url:
        client = connect(settings.redis_url)
        store = RedisJobStore(client, retention_s=settings.job_retention_s)
        if worker:
            broker.add_middleware(WorkerPresence(client, DEFAULT_PREFIX))
    else:
        store = MemoryJobStore(retention_s=settings.job_retention_s)
    runtime = JobRuntime(
        settings=settings,
        store=store,
        blobs=LocalBlobStore(settings.data_dir),
        broker=broker,
        models_factory=models_factory,
        redis_client=client,
    )
    runtime.actors = declare_actors(runtime)
    return runtime
