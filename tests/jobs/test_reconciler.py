"""The reconciler's decisions, on the embedded runtime with no worker running (messages stay in
the stub broker's queues, where the test can lose them), and its lock on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from samsvc.config import Settings
from samsvc.jobs.queues import IMAGE_QUEUES, WEBHOOK_QUEUE, Priority
from samsvc.jobs.records import JobStatus, now_ms
from samsvc.jobs.recovery.leader import LocalLeadership, RedisLeadership
from samsvc.jobs.recovery.reconciler import Reconciler
from samsvc.jobs.runtime import JobRuntime
from samsvc.jobs.service import BatchImage, JobService
from samsvc.jobs.store import BeginOutcome
from samsvc.jobs.wiring import build_runtime
from samsvc.jobs.worker.broker import waiting_images
from tests.faults import FAST_RECOVERY
from tests.jobs.conftest import SPEC
from tests.support import RedisServer, encode, scene, wait_for


@pytest.fixture
def runtime(base_settings: Settings, tmp_path: Path) -> Iterator[JobRuntime]:
    settings = base_settings.model_copy(
        update={**FAST_RECOVERY, "reconcile_grace_s": 0.0, "job_max_retries": 1, "data_dir": str(tmp_path / "data")}
    )
    runtime = build_runtime(settings.job_options(), lambda: None)  # type: ignore[arg-type, return-value]
    yield runtime
    runtime.leases.stop()


def submit(runtime: JobRuntime, count: int, webhook_url: str = "") -> str:
    images = [BatchImage(encode(scene(32, 24, seed=i))) for i in range(count)]
    job, _ = JobService(runtime).submit(images, SPEC, webhook_url=webhook_url)
    return job.job_id


def lose_queued_messages(runtime: JobRuntime) -> None:
    runtime.broker.flush(IMAGE_QUEUES[Priority.NORMAL])


def repairs(action: str) -> float:
    return REGISTRY.get_sample_value("samsvc_reconciler_repairs_total", {"action": action}) or 0.0


def test_lost_images_are_queued_again_then_failed_when_the_budget_is_spent(runtime: JobRuntime) -> None:
    reconciler = Reconciler(runtime, LocalLeadership())
    job_id = submit(runtime, 2)
    assert waiting_images(runtime.broker) == {(job_id, 0), (job_id, 1)}
    assert reconciler.sweep().requeued == 0, "queued messages are alive"

    lose_queued_messages(runtime)
    before = repairs("image_requeued")
    sweeps = REGISTRY.get_sample_value("samsvc_reconciler_sweeps_total", {"outcome": "ok"}) or 0.0
    report = reconciler.sweep()
    assert (report.requeued, report.failed) == (2, 0)
    assert waiting_images(runtime.broker) == {(job_id, 0), (job_id, 1)}
    assert repairs("image_requeued") == before + 2, "repairs are counted in metrics"
    assert REGISTRY.get_sample_value("samsvc_reconciler_sweeps_total", {"outcome": "ok"}) == sweeps + 1

    lose_queued_messages(runtime)  # lost again: the budget (JOB_MAX_RETRIES = 1) is spent
    report = reconciler.sweep()
    assert (report.requeued, report.failed) == (0, 2)
    job = runtime.store.get(job_id)
    assert job is not None and job.status is JobStatus.FAILED
    results, _ = runtime.store.results(job_id, 0, 10)
    assert [r.error.reason for r in results if r.error] == ["IMAGE_LOST", "IMAGE_LOST"]
    assert job_id not in runtime.store.active_jobs(100)


def test_an_image_a_worker_holds_is_left_alone(runtime: JobRuntime) -> None:
    reconciler = Reconciler(runtime, LocalLeadership())
    job_id = submit(runtime, 1)
    lose_queued_messages(runtime)
    assert runtime.leases.hold(job_id, 0, "a-worker")
    assert reconciler.sweep().requeued == 0
    runtime.leases.forget("a-worker")
    runtime.store.release_image(job_id, 0, "a-worker", ended=False)
    assert reconciler.sweep().requeued == 1, "once nobody holds it, it is lost"


def test_a_delivery_that_died_mid_image_counts_towards_crashed_worker(runtime: JobRuntime) -> None:
    reconciler = Reconciler(runtime, LocalLeadership())
    job_id = submit(runtime, 1)
    lose_queued_messages(runtime)
    assert runtime.store.begin_image(job_id, 0, "dies", 1, 1).outcome is BeginOutcome.RUN  # never ends
    wait_for(lambda: runtime.store.pending_images(job_id)[0].lease_until_ms < now_ms(), what="the lease to lapse")
    assert reconciler.sweep().requeued == 1
    lose_queued_messages(runtime)
    assert reconciler.sweep().failed == 1
    (result,), _ = runtime.store.results(job_id, 0, 10)
    assert result.error is not None and result.error.reason == "IMAGE_CRASHED_WORKER"


def test_due_retries_are_queued(runtime: JobRuntime) -> None:
    reconciler = Reconciler(runtime, LocalLeadership())
    job_id = submit(runtime, 2)
    lose_queued_messages(runtime)
    runtime.store.schedule_retry(job_id, 1, "", now_ms())
    assert reconciler.queue_due_retries() == 1
    assert waiting_images(runtime.broker) == {(job_id, 1)}


def test_an_ending_left_undone_is_finished(runtime: JobRuntime) -> None:
    reconciler = Reconciler(runtime, LocalLeadership())
    job_id = submit(runtime, 1, webhook_url="https://example.com/hook")
    runtime.store.cancel(job_id, "stop")  # ended, and nobody ran its clean-up
    assert (Path(runtime.options.data_dir) / job_id).exists()
    runtime.store.defer_ending(job_id, now_ms())
    assert reconciler.finish_endings() == 1
    assert not (Path(runtime.options.data_dir) / job_id).exists(), "its images are removed"
    assert runtime.broker.queues[WEBHOOK_QUEUE].qsize() == 1, "its webhook is queued"
    assert reconciler.finish_endings() == 0, "deferred while the webhook is attempted"


@pytest.mark.redis
def test_one_reconciler_acts_at_a_time(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    try:
        client = redis.Redis.from_url(server.url)
        first = RedisLeadership(client, "samsvc:reconciler", ttl_ms=300)
        second = RedisLeadership(client, "samsvc:reconciler", ttl_ms=300)
        assert first.acquire() and not second.acquire()
        assert first.acquire(), "its holder keeps it"
        first.release()
        assert second.acquire()
        wait_for(lambda: first.acquire(), timeout=10, what="the silent holder's lock to expire")
        assert not second.acquire(), "the lock moved"
    finally:
        server.stop()
