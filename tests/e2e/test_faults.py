"""No accepted image is lost in the Redis mode, whatever fails: real redis-server with AOF, real
`samsvc worker` processes, faults injected for real (SIGKILL of Redis and of workers at chosen
points through failpoints, Redis paused, queued messages lost, duplicates). Each test ends
with every image recorded exactly once and the job ended, within a bound."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from samsvc.config import Settings
from samsvc.jobs import failpoints
from samsvc.jobs.queues import BROKER_NAMESPACE, IMAGE_QUEUES, Priority
from samsvc.jobs.wiring import build_runtime
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.faults import (
    assert_each_image_once,
    failpoints_env,
    fast,
    reached,
    reason_of,
    release,
    wait_ended,
)
from tests.support import RedisServer, ServerThread, WebhookReceiver, WorkerProcess, encode, scene, wait_for
from tests.support.options import FAST

pytestmark = pytest.mark.processes  # samsvc's own processes: workers, `samsvc serve`


@pytest.fixture
def settings(redis_settings: tuple[Settings, RedisServer]) -> Settings:
    return fast(redis_settings[0])


@pytest.fixture(autouse=True)
def no_failpoints_left() -> Iterator[None]:
    yield
    failpoints.clear()


def images(count: int) -> list[bytes]:
    return [encode(scene(64, 48, seed=20 + i)) for i in range(count)]


def submit(server: ServerThread, count: int, **fields: object) -> str:
    return str(server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(count), options=FAST, **fields)).job_id)


def test_redis_killed_while_an_image_runs_and_while_its_result_is_recorded(
    settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:

    run = {"action": "block", "dir": str(tmp_path), "once": True}
    worker = WorkerProcess(settings, env=failpoints_env(jobs__image__run=run))
    server = ServerThread(settings)
    try:
        job_id = submit(server, 4)
        reached(tmp_path, "jobs.image.run")
        redis_server.kill()  # the image is running: its worker finishes it with Redis gone
        release(tmp_path, "jobs.image.run")
        wait_for(lambda: "retrying record_result" in worker.output(), timeout=60, what="the record to be retried")
        redis_server.start()
        results = assert_each_image_once(server.stub, job_id, 4)
        assert all(r.masks for r in results.values())
    finally:
        server.stop()
        worker.stop()


def test_redis_killed_while_a_retry_is_queued(settings: Settings, redis_server: RedisServer, tmp_path: Path) -> None:
    transient = {"action": "raise", "dir": str(tmp_path), "once": True, "when": {"index": 1}}
    queue = {"action": "block", "dir": str(tmp_path), "once": True}
    env = failpoints_env(jobs__image__run=transient, jobs__retry__before_enqueue=queue)
    worker = WorkerProcess(settings, env=env)
    server = ServerThread(settings)  # its reconciler has no failpoints: the worker's must lead
    server.running.jobs.reconciler.stop()
    try:
        job_id = submit(server, 3)
        reached(tmp_path, "jobs.retry.before_enqueue")
        redis_server.kill()
        release(tmp_path, "jobs.retry.before_enqueue")  # the enqueue fails: the retry is nowhere
        wait_for(lambda: "reconciler round failed" in worker.output(), timeout=60, what="the failed enqueue")
        redis_server.start()
        results = assert_each_image_once(server.stub, job_id, 3)
        assert all(r.masks for r in results.values()), "the retried image succeeded"
    finally:
        server.stop()
        worker.stop()


def test_redis_paused_mid_job(settings: Settings, redis_server: RedisServer, tmp_path: Path) -> None:
    run = {"action": "block", "dir": str(tmp_path), "once": True}
    worker = WorkerProcess(settings, env=failpoints_env(jobs__image__run=run))
    server = ServerThread(settings)
    try:
        job_id = submit(server, 3)
        reached(tmp_path, "jobs.image.run")
        redis.Redis.from_url(redis_server.url).execute_command("CLIENT", "PAUSE", "4000", "ALL")
        release(tmp_path, "jobs.image.run")
        assert_each_image_once(server.stub, job_id, 3)
    finally:
        server.stop()
        worker.stop()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    running = WebhookReceiver()
    yield running
    running.close()


def test_worker_killed_between_recording_the_last_image_and_ending_the_job(
    settings: Settings, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    settings = settings.model_copy(update={"webhook_allowed_hosts": ["127.0.0.1"]})
    kill = {"action": "kill", "dir": str(tmp_path), "once": True}
    worker = WorkerProcess(settings, env=failpoints_env(jobs__image__after_record=kill))
    server = ServerThread(settings)
    try:
        job_id = submit(server, 1, webhook_url=receiver.url)
        assert_each_image_once(server.stub, job_id, 1)
        assert (tmp_path / "jobs.image.after_record.once").exists(), "the worker died right after recording"
        wait_for(lambda: receiver.received, timeout=60, what="the webhook of the job whose worker died")
        headers, body = receiver.received[0][0], json.loads(receiver.received[0][1])
        assert body["job_id"] == job_id and body["status"] == "completed"
        assert headers["X-Samsvc-Delivery"] == body["delivery_id"] == f"{job_id}.ended"
        wait_for(lambda: not (Path(settings.data_dir) / job_id).exists(), timeout=30, what="the job's images removed")
    finally:
        server.stop()
        worker.stop()


def test_an_image_that_kills_its_worker_fails_after_max_retries(settings: Settings) -> None:
    poison = {"action": "kill", "when": {"index": 1}}
    worker = WorkerProcess(settings, env=failpoints_env(jobs__image__run=poison))
    server = ServerThread(settings)
    try:
        job_id = submit(server, 3)
        results = assert_each_image_once(server.stub, job_id, 3)
        assert reason_of(results[1]) == "IMAGE_CRASHED_WORKER"
        assert results[1].error.code == grpc.StatusCode.INTERNAL.value[0]
        assert results[0].masks and results[2].masks
        assert wait_ended(server.stub, job_id).status == job_pb2.JOB_STATUS_COMPLETED
        assert worker.output().count("starting them again") >= settings.job_max_retries, "the worker crashed"
    finally:
        server.stop()
        worker.stop()


def test_time_limit_overrun_is_the_images_error(settings: Settings) -> None:
    settings = settings.model_copy(update={"job_time_limit_s": 1})
    heavy = pb.SegmentOptions(points_per_side=24, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    worker = WorkerProcess(settings)
    server = ServerThread(settings)
    try:
        job_id = str(server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(2), options=heavy)).job_id)
        results = assert_each_image_once(server.stub, job_id, 2)
        for result in results.values():
            assert reason_of(result) == "IMAGE_TIME_LIMIT"
            assert result.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
        assert wait_ended(server.stub, job_id).status == job_pb2.JOB_STATUS_FAILED
    finally:
        server.stop()
        worker.stop()


def test_messages_delivered_twice_are_recorded_once(settings: Settings) -> None:
    settings = settings.model_copy(update={"worker_threads": 2})
    worker = WorkerProcess(settings)
    server = ServerThread(settings)
    sender = build_runtime(settings.job_options(), lambda: server.running.models)
    try:
        job_id = submit(server, 4)
        for index in range(4):  # every message twice, on two threads
            sender.enqueue_image(job_id, index, Priority.NORMAL)
        assert_each_image_once(server.stub, job_id, 4)
        sender.enqueue_image(job_id, 0, Priority.NORMAL)  # and once more after the end
        late = f"image 0 of job {job_id}: nothing to do (skip)"
        wait_for(lambda: late in worker.output(), timeout=60, what="the late duplicate to be skipped")
        assert_each_image_once(server.stub, job_id, 4)
    finally:
        server.stop()
        worker.stop()


def test_queued_messages_lost_by_redis_are_queued_again(settings: Settings, redis_server: RedisServer) -> None:
    server = ServerThread(settings)
    worker = None
    try:
        job_id = submit(server, 3)
        # What a Redis that lost its last writes (AOF everysec) holds: the job, not its messages.
        client = redis.Redis.from_url(redis_server.url)
        queue = f"{BROKER_NAMESPACE}:{IMAGE_QUEUES[Priority.NORMAL]}"
        assert client.llen(queue) == 3
        client.delete(queue, f"{queue}.msgs")
        worker = WorkerProcess(settings)
        assert_each_image_once(server.stub, job_id, 3)
    finally:
        server.stop()
        if worker is not None:
            worker.stop()


@pytest.mark.parametrize("point", ["jobs.submit.after_blobs", "jobs.submit.after_create", "jobs.submit.after_enqueue"])
def test_redis_killed_between_submit_batch_steps(settings: Settings, redis_server: RedisServer, point: str) -> None:
    worker = WorkerProcess(settings)
    server = ServerThread(settings)
    request = pb.SubmitBatchRequest(images=images(3), options=FAST, request_id=f"retry-{point}")
    try:
        failpoints.install(point, lambda **_: (failpoints.clear(), redis_server.kill()))
        refused = _refusal(server, request)
        if refused is not None:  # the step failed: the caller is told to retry, without internals
            assert refused.code() == grpc.StatusCode.UNAVAILABLE
            details = refused.details() or ""
            assert "127.0.0.1" not in details and str(redis_server.port) not in details
        redis_server.start()
        # The caller retries with the same request_id: one job, which ends with every image.
        job_id = wait_for(lambda: _submitted(server, request), timeout=60, interval=0.5, what="a retried submission")
        assert_each_image_once(server.stub, job_id, 3)
        jobs = server.stub.ListJobs(pb.ListJobsRequest(job_type=job_pb2.JOB_TYPE_BATCH)).jobs
        assert [j.job_id for j in jobs] == [job_id], "no half-made job besides it"
    finally:
        server.stop()
        worker.stop()


def _submitted(server: ServerThread, request: pb.SubmitBatchRequest) -> str | None:
    try:
        return str(server.stub.SubmitBatch(request, timeout=30).job_id)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return None


def _refusal(server: ServerThread, request: pb.SubmitBatchRequest) -> grpc.RpcError | None:
    try:
        server.stub.SubmitBatch(request, timeout=60)
    except grpc.RpcError as error:
        return error
    return None
