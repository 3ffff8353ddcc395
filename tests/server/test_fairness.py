"""Per-key fairness on top of the per-minute limits: one key's concurrent inferences, its batch
images still to run, and the models it may make the server load."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from samsvc.config import Settings
from samsvc.errors import ConfigurationError
from samsvc.server.auth import digest, new_key, parse_keys
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import RedisServer, ServerThread, encode, rich_status, scene, wait_for
from tests.support.starts import starts

ALICE, BOB, TINY_ONLY = new_key(), new_key(), new_key()
SLOW = dict(points_per_side=8, points_per_batch=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)
QUICK = dict(points_per_side=1, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def as_(key: str) -> list[tuple[str, str]]:
    return [("x-api-key", key)]


@starts("redis")
def server(base_settings: Settings, tmp_path: Path) -> Iterator[ServerThread]:
    redis_server = RedisServer(tmp_path)  # no worker: batch images wait in the queue
    settings = base_settings.model_copy(
        update={
            "redis_url": redis_server.url,
            "data_dir": str(tmp_path / "data"),
            "api_keys": [f"alice:{digest(ALICE)}", f"bob:{digest(BOB)}", f"lab:{digest(TINY_ONLY)}:tiny"],
            "max_workers": 1,
            "max_queue": 8,
            "max_inferences_per_key": 2,
            "max_queued_images_per_key": 5,
        }
    )
    running = ServerThread(settings)
    running.stub.Segment(pb.SegmentRequest(image=encode(scene(32, 32)), **QUICK), metadata=as_(BOB))  # load
    yield running
    running.stop()
    redis_server.stop()


def reason(error: grpc.RpcError) -> str:
    return str(rich_status(error)[1]["ErrorInfo"].reason)


def test_one_key_cannot_fill_the_inference_queue(server: ServerThread) -> None:
    """MAX_QUEUE is 8: without a per-key limit one key could take every place in the line."""
    slow = pb.SegmentRequest(image=encode(scene(160, 120, seed=2)), **SLOW)
    running = [server.stub.Segment.future(slow, metadata=as_(ALICE)) for _ in range(2)]
    try:
        from samsvc.v1 import health_pb2

        wait_for(
            lambda: server.stub.CheckHealth(health_pb2.CheckHealthRequest(), metadata=as_(BOB)).inference.waiting == 1,
            what="alice's two calls running and waiting",
        )
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            server.stub.Segment(slow, metadata=as_(ALICE), timeout=30)
        assert time.monotonic() - started < 1.0
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert reason(refused.value) == "KEY_INFERENCE_LIMIT"
        quick = pb.SegmentRequest(image=encode(scene(32, 32)), **QUICK)
        assert server.stub.Segment(quick, metadata=as_(BOB), timeout=120).image_width == 32, "bob still gets in"
    finally:
        for call in running:
            call.cancel()


def test_one_key_cannot_queue_more_than_its_images(server: ServerThread) -> None:
    images = [encode(scene(48, 32, seed=i)) for i in range(3)]
    first = server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images), metadata=as_(ALICE))
    with pytest.raises(grpc.RpcError) as refused:
        server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images), metadata=as_(ALICE))
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert reason(refused.value) == "QUEUED_IMAGES_LIMIT"
    assert "MAX_QUEUED_IMAGES_PER_KEY" in (refused.value.details() or "")
    assert server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images), metadata=as_(BOB)).job_id, "bob's own"
    server.stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id), metadata=as_(ALICE))
    assert server.stub.SubmitBatch(pb.SubmitBatchRequest(images=images), metadata=as_(ALICE)).job_id


def test_a_key_makes_the_server_load_only_its_models(server: ServerThread) -> None:
    image = encode(scene(32, 32))
    assert server.stub.Segment(pb.SegmentRequest(image=image, **QUICK), metadata=as_(TINY_ONLY)).masks is not None
    # vit_h's weights are absent: without the check this would try to load it (and fail 412).
    lab = as_(TINY_ONLY)
    prompts = [pb.Prompt(points=[pb.PointPrompt(x=8, y=8)])]
    calls = {
        "Segment": lambda: server.stub.Segment(pb.SegmentRequest(image=image, model_type="vit_h"), metadata=lab),
        "SegmentPrompts": lambda: server.stub.SegmentPrompts(
            pb.SegmentPromptsRequest(image=image, model_type="vit_h", prompts=prompts), metadata=lab
        ),
        "SubmitBatch": lambda: server.stub.SubmitBatch(
            pb.SubmitBatchRequest(images=[image], options=pb.SegmentOptions(model_type="vit_h")), metadata=lab
        ),
    }
    for name, call in calls.items():
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED, name
        assert reason(refused.value) == "MODEL_NOT_ALLOWED", name


def test_key_names_are_checked() -> None:
    with pytest.raises(ConfigurationError):
        parse_keys([f"bad name:{digest('x')}"])
    assert parse_keys([f"lab.1_a-b:{digest('x')}:vit_b+tiny"])[digest("x")].models == frozenset({"vit_b", "tiny"})
