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


def test_too_much_work_is_refused_before_any_is_done(server: ServerThread) -> None:
    """points_per_side 128 over three crop layers is 1.4 million prompts, 340 times the default:
    enough to hold a slot for hours. It is refused, naming the limit, before any decoding."""
    heavy = dict(points_per_side=128, crop_n_layers=3, crop_n_points_downscale_factor=1, pred_iou_thresh=0.0)
    image = encode(scene(1024, 768))
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Segment(pb.SegmentRequest(image=image, **heavy), timeout=30)
    assert time.monotonic() - started < 1.0
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = rich_status(caught.value)
    assert details["ErrorInfo"].reason == "TOO_MANY_PROMPTS"
    assert "MAX_PROMPTS_PER_IMAGE" in (caught.value.details() or "")
    with pytest.raises(grpc.RpcError) as batch:
        server.stub.SubmitBatch(pb.SubmitBatchRequest(images=[image], options=pb.SegmentOptions(**heavy)), timeout=30)
    assert batch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in rich_status(batch.value)[1]["BadRequest"].field_violations]
    assert "options.points_per_side" in fields
    assert load(server).running == 0


def test_a_heavy_request_takes_more_slots_than_a_light_one(base_settings: Settings) -> None:
    # Two slots of 64 prompts each: points_per_side 12 (144 prompts) takes both, 6 (36) one.
    settings = base_settings.model_copy(update={"max_workers": 2, "max_queue": 0, "prompts_per_slot": 64})
    server = ServerThread(settings)
    heavy = pb.SegmentRequest(image=encode(scene(160, 120, seed=3)), **{**SLOW, "points_per_side": 12})
    try:
        server.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), **QUICK))  # load the model
        running = server.stub.Segment.future(heavy)
        wait_for(lambda: load(server).running == 2, what="the heavy request holding both slots")
        with pytest.raises(grpc.RpcError) as refused:
            server.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), **QUICK))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert running.result(timeout=120).masks

        first = server.stub.Segment.future(slow_request())  # 36 prompts: one slot
        wait_for(lambda: load(server).running == 1, what="a light request holding one slot")
        second = server.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), **QUICK))
        assert second.image_width == 32, "a second light request runs beside it"
        assert first.result(timeout=120).masks
    finally:
        server.stop()


@pytest.mark.parametrize("cancel_heavy", [False, True])
def test_slots_go_first_come_first_served_by_weight(cancel_heavy: bool) -> None:
    import asyncio

    from samsvc.server.admission import AdmissionControl

    async def scenario() -> list[str]:
        admission = AdmissionControl(max_running=2, max_waiting=4)
        order: list[str] = []
        release = asyncio.Event()

        async def hold(name: str, weight: int) -> None:
            async with admission.slot(weight):
                order.append(name)
                await release.wait()

        light = asyncio.create_task(hold("light-1", 1))
        await asyncio.sleep(0)
        heavy = asyncio.create_task(hold("heavy", 2))
        later = asyncio.create_task(hold("light-2", 1))
        await asyncio.sleep(0)
        assert order == ["light-1"] and admission.waiting == 2, "the heavy one waits; the light one behind it too"
        if cancel_heavy:
            heavy.cancel()
            for _ in range(3):  # the heavy one leaves, then the light one is handed the slot
                await asyncio.sleep(0)
            assert order == ["light-1", "light-2"], "once the heavy one left, the light one fits"
        release.set()
        await asyncio.gather(light, later, heavy, return_exceptions=True)
        assert admission.running == 0
        return order

    order = asyncio.run(scenario())
    assert order == (["light-1", "light-2"] if cancel_heavy else ["light-1", "heavy", "light-2"])
