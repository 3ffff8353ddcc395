"""Admission control over a real channel: one inference at a time, one waiting, the rest
refused at once; deadlines and cancellations free their place."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from samsvc.config import Settings
from samsvc.v1 import health_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene, wait_for

SLOW = dict(points_per_side=6, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
QUICK = dict(points_per_side=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def server(base_settings: Settings) -> Iterator[ServerThread]:
    running = ServerThread(base_settings.model_copy(update={"max_workers": 1, "max_queue": 1}))
    # Load the model before timing anything.
    running.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), **QUICK))
    yield running
    running.stop()


def load(server: ServerThread) -> health_pb2.InferenceLoad:
    return server.stub.CheckHealth(health_pb2.CheckHealthRequest()).inference


def slow_request() -> pb.SegmentRequest:
    return pb.SegmentRequest(image=encode(scene(160, 120, seed=9)), **SLOW)


def test_excess_requests_are_refused_at_once(server: ServerThread) -> None:
    first = server.stub.Segment.future(slow_request())
    wait_for(lambda: load(server).running == 1, what="first request running")
    second = server.stub.Segment.future(slow_request())
    wait_for(lambda: load(server).waiting == 1, what="second request waiting")

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Segment(slow_request())
    assert time.monotonic() - started < 1.0
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    _, details = rich_status(caught.value)
    assert details["ErrorInfo"].reason == "SERVER_OVERLOADED"
    retry = details["RetryInfo"].retry_delay
    assert retry.seconds + retry.nanos / 1e9 > 0

    assert len(first.result(timeout=120).masks) > 0
    assert len(second.result(timeout=120).masks) > 0
    assert load(server).running == 0 and load(server).waiting == 0


def test_deadline_passing_in_the_queue_frees_the_place(server: ServerThread) -> None:
    first = server.stub.Segment.future(slow_request())
    wait_for(lambda: load(server).running == 1, what="first request running")
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Segment(slow_request(), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: load(server).waiting == 0, timeout=5, what="the expired request to leave the queue")
    assert first.result(timeout=120).masks


def test_cancelled_request_stops_its_inference(server: ServerThread) -> None:
    """The cancelled inference stops at its next prompt batch: a quick request right after
    runs on the single inference thread long before the slow one could have finished."""
    started = time.monotonic()
    reference = server.stub.Segment(slow_request())
    full = time.monotonic() - started
    assert reference.masks

    doomed = server.stub.Segment.future(slow_request())
    wait_for(lambda: load(server).running == 1, what="slow request running")
    doomed.cancel()
    started = time.monotonic()
    quick = server.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), **QUICK))
    assert quick.image_width == 32
    assert time.monotonic() - started < full * 0.75
    assert doomed.cancelled()
