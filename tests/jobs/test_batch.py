"""Batch jobs over a real gRPC channel, in both runtimes: the embedded mode (in-process
worker, memory store) and the Redis mode (real Redis, real `samsvc worker` processes)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator

import grpc
import pytest
from pydantic import SecretStr

from samsvc.config import Settings
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import (
    ServerThread,
    WebhookReceiver,
    encode,
    rich_status,
    scene,
    wait_for,
)
from tests.support.options import FAST
from tests.support.stacks import MODES, job_stack
from tests.support.starts import starts

WEBHOOK_SECRET = "test-webhook-secret"
SLOW = pb.SegmentOptions(points_per_side=6, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@starts("redis", "processes", when_param="redis", scope="module", params=MODES)
def batch_server(
    request: pytest.FixtureRequest, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    data_dir = tmp_path_factory.mktemp("data")
    base_settings = base_settings.model_copy(
        update={
            "webhook_secret": SecretStr(WEBHOOK_SECRET),
            "webhook_allowed_hosts": ["127.0.0.1"],
            "webhook_min_backoff_ms": 100,
            # A retried image would take half a minute: poison images must fail at once.
            "job_min_backoff_ms": 30_000,
        }
    )
    settings = base_settings.model_copy(update={"data_dir": str(data_dir)})
    with job_stack(request.param, settings, tmp_path_factory.mktemp("redis")) as running:
        yield running


def images(count: int, *, size: tuple[int, int] = (64, 48)) -> list[bytes]:
    return [encode(scene(*size, seed=i)) for i in range(count)]


def events_of(stream: Iterator[job_pb2.JobEvent]) -> list[job_pb2.JobEvent]:
    return list(stream)


def test_segment_batch_streams_each_image_once(batch_server: ServerThread) -> None:
    batch = images(4)
    batch[2] = b"definitely not an image"
    events = events_of(batch_server.stub.SegmentBatch(pb.SubmitBatchRequest(images=batch, options=FAST), timeout=120))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "finished"
    accepted = events[0].accepted
    assert accepted.total_images == 4 and accepted.job_id.startswith("job_")
    # What each image will run, told before any runs: one encoder pass and the 2x2 grid.
    expected = accepted.estimated_image_cost
    assert (expected.encoder_passes, expected.prompts_decoded) == (1, 4) and expected.compute_seconds > 0
    assert all(e.job_id == accepted.job_id for e in events)
    finished_images = [e.image for e in events if e.WhichOneof("event") == "image"]
    assert sorted(r.index for r in finished_images) == [0, 1, 2, 3]
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    assert [p.processed_images for p in progress] == [1, 2, 3, 4]
    for result in finished_images:
        if result.index == 2:
            assert not result.masks
            assert result.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
            assert "images[2]" in result.error.message
            assert (result.cost.encoder_passes, result.cost.prompts_decoded) == (0, 0)  # nothing ran
        else:
            assert result.masks and not result.HasField("error")
            assert (result.image_width, result.image_height) == (64, 48)
            # And what it ran, recorded by the worker that ran it.
            assert (result.cost.encoder_passes, result.cost.prompts_decoded) == (1, 4)
            assert result.cost.compute_seconds == result.processing_time > 0
    job = events[-1].finished.job
    assert job.status == job_pb2.JOB_STATUS_COMPLETED
    assert (job.total_images, job.processed_images, job.failed_images) == (4, 4, 1)
    assert job.job_type == job_pb2.JOB_TYPE_BATCH
    assert job.completed_at.ToMilliseconds() >= job.created_at.ToMilliseconds()
    assert len({e.cursor for e in events}) == len(events)


def test_watch_resumes_exactly_after_a_lost_stream(batch_server: ServerThread) -> None:
    submitted = batch_server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(5), options=FAST))
    assert submitted.status == job_pb2.JOB_STATUS_QUEUED and submitted.total_images == 5
    assert submitted.estimated_time > 0
    first = batch_server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=120)
    seen: list[job_pb2.JobEvent] = []
    for event in first:
        seen.append(event)
        if event.WhichOneof("event") == "image":
            break
    first.cancel()  # the client loses its connection after the first image
    rest = events_of(
        batch_server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id, cursor=seen[-1].cursor), timeout=120)
    )
    whole = seen + rest
    indexes = [e.image.index for e in whole if e.WhichOneof("event") == "image"]
    assert sorted(indexes) == [0, 1, 2, 3, 4], "every image exactly once across the two streams"
    assert whole[-1].finished.job.status == job_pb2.JOB_STATUS_COMPLETED
    replay = events_of(batch_server.stub.WatchJob(pb.WatchJobRequest(job_id=submitted.job_id), timeout=60))
    assert [e.cursor for e in replay] == [e.cursor for e in whole]


def test_status_and_paginated_results(batch_server: ServerThread) -> None:
    events = events_of(batch_server.stub.SegmentBatch(pb.SubmitBatchRequest(images=images(5), options=FAST)))
    job_id = events[0].accepted.job_id
    status = batch_server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id))
    assert status.status == job_pb2.JOB_STATUS_COMPLETED and status.processed_images == 5
    assert status.HasField("started_at") and status.HasField("completed_at")
    assert status.processing_time > 0 and status.estimated_time == 0
    indexes: list[int] = []
    token = ""
    pages = 0
    while True:
        page = batch_server.stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id, page_size=2, page_token=token))
        pages += 1
        indexes += [r.index for r in page.results]
        assert all(r.masks for r in page.results)
        token = page.next_page_token
        if not token:
            break
    assert indexes == [0, 1, 2, 3, 4] and pages == 3


def test_segment_calls_are_single_jobs(batch_server: ServerThread) -> None:
    response = batch_server.stub.Segment(pb.SegmentRequest(image=images(1)[0], points_per_side=2, pred_iou_thresh=0))
    status = batch_server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=response.job_id))
    assert status.job_type == job_pb2.JOB_TYPE_SINGLE and status.status == job_pb2.JOB_STATUS_COMPLETED
    assert (status.total_images, status.processed_images, status.failed_images) == (1, 1, 0)
    results = batch_server.stub.GetJobResults(pb.GetJobResultsRequest(job_id=response.job_id))
    assert results.job.job_id == response.job_id
    assert len(results.results) == 0, "status only: the masks were in the answer (SINGLE_JOB_RESULTS keeps them)"


def test_list_jobs_filters_newest_first(batch_server: ServerThread) -> None:
    single = batch_server.stub.Segment(pb.SegmentRequest(image=images(1)[0], points_per_side=1))
    batch = events_of(batch_server.stub.SegmentBatch(pb.SubmitBatchRequest(images=images(1), options=FAST)))
    batch_id = batch[0].accepted.job_id
    everything = batch_server.stub.ListJobs(pb.ListJobsRequest(page_size=100)).jobs
    ids = [j.job_id for j in everything]
    assert ids.index(batch_id) < ids.index(single.job_id), "newest first"
    created = [j.created_at.ToMilliseconds() for j in everything]
    assert created == sorted(created, reverse=True)
    singles = batch_server.stub.ListJobs(pb.ListJobsRequest(job_type=job_pb2.JOB_TYPE_SINGLE, page_size=100)).jobs
    assert single.job_id in {j.job_id for j in singles} and all(j.job_type == job_pb2.JOB_TYPE_SINGLE for j in singles)
    completed = batch_server.stub.ListJobs(pb.ListJobsRequest(status=job_pb2.JOB_STATUS_COMPLETED, page_size=100))
    assert all(j.status == job_pb2.JOB_STATUS_COMPLETED for j in completed.jobs)
    paged: list[str] = []
    token = ""
    while True:
        page = batch_server.stub.ListJobs(pb.ListJobsRequest(page_size=2, page_token=token))
        paged += [j.job_id for j in page.jobs]
        token = page.next_page_token
        if not token:
            break
    assert paged == ids


def test_request_id_makes_submission_idempotent(batch_server: ServerThread) -> None:
    request = pb.SubmitBatchRequest(images=images(2), options=FAST, request_id="client-retry-1")
    first = batch_server.stub.SubmitBatch(request)
    again = batch_server.stub.SubmitBatch(request)
    assert first.job_id == again.job_id
    listed = [j.job_id for j in batch_server.stub.ListJobs(pb.ListJobsRequest(page_size=100)).jobs]
    assert listed.count(first.job_id) == 1


def test_cancel_keeps_finished_results_and_runs_nothing_more(batch_server: ServerThread) -> None:
    stream = batch_server.stub.SegmentBatch(
        pb.SubmitBatchRequest(images=images(6, size=(160, 120)), options=SLOW), timeout=300
    )
    job_id = ""
    for event in stream:
        if event.WhichOneof("event") == "accepted":
            job_id = event.accepted.job_id
        if event.WhichOneof("event") == "image":
            break
    cancelled = batch_server.stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    assert cancelled.status == job_pb2.JOB_STATUS_CANCELLED
    rest = list(stream)
    assert rest[-1].finished.job.status == job_pb2.JOB_STATUS_CANCELLED
    kept = batch_server.stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id, page_size=50)).results
    assert 1 <= len(kept) < 6
    # A job queued behind the cancelled one finishes only after the worker passed its messages.
    events_of(batch_server.stub.SegmentBatch(pb.SubmitBatchRequest(images=images(1), options=FAST), timeout=300))
    later = batch_server.stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id, page_size=50)).results
    assert [r.index for r in later] == [r.index for r in kept]
    again = batch_server.stub.CancelJob(pb.CancelJobRequest(job_id=job_id))
    assert again.status == job_pb2.JOB_STATUS_CANCELLED


def test_unknown_job_is_not_found(batch_server: ServerThread) -> None:
    for call, request in [
        (batch_server.stub.GetJobStatus, pb.GetJobStatusRequest(job_id="job_nope")),
        (batch_server.stub.GetJobResults, pb.GetJobResultsRequest(job_id="job_nope")),
        (batch_server.stub.CancelJob, pb.CancelJobRequest(job_id="job_nope")),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(request)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert rich_status(caught.value)[1]["ErrorInfo"].reason == "JOB_NOT_FOUND"
    with pytest.raises(grpc.RpcError) as caught:
        list(batch_server.stub.WatchJob(pb.WatchJobRequest(job_id="job_nope")))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    "request_fields,field",
    [
        ({"images": []}, "images"),
        ({"images": [b"x"] * 51}, "images"),
        ({"options": pb.SegmentOptions(points_per_side=0)}, "options.points_per_side"),
        ({"options": pb.SegmentOptions(model_type="nope")}, "options.model_type"),
        ({"priority": 9}, "priority"),
        ({"webhook_url": "ftp://example.org/hook"}, "webhook_url"),
        ({"webhook_url": "http://169.254.169.254/latest"}, "webhook_url"),
        ({"webhook_url": "http://10.1.2.3/hook"}, "webhook_url"),
        ({"request_id": "x" * 129}, "request_id"),
    ],
)
def test_bad_batches_are_refused_whole(batch_server: ServerThread, request_fields: dict, field: str) -> None:
    fields = {"images": images(1), "options": FAST, **request_fields}
    with pytest.raises(grpc.RpcError) as caught:
        batch_server.stub.SubmitBatch(pb.SubmitBatchRequest(**fields))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = rich_status(caught.value)
    assert field in [v.field for v in details["BadRequest"].field_violations]


def test_poison_image_fails_at_once_and_the_rest_succeed(batch_server: ServerThread) -> None:
    batch = images(3)
    whole = encode(scene(64, 48, seed=5), "JPEG", quality=95)
    batch[1] = whole[: len(whole) // 2]  # the header is fine; the pixels are cut off
    started = time.monotonic()
    events = events_of(batch_server.stub.SegmentBatch(pb.SubmitBatchRequest(images=batch, options=FAST), timeout=120))
    assert time.monotonic() - started < 20, "no retries (each would wait 30 s)"
    results = {e.image.index: e.image for e in events if e.WhichOneof("event") == "image"}
    assert sorted(results) == [0, 1, 2]
    assert results[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "IMAGE_CORRUPT" in str(results[1].error.details)
    assert results[0].masks and results[2].masks
    assert events[-1].finished.job.status == job_pb2.JOB_STATUS_COMPLETED


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    running = WebhookReceiver(failures=2, path="/hooks/samsvc?token=abc")
    yield running
    running.close()


def test_webhook_is_signed_and_retried_until_delivered(batch_server: ServerThread, receiver: WebhookReceiver) -> None:
    url, handler = receiver.url, receiver
    events = events_of(
        batch_server.stub.SegmentBatch(pb.SubmitBatchRequest(images=images(2), options=FAST, webhook_url=url))
    )
    job_id = events[0].accepted.job_id
    wait_for(lambda: len(handler.received) >= 3, timeout=60, what="three webhook attempts")
    for headers, body in handler.received:
        timestamp = headers["X-Samsvc-Timestamp"]
        expected = hmac.new(WEBHOOK_SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert headers["X-Samsvc-Signature"] == f"sha256={expected}"
        summary = json.loads(body)
        assert summary["job_id"] == job_id and summary["status"] == "completed"
        assert summary["processed_images"] == 2
    assert len(handler.received) == 3, "delivered on the third attempt, then no more"


@pytest.mark.parametrize("cursor", ["not-a-cursor", "12-", "-1", "1" * 30, "0-0-0"])
def test_a_malformed_watch_cursor_is_invalid_argument(batch_server: ServerThread, cursor: str) -> None:
    job_id = batch_server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images(1), options=FAST)).job_id
    with pytest.raises(grpc.RpcError) as refused:
        list(batch_server.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, cursor=cursor), timeout=30))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = rich_status(refused.value)
    assert details["ErrorInfo"].reason == "INVALID_CURSOR"
    assert [v.field for v in details["BadRequest"].field_violations] == ["cursor"]
    # The service goes on: a well-formed cursor still follows the job to its end.
    events = list(batch_server.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=120))
    assert events[-1].WhichOneof("event") == "finished"
