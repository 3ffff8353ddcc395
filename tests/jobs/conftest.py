"""Both job stores, for tests that must hold for each: memory, and Redis on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from samsvc.encoding.masks import MaskEncoding
from samsvc.engine.amg_types import AmgOptions
from samsvc.jobs.records import JobRecord, JobSpec, JobStatus, JobType
from samsvc.jobs.service import new_job_id
from samsvc.jobs.store import JobStore
from samsvc.jobs.stores.memory import MemoryJobStore
from samsvc.jobs.stores.redis import RedisJobStore
from tests.support import RedisServer
from tests.support.starts import starts

SPEC = JobSpec("tiny", AmgOptions(points_per_side=2), MaskEncoding.RLE, False)
#: Milliseconds after a job ends before its ending is overdue, in these stores.
ENDING_GRACE_MS = 60_000


@starts("redis", scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@starts("redis", when_param="redis", params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> JobStore:
    if request.param == "memory":
        return MemoryJobStore(ending_grace_ms=ENDING_GRACE_MS)
    redis_server: RedisServer = request.getfixturevalue("redis_server")
    prefix = f"test{new_job_id(JobType.BATCH)[-8:]}"
    store = RedisJobStore.from_url(redis_server.url, prefix=prefix)
    store.ending_grace_ms = ENDING_GRACE_MS
    return store


def job(total: int = 3, created: int | None = None, kind: JobType = JobType.BATCH) -> JobRecord:
    record = JobRecord(new_job_id(kind), kind, JobStatus.QUEUED, total, SPEC)
    return record.evolve(created_at_ms=created) if created else record
