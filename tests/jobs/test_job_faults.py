"""No accepted image is lost in the embedded mode either: the same lifecycle (ledger, store
retries, reconciler) with the in-process worker and the memory store, faults injected through
failpoints and the store. (What the embedded mode cannot survive is its own process stopping:
its jobs live in memory, as the batch jobs guide says.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from samsvc.config import Settings
from samsvc.errors import Unavailable
from samsvc.jobs import failpoints
from samsvc.jobs.queues import Priority
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.faults import assert_each_image_once, fast, reason_of, wait_ended
from tests.support import ServerThread, WebhookReceiver, encode, scene, wait_for
from tests.support.options import FAST


@pytest.fixture(autouse=True)
def no_failpoints_left() -> Iterator[None]:
    yield
    failpoints.clear()


@pytest.fixture
def settings(base_settings: Settings, tmp_path: Path) -> Settings:
    return fast(base_settings, data_dir=str(tmp_path / "data"), worker_threads=2)


@pytest.fixture
def server(settings: Settings) -> Iterator[ServerThread]:
    running = ServerThread(settings)
    yield running
    running.stop()


def images(count: int) -> list[bytes]:
    return [encode(scene(64, 48, seed=40 + i)) for i in range(count)]


def submit(server: ServerThread, count: int, options: pb.SegmentOptions = FAST, **fields: Any) -> str:
    return str(server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(count), options=options, **fields)).job_id)


def test_a_store_failing_while_results_are_recorded_loses_nothing(server: ServerThread) -> None:
    store = server.running.jobs.store
    real = store.record_result
    failures = {"left": 3}

    def flaky(*args: Any) -> Any:
        if failures["left"] > 0:
            failures["left"] -= 1
            raise Unavailable("the job store is unreachable", reason="STORE_UNAVAILABLE")
        return real(*args)

    store.record_result = flaky  # type: ignore[method-assign]
    job_id = submit(server, 3)
    results = assert_each_image_once(server.stub, job_id, 3)
    assert failures["left"] == 0, "the fault happened"
    assert all(r.masks for r in results.values()), "the finished masks were kept, not thrown away"


def test_images_that_could_not_be_queued_at_submission_are_queued_by_the_reconciler(server: ServerThread) -> None:
    refusals = {"left": 1}

    def refuse(**_: object) -> None:
        if refusals["left"] > 0:
            refusals["left"] -= 1
            raise Unavailable("the job queue is unreachable", reason="QUEUE_UNAVAILABLE")

    failpoints.install("jobs.enqueue", refuse)
    job_id = submit(server, 3)  # accepted: the job is stored, its messages are not
    assert refusals["left"] == 0
    assert not server.running.jobs.runtime.broker.queues["samsvc-normal"].qsize()
    assert_each_image_once(server.stub, job_id, 3)


def test_messages_delivered_twice_are_recorded_once(server: ServerThread) -> None:
    runtime = server.running.jobs.runtime
    job_id = submit(server, 4)
    for index in range(4):
        runtime.enqueue_image(job_id, index, Priority.NORMAL)
    assert_each_image_once(server.stub, job_id, 4)


@pytest.mark.parametrize(
    "fault",
    [
        pytest.param({}, id="checked-between-prompt-batches"),
        # Dramatiq's own limit (JOB_TIME_LIMIT_S + 5 s) interrupts Python code the engine's
        # check never reaches; its TimeLimitExceeded is a BaseException.
        pytest.param({"action": "sleep", "seconds": 12, "when": {"index": 0}}, id="dramatiq-time-limit"),
    ],
)
def test_a_time_limit_overrun_is_the_images_error(settings: Settings, fault: dict[str, Any]) -> None:
    heavy = pb.SegmentOptions(points_per_side=32, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    # The model is loaded before the job, so that the other image's time is inference only and
    # stays under the limit even on a machine whose cores are all busy (it takes 0.1 s idle).
    server = ServerThread(settings.model_copy(update={"job_time_limit_s": 5, "preload": ["tiny"]}))
    try:
        if fault:
            failpoints.configure(json.dumps({"jobs.image.run": fault}))
            job_id = submit(server, 2)
            results = assert_each_image_once(server.stub, job_id, 2)
            assert results[1].masks, "the other image is unaffected"
            limited = [results[0]]
        else:
            job_id = submit(server, 2, heavy)
            limited = list(assert_each_image_once(server.stub, job_id, 2).values())
        for result in limited:
            assert reason_of(result) == "IMAGE_TIME_LIMIT"
            assert result.error.code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]
    finally:
        server.stop()


def test_a_job_whose_ending_was_interrupted_still_sends_its_webhook(settings: Settings) -> None:
    receiver = WebhookReceiver()
    server = ServerThread(settings.model_copy(update={"webhook_allowed_hosts": ["127.0.0.1"]}))
    try:
        interrupted = {"left": 1}

        def interrupt(**_: object) -> None:
            if interrupted["left"]:
                interrupted["left"] = 0
                raise RuntimeError("the worker stopped between recording and ending the job")

        failpoints.install("jobs.image.after_record", interrupt)
        job_id = submit(server, 1, webhook_url=receiver.url)
        assert wait_ended(server.stub, job_id).status == job_pb2.JOB_STATUS_COMPLETED
        assert interrupted["left"] == 0
        wait_for(lambda: receiver.received, timeout=60, what="the webhook")
        headers, body = receiver.received[0][0], json.loads(receiver.received[0][1])
        assert headers["X-Samsvc-Delivery"] == body["delivery_id"] == f"{job_id}.ended"
        wait_for(lambda: not (Path(settings.data_dir) / job_id).exists(), timeout=30, what="the job's images removed")
    finally:
        server.stop()
        receiver.close()
