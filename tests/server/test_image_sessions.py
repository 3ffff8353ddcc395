"""Image sessions and embeddings over a real channel: an image uploaded once and prompted by id,
refinement from the session's previous answer, expiry by time and by memory, ownership, and
the embedding as raw tensors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest

from samsvc.config import Settings
from samsvc.engine.loader import ModelManager
from samsvc.engine.sam.embedding import embed
from samsvc.server.auth import digest, new_key
from samsvc.v1 import interactive_pb2 as ipb
from samsvc.v1 import mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.validation.image import ImageLimits, load_image
from tests.support import ServerThread, encode, rich_status, scene, wait_for

RLE = mask_pb2.MASK_FORMAT_RLE


@dataclass
class Keys:
    server: ServerThread
    alice: list[tuple[str, str]]
    #: Another key that may use every model.
    carol: list[tuple[str, str]]
    #: A key that may use vit_b only.
    bob: list[tuple[str, str]]


@pytest.fixture(scope="module")
def keyed(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    alice, carol, bob = new_key(), new_key(), new_key()
    settings = base_settings.model_copy(
        update={
            "api_keys": [f"alice:{digest(alice)}", f"carol:{digest(carol)}", f"bob:{digest(bob)}:vit_b"],
            "data_dir": str(tmp_path_factory.mktemp("data")),
        }
    )
    server = ServerThread(settings)
    yield Keys(server, [("x-api-key", alice)], [("x-api-key", carol)], [("x-api-key", bob)])
    server.stop()


def code_reason(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return error.code(), rich_status(error)[1]["ErrorInfo"].reason


def click(image_id: str, x: float, y: float, **options: object) -> pb.SegmentPromptsRequest:
    return pb.SegmentPromptsRequest(
        image_id=image_id, prompts=[pb.Prompt(points=[pb.PointPrompt(x=x, y=y)])], mask_format=RLE, **options
    )


def test_prompts_by_image_id_answer_as_the_uploaded_image(keyed: Keys) -> None:
    stub, alice = keyed.server.stub, keyed.alice
    image = encode(scene(160, 120, seed=31))
    session = stub.CreateImageSession(ipb.CreateImageSessionRequest(image=image), metadata=alice)
    assert session.image_id.startswith("img_") and session.image_id.endswith("_tiny")
    assert (session.image_width, session.image_height, session.model_type) == (160, 120, "tiny")
    assert session.expire_time.seconds > time.time() + 3000
    # The same bytes and model always give the same id.
    again = stub.CreateImageSession(ipb.CreateImageSessionRequest(image=image), metadata=alice)
    assert again.image_id == session.image_id and again.embedding_cache_hit

    by_id = stub.SegmentPrompts(click(session.image_id, 60, 40, multimask_output=True), metadata=alice)
    sent = stub.SegmentPrompts(
        pb.SegmentPromptsRequest(
            image=image,
            prompts=[pb.Prompt(points=[pb.PointPrompt(x=60, y=40)])],
            multimask_output=True,
            mask_format=RLE,
        ),
        metadata=alice,
    )
    assert by_id.embedding_cache_hit
    assert (by_id.image_width, by_id.image_height) == (160, 120)
    assert [m.rle.counts for m in by_id.results[0].masks] == [m.rle.counts for m in sent.results[0].masks]
    assert [m.predicted_iou for m in by_id.results[0].masks] == [m.predicted_iou for m in sent.results[0].masks]
    got = stub.GetImageSession(ipb.GetImageSessionRequest(image_id=session.image_id), metadata=alice)
    assert got.image_id == session.image_id


def test_refine_previous_uses_the_best_logits_of_the_last_answer(keyed: Keys) -> None:
    stub, alice = keyed.server.stub, keyed.alice
    image = encode(scene(128, 96, seed=32))
    image_id = stub.CreateImageSession(ipb.CreateImageSessionRequest(image=image), metadata=alice).image_id
    first = stub.SegmentPrompts(click(image_id, 50, 30, multimask_output=True, return_logits=True), metadata=alice)
    scores = [m.predicted_iou for m in first.results[0].masks]
    logits = np.frombuffer(first.results[0].low_res_logits, dtype="<f4").reshape(3, 256, 256)
    best = logits[int(np.argmax(scores))]

    refined = stub.SegmentPrompts(
        pb.SegmentPromptsRequest(
            image_id=image_id,
            prompts=[pb.Prompt(points=[pb.PointPrompt(x=50, y=30), pb.PointPrompt(x=80, y=60)], refine_previous=True)],
            mask_format=RLE,
        ),
        metadata=alice,
    )
    explicit = stub.SegmentPrompts(
        pb.SegmentPromptsRequest(
            image=image,
            prompts=[
                pb.Prompt(
                    points=[pb.PointPrompt(x=50, y=30), pb.PointPrompt(x=80, y=60)],
                    mask_logits=best.astype("<f4").tobytes(),
                )
            ],
            mask_format=RLE,
        ),
        metadata=alice,
    )
    assert refined.results[0].masks[0].rle.counts == explicit.results[0].masks[0].rle.counts
    assert refined.results[0].masks[0].predicted_iou == explicit.results[0].masks[0].predicted_iou
    without = stub.SegmentPrompts(
        pb.SegmentPromptsRequest(
            image_id=image_id,
            prompts=[pb.Prompt(points=[pb.PointPrompt(x=50, y=30), pb.PointPrompt(x=80, y=60)])],
            mask_format=RLE,
        ),
        metadata=alice,
    )
    assert without.results[0].masks[0].predicted_iou != refined.results[0].masks[0].predicted_iou


def test_sessions_belong_to_their_key(keyed: Keys) -> None:
    stub = keyed.server.stub
    image_id = stub.CreateImageSession(
        ipb.CreateImageSessionRequest(image=encode(scene(64, 48, seed=33))), metadata=keyed.alice
    ).image_id
    for call in (
        lambda: stub.SegmentPrompts(click(image_id, 10, 10), metadata=keyed.carol),
        lambda: stub.GetImageSession(ipb.GetImageSessionRequest(image_id=image_id), metadata=keyed.carol),
        lambda: stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image_id=image_id), metadata=keyed.carol),
        lambda: stub.DeleteImageSession(ipb.DeleteImageSessionRequest(image_id=image_id), metadata=keyed.carol),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert code_reason(caught.value) == (grpc.StatusCode.NOT_FOUND, "IMAGE_SESSION_EXPIRED")
    with pytest.raises(grpc.RpcError) as caught:
        stub.SegmentPrompts(click(image_id, 10, 10), metadata=[("x-api-key", new_key())])
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # bob may use vit_b only: the tiny session is refused before any lookup.
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateImageSession(ipb.CreateImageSessionRequest(image=encode(scene(64, 48))), metadata=keyed.bob)
    assert code_reason(caught.value) == (grpc.StatusCode.PERMISSION_DENIED, "MODEL_NOT_ALLOWED")
    # alice's session is still there, and ends when she deletes it.
    stub.SegmentPrompts(click(image_id, 10, 10), metadata=keyed.alice)
    stub.DeleteImageSession(ipb.DeleteImageSessionRequest(image_id=image_id), metadata=keyed.alice)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SegmentPrompts(click(image_id, 10, 10), metadata=keyed.alice)
    assert code_reason(caught.value) == (grpc.StatusCode.NOT_FOUND, "IMAGE_SESSION_EXPIRED")


def test_bad_prompts_are_named(keyed: Keys) -> None:
    stub, alice = keyed.server.stub, keyed.alice
    image_id = stub.CreateImageSession(
        ipb.CreateImageSessionRequest(image=encode(scene(100, 50, seed=34))), metadata=alice
    ).image_id
    cases = {
        "prompts[0].points[0].x": click(image_id, 101, 10),
        "prompts[0].points[0].y": click(image_id, 10, 51),
        "prompts[0].box": pb.SegmentPromptsRequest(
            image_id=image_id, prompts=[pb.Prompt(box=pb.BoxPrompt(x0=0, y0=0, x1=100, y1=60))]
        ),
        "prompts[0].points": pb.SegmentPromptsRequest(
            image_id=image_id, prompts=[pb.Prompt(points=[pb.PointPrompt(x=1, y=1)] * 65)]
        ),
        "prompts[0].refine_previous": pb.SegmentPromptsRequest(
            image=encode(scene(100, 50)), prompts=[pb.Prompt(points=[pb.PointPrompt(x=1, y=1)], refine_previous=True)]
        ),
    }
    for field, request in cases.items():
        with pytest.raises(grpc.RpcError) as caught:
            stub.SegmentPrompts(request, metadata=alice)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        fields = [v.field for v in rich_status(caught.value)[1]["BadRequest"].field_violations]
        assert field in fields, (field, fields)
    for bad_id in ("nope", "img_123_tiny", "img_" + "g" * 32 + "_tiny"):
        with pytest.raises(grpc.RpcError) as caught:
            stub.SegmentPrompts(click(bad_id, 1, 1), metadata=alice)
        assert code_reason(caught.value) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_IMAGE_ID")
    with pytest.raises(grpc.RpcError) as caught:
        stub.SegmentPrompts(click("img_" + "0" * 32 + "_tiny", 1, 1), metadata=alice)
    assert code_reason(caught.value) == (grpc.StatusCode.NOT_FOUND, "IMAGE_SESSION_EXPIRED")
    with pytest.raises(grpc.RpcError) as caught:
        stub.SegmentPrompts(click(image_id, 1, 1, model_type="vit_b"), metadata=alice)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The service keeps serving.
    assert stub.SegmentPrompts(click(image_id, 50, 25), metadata=alice).results


def test_embedding_is_the_encoders_output_with_its_transform(keyed: Keys, base_settings: Settings) -> None:
    stub, alice = keyed.server.stub, keyed.alice
    image = encode(scene(150, 100, seed=35))
    message = stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image=image), metadata=alice)
    (tensor,) = message.tensors
    assert (tensor.name, list(tensor.shape), tensor.dtype) == ("image_embeddings", [1, 256, 64, 64], 1)
    loaded = ModelManager.from_options(base_settings.model_options()).get("tiny")
    assert message.checkpoint_sha256 == loaded.digest
    expected = embed(loaded.model, load_image(image, ImageLimits(max_bytes=len(image), max_side=1024)))
    ours = np.frombuffer(tensor.data, dtype="<f4").reshape(1, 256, 64, 64)
    assert np.allclose(ours, expected.features.numpy(), atol=1e-5)
    t = message.transform
    assert (t.original_width, t.original_height, t.resized_width, t.resized_height) == (150, 100, 1024, 683)
    assert (t.input_size, t.mask_input_size) == (1024, 256) and t.scale == pytest.approx(1024 / 150)

    half = stub.GetImageEmbedding(
        ipb.GetImageEmbeddingRequest(image=image, dtype=ipb.TENSOR_DTYPE_FLOAT16), metadata=alice
    )
    assert half.embedding_cache_hit and half.tensors[0].dtype == ipb.TENSOR_DTYPE_FLOAT16
    assert len(half.tensors[0].data) == 256 * 64 * 64 * 2
    halves = np.frombuffer(half.tensors[0].data, dtype="<f2").astype(np.float32).reshape(1, 256, 64, 64)
    assert np.allclose(halves, ours, rtol=1e-3, atol=1e-3)
    # By session id: the same tensor, no upload.
    image_id = stub.CreateImageSession(ipb.CreateImageSessionRequest(image=image), metadata=alice).image_id
    by_id = stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image_id=image_id), metadata=alice)
    assert by_id.tensors[0].data == tensor.data and by_id.image_id == image_id == message.image_id
    # The raw form carries the tensor as the body and its description as headers.
    body, call = stub.GetImageEmbeddingRaw.with_call(ipb.GetImageEmbeddingRequest(image_id=image_id), metadata=alice)
    headers = dict(call.initial_metadata())
    assert body.content_type == "application/octet-stream" and body.data == tensor.data
    assert headers["x-samsvc-shape"] == "1,256,64,64" and headers["x-samsvc-dtype"] == "float32"
    assert headers["x-samsvc-checkpoint-sha256"] == loaded.digest and headers["x-samsvc-original-size"] == "100,150"


def test_sessions_expire_after_their_ttl_and_when_memory_is_full(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    one_session = 256 * 64 * 64 * 4 + 3 * 256 * 256 * 4  # an embedding and a few logits
    settings = base_settings.model_copy(
        update={
            "image_session_ttl_s": 2,
            "image_session_bytes": one_session,
            "data_dir": str(tmp_path_factory.mktemp("d")),
        }
    )
    server = ServerThread(settings)
    try:
        stub = server.stub
        first = stub.CreateImageSession(ipb.CreateImageSessionRequest(image=encode(scene(64, 48, seed=36)))).image_id
        stub.SegmentPrompts(click(first, 5, 5))
        second = stub.CreateImageSession(ipb.CreateImageSessionRequest(image=encode(scene(64, 48, seed=37)))).image_id
        # The budget holds one session: the least recently used went.
        with pytest.raises(grpc.RpcError) as caught:
            stub.SegmentPrompts(click(first, 5, 5))
        assert code_reason(caught.value) == (grpc.StatusCode.NOT_FOUND, "IMAGE_SESSION_EXPIRED")
        stub.SegmentPrompts(click(second, 5, 5))

        def expired() -> bool:
            try:
                stub.GetImageSession(ipb.GetImageSessionRequest(image_id=second))
            except grpc.RpcError as error:
                return code_reason(error) == (grpc.StatusCode.NOT_FOUND, "IMAGE_SESSION_EXPIRED")
            return False

        started = time.monotonic()
        wait_for(expired, timeout=20, interval=0.2, what="the session to expire")
        assert time.monotonic() - started > 0.5  # it lived until its TTL, renewed by the last use
    finally:
        server.stop()


def test_session_calls_are_charged_to_the_callers_rate_limit(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    key = new_key()
    settings = base_settings.model_copy(
        update={
            "api_keys": [f"carol:{digest(key)}"],
            "rate_limit_requests_per_minute": 4,
            "data_dir": str(tmp_path_factory.mktemp("data")),
        }
    )
    server = ServerThread(settings)
    try:
        metadata = [("x-api-key", key)]
        image_id = server.stub.CreateImageSession(
            ipb.CreateImageSessionRequest(image=encode(scene(64, 48, seed=38))), metadata=metadata
        ).image_id
        for _ in range(3):  # the session's own calls count like any other
            server.stub.SegmentPrompts(click(image_id, 5, 5), metadata=metadata)
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.SegmentPrompts(click(image_id, 5, 5), metadata=metadata)
        assert code_reason(caught.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
        with pytest.raises(grpc.RpcError) as caught:
            server.stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image_id=image_id), metadata=metadata)
        assert code_reason(caught.value) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    finally:
        server.stop()
