"""Job streams cannot starve other calls: a stream on a finished job ends, each key holds at
most MAX_STREAMS_PER_KEY, and hundreds of open streams leave unary calls quick (waiting for
events holds no thread), in both runtimes."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from samsvc.config import Settings
from samsvc.server.auth import digest, new_key
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene, wait_for
from tests.support.stacks import MODES, job_stack
from tests.support.starts import starts

ALICE, BOB = new_key(), new_key()
STREAMS = 200


@starts("redis", when_param="redis", params=MODES)
def server(request: pytest.FixtureRequest, base_settings: Settings, tmp_path: Path) -> Iterator[ServerThread]:
    settings = base_settings.model_copy(
        update={
            "data_dir": str(tmp_path / "data"),
            "api_keys": [f"alice:{digest(ALICE)}", f"bob:{digest(BOB)}"],
            "max_streams_per_key": STREAMS,
            # No worker takes the Redis mode's images: its jobs wait, their streams stay open.
            "worker_threads": 1,
        }
    )
    with job_stack(request.param, settings, tmp_path, worker=False) as running:
        yield running


def as_(key: str) -> list[tuple[str, str]]:
    return [("x-api-key", key)]


def test_a_stream_from_a_finished_jobs_last_cursor_ends(server: ServerThread) -> None:
    # An image refused by its header ends the job at once (no worker needed).
    job_id = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=[b"not an image"]), metadata=as_(ALICE)).job_id
    events = list(server.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=as_(ALICE), timeout=120))
    assert events[-1].WhichOneof("event") == "finished"
    started = time.monotonic()
    after = list(
        server.stub.WatchJob(
            pb.WatchJobRequest(job_id=job_id, cursor=events[-1].cursor), metadata=as_(ALICE), timeout=30
        )
    )
    assert after == [] and time.monotonic() - started < 10, "the stream ended instead of waiting forever"


def waiting_job(server: ServerThread, key: str) -> str:
    """A job that stays open: in the Redis mode no worker runs, in the embedded one it is slow."""
    slow = pb.SegmentOptions(points_per_side=24, points_per_batch=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    images = [encode(scene(160, 120, seed=i)) for i in range(4)]
    return str(server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images, options=slow), metadata=as_(key)).job_id)


def open_streams(server: ServerThread, job_id: str, count: int) -> list[Any]:
    """`count` of Alice's WatchJob streams on the job, each past its first event (so open on the
    server); the caller cancels them."""
    opened = [
        server.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=as_(ALICE), timeout=300) for _ in range(count)
    ]
    for stream in opened:
        assert next(stream).WhichOneof("event") == "accepted"
    return opened


def stop(server: ServerThread, job_id: str, key: str) -> None:
    """Cancel the job: its running image stops at its next prompt batch, not with the process."""
    server.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=as_(key), timeout=30)


def test_open_streams_per_key_are_capped(server: ServerThread) -> None:
    job_id = waiting_job(server, ALICE)
    opened = open_streams(server, job_id, STREAMS)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            next(server.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=as_(ALICE), timeout=30))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert rich_status(refused.value)[1]["ErrorInfo"].reason == "TOO_MANY_STREAMS"
        other = waiting_job(server, BOB)
        bobs = server.stub.WatchJob(pb.WatchJobRequest(job_id=other), metadata=as_(BOB), timeout=30)
        assert next(bobs).WhichOneof("event") == "accepted", "another key has its own streams"
        bobs.cancel()
        stop(server, other, BOB)
        opened.pop().cancel()

        def reopened() -> bool:
            stream = server.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=as_(ALICE), timeout=30)
            try:
                return next(stream).WhichOneof("event") == "accepted"
            except grpc.RpcError:
                return False
            finally:
                stream.cancel()

        wait_for(reopened, timeout=30, what="a stream slot freed by a closed stream")
    finally:
        for stream in opened:
            stream.cancel()
        stop(server, job_id, ALICE)


def test_hundreds_of_open_streams_leave_unary_calls_quick(server: ServerThread) -> None:
    job_id = waiting_job(server, ALICE)
    request = pb.GetJobStatusRequest(job_id=job_id)
    opened = open_streams(server, job_id, STREAMS)
    try:
        took = []
        for _ in range(20):
            started = time.monotonic()
            status = server.stub.GetJobStatus(request, metadata=as_(ALICE), timeout=60)
            took.append(time.monotonic() - started)
        assert status.status in (job_pb2.JOB_STATUS_QUEUED, job_pb2.JOB_STATUS_PROCESSING)
        # With a thread per waiting stream, each call queued behind them for a second or more.
        assert statistics.median(took) < 0.25, f"GetJobStatus took {statistics.median(took):.3f} s (median)"
        started = time.monotonic()
        segment = pb.SegmentRequest(image=encode(scene(32, 24)), points_per_side=1, pred_iou_thresh=0.0)
        assert server.stub.Segment(segment, metadata=as_(BOB), timeout=60).image_width == 32
    finally:
        for stream in opened:
            stream.cancel()
        stop(server, job_id, ALICE)
