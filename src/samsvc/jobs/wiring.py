"""The job machinery of a process, wired in one place: the store, blob store and broker the
options choose (the in-process mode and the Redis mode differ only here), the image leases the
broker's consumers take, the runtime, and the actors, which close over the runtime and are found
by name on the broker when a job sends work (so the runtime never waits to be told its actors).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import redis

from samsvc.infra.object_storage import S3Options, parse_location
from samsvc.infra.redis_connection import connect
from samsvc.jobs import failpoints
from samsvc.jobs.blobs import BlobStore
from samsvc.jobs.options import JobOptions
from samsvc.jobs.recovery.leases import LeaseKeeper
from samsvc.jobs.runtime import JobRuntime
from samsvc.jobs.store import JobStore
from samsvc.jobs.stores.memory import MemoryJobStore
from samsvc.jobs.stores.redis import RedisJobStore
from samsvc.jobs.stores.redis_base import DEFAULT_PREFIX
from samsvc.jobs.worker.actors import declare_actors
from samsvc.jobs.worker.broker import build_broker
from samsvc.jobs.worker.presence import WorkerPresence

if TYPE_CHECKING:  # the engine loads in the processes that run it, not in every importer
    from samsvc.engine.loader import ModelManager


def open_store(options: JobOptions) -> tuple[JobStore, redis.Redis | None]:
    """The job store REDIS_URL chooses (Redis, or memory without it), and its Redis client."""
    grace_ms = int(options.reconcile_grace_s * 1000)
    if not options.redis_url:
        return MemoryJobStore(retention_s=options.retention_s, ending_grace_ms=grace_ms), None
    client = connect(options.redis_url)
    return RedisJobStore(client, retention_s=options.retention_s, ending_grace_ms=grace_ms), client


def open_blob_store(data_dir: str | Path, s3: S3Options) -> BlobStore:
    """The blob store DATA_DIR names: a folder, or an `s3://bucket/prefix`."""
    location = parse_location(data_dir, "DATA_DIR")
    if location.path is not None:
        from samsvc.jobs.blob_stores.local import LocalBlobStore

        return LocalBlobStore(location.path)
    from samsvc.jobs.blob_stores.s3 import S3BlobStore

    return S3BlobStore(location, s3)


def build_runtime(
    options: JobOptions, models_factory: Callable[[], ModelManager], *, worker: bool = False
) -> JobRuntime:
    """Wire the runtime for `options`: store, leases, broker (whose consumers take the leases),
    blob store, the runtime, then its actors; `worker` adds the presence announcements."""
    if options.failpoints:
        failpoints.configure(options.failpoints)
    store, client = open_store(options)
    leases = LeaseKeeper(store, options.lease_s)
    broker = build_broker(options, leases)
    if worker and client is not None:
        broker.add_middleware(WorkerPresence(client, DEFAULT_PREFIX))
    runtime = JobRuntime(
        options=options,
        store=store,
        blobs=open_blob_store(options.data_dir, options.s3),
        broker=broker,
        models_factory=models_factory,
        leases=leases,
        redis_client=client,
    )
    declare_actors(runtime)
    return runtime
