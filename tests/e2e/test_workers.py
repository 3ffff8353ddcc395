"""Whole-system runs in the Redis mode: real redis-server, real `samsvc worker` processes,
faults forced through real processes (SIGKILL of a worker, of Redis)."""

from __future__ import annotations

import os
import signal

import pytest

from samsvc.config import Settings
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import RedisServer, ServerThread, WorkerProcess, encode, scene, wait_for

pytestmark = pytest.mark.processes  # samsvc's own processes: workers, `samsvc serve`

MEDIUM = pb.SegmentOptions(points_per_side=4, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture
def redis_settings(redis_settings: tuple[Settings, RedisServer]) -> tuple[Settings, RedisServer]:
    """Find dead workers in seconds instead of a minute; retry soon."""
    settings, server = redis_settings
    faster = {
        "broker_heartbeat_timeout_ms": 3000,
        "broker_maintenance_chance": 1_000_000,
        "job_min_backoff_ms": 200,
        "job_max_backoff_ms": 2000,
    }
    return settings.model_copy(update=faster), server


def batch(count: int, size: tuple[int, int] = (128, 96)) -> list[bytes]:
    return [encode(scene(*size, seed=10 + i)) for i in range(count)]


def wait_status(server: ServerThread, job_id: str, status: int, timeout: float = 240) -> job_pb2.Job:
    def check() -> job_pb2.Job | None:
        job = server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
        return job if job.status == status else None

    return wait_for(check, timeout=timeout, interval=0.2, what=f"job {job_id} to reach status {status}")


def all_results(server: ServerThread, job_id: str) -> list[job_pb2.ImageResult]:
    return list(server.stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id, page_size=50)).results)


def test_high_priority_runs_before_a_low_backlog(redis_settings: tuple[Settings, RedisServer]) -> None:
    settings, _ = redis_settings
    worker = WorkerProcess(settings)
    server = ServerThread(settings)
    try:
        low = server.stub.SubmitBatch(
            pb.SubmitBatchRequest(images=batch(8), options=MEDIUM, priority=job_pb2.PRIORITY_LOW)
        )
        normal = server.stub.SubmitBatch(
            pb.SubmitBatchRequest(images=batch(2), options=MEDIUM, priority=job_pb2.PRIORITY_NORMAL)
        )
        high_events = list(
            server.stub.SegmentBatch(
                pb.SubmitBatchRequest(images=batch(2), options=MEDIUM, priority=job_pb2.PRIORITY_HIGH), timeout=300
            )
        )
        low_when_high_ended = server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=low.job_id)).processed_images
        # One worker thread, prefetch 1: at most the low image running and the one it holds.
        assert low_when_high_ended <= 3
        normal_job = wait_status(server, normal.job_id, job_pb2.JOB_STATUS_COMPLETED)
        low_job = wait_status(server, low.job_id, job_pb2.JOB_STATUS_COMPLETED)
        high_job = high_events[-1].finished.job
        assert high_job.completed_at.ToMilliseconds() < normal_job.completed_at.ToMilliseconds()
        assert normal_job.completed_at.ToMilliseconds() < low_job.completed_at.ToMilliseconds()
    finally:
        server.stop()
        worker.stop()


def test_worker_killed_mid_image_loses_nothing(redis_settings: tuple[Settings, RedisServer]) -> None:
    settings, _ = redis_settings
    doomed = WorkerProcess(settings)
    survivor = WorkerProcess(settings)
    server = ServerThread(settings)
    try:
        # Start-up only (two interpreters importing torch): generous, for a machine under load.
        wait_for(lambda: doomed.children() and survivor.children(), timeout=120, what="worker processes")
        submitted = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=batch(6), options=MEDIUM))
        wait_for(
            lambda: server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=submitted.job_id)).processed_images >= 1,
            timeout=120,
            what="the first image",
        )
        os.killpg(doomed.process.pid, signal.SIGKILL)  # mid-image: no ack, no goodbye
        job = wait_status(server, submitted.job_id, job_pb2.JOB_STATUS_COMPLETED)
        assert (job.processed_images, job.failed_images) == (6, 0)
        results = all_results(server, submitted.job_id)
        assert [r.index for r in results] == list(range(6))
        events = list(server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=60))
        images = [e.image.index for e in events if e.WhichOneof("event") == "image"]
        assert sorted(images) == list(range(6)), "each image recorded exactly once"
    finally:
        server.stop()
        doomed.stop()
        survivor.stop()


def test_redis_restart_with_aof_keeps_the_accepted_job(redis_settings: tuple[Settings, RedisServer]) -> None:
    settings, redis_server = redis_settings
    worker = WorkerProcess(settings)
    server = ServerThread(settings)
    try:
        submitted = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=batch(5), options=MEDIUM))
        wait_for(
            lambda: server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=submitted.job_id)).processed_images >= 1,
            timeout=120,
            what="the first image",
        )
        redis_server.kill()
        redis_server.start()
        job = wait_status(server, submitted.job_id, job_pb2.JOB_STATUS_COMPLETED, timeout=300)
        assert job.processed_images == 5 and job.failed_images == 0
        assert [r.index for r in all_results(server, submitted.job_id)] == list(range(5))
    finally:
        server.stop()
        worker.stop()


def test_health_reports_redis_and_live_workers(redis_settings: tuple[Settings, RedisServer]) -> None:
    from samsvc.v1 import health_pb2

    settings, redis_server = redis_settings
    server = ServerThread(settings)
    workers = [WorkerProcess(settings), WorkerProcess(settings)]
    try:

        def report() -> health_pb2.JobsHealth:
            return server.stub.CheckHealth(health_pb2.CheckHealthRequest()).jobs

        wait_for(lambda: report().live_workers == 2, timeout=120, what="two live workers")
        assert report().mode == "redis" and report().store_reachable
        assert report().live_worker_threads == 2 * settings.worker_threads
        redis_server.kill()
        down = report()
        assert not down.store_reachable and down.live_workers == 0
        redis_server.start()
        wait_for(lambda: report().store_reachable, timeout=60, what="Redis to be reachable again")
    finally:
        server.stop()
        for worker in workers:
            worker.stop()
