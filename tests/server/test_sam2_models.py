"""SAM 2.1 through the service's contracts: a server serving a SAM and a SAM 2.1 model side by
side (random weights, MODELS_FILE) answers Segment, batches, SegmentPrompts, image sessions
and GetImageEmbedding for the SAM 2.1 model as the sam2 package's generator and predictor do,
lists it with its family, and says clearly what it does not offer (an ONNX decoder; use_m2m
on SAM)."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from PIL import Image
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from samsvc.config import Settings
from samsvc.engine.checkpoints import SAM2_TINY_CONFIG
from samsvc.v1 import interactive_pb2 as ipb
from samsvc.v1 import job_pb2, mask_pb2, model_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene

PERMISSIVE = dict(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def server_settings(
    base_settings: Settings, sam2_models_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    settings = base_settings.model_copy(
        update={"models_file": sam2_models_file, "data_dir": str(tmp_path_factory.mktemp("data"))}
    )
    return settings


@pytest.fixture(scope="module")
def theirs(sam2_checkpoint: tuple[Path, str]) -> torch.nn.Module:
    return build_sam2(SAM2_TINY_CONFIG, str(sam2_checkpoint[0]), device="cpu")


def png_mask(mask: mask_pb2.Mask) -> np.ndarray:
    return np.array(Image.open(io.BytesIO(mask.segmentation))) > 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def expected_masks(theirs: torch.nn.Module, image: np.ndarray) -> list[dict[str, object]]:
    generator = SAM2AutomaticMaskGenerator(theirs, **PERMISSIVE)  # type: ignore[arg-type]
    return generator.generate(image)


def assert_masks_equal(masks: list[mask_pb2.Mask], reference: list[dict[str, object]]) -> None:
    assert len(masks) == len(reference) > 0
    for mine, their in zip(masks, reference, strict=True):
        assert iou(png_mask(mine), their["segmentation"]) >= 0.999  # type: ignore[arg-type]
        assert abs(mine.predicted_iou - float(their["predicted_iou"])) <= 1e-4  # type: ignore[arg-type]
        assert abs(mine.stability_score - float(their["stability_score"])) <= 1e-4  # type: ignore[arg-type]


def test_list_models_shows_the_family(server: ServerThread, sam2_checkpoint: tuple[Path, str]) -> None:
    models = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest(page_size=100)).models}
    tiny2, tiny = models["tiny2"], models["tiny"]
    assert tiny2.family == model_pb2.MODEL_FAMILY_SAM2 and tiny2.config == SAM2_TINY_CONFIG
    assert not tiny2.HasField("architecture") and tiny2.sha256 == sam2_checkpoint[1]
    assert tiny.family == model_pb2.MODEL_FAMILY_SAM and tiny.architecture.encoder_embed_dim == 64
    official = models["sam2.1_hiera_large"]
    assert official.family == model_pb2.MODEL_FAMILY_SAM2 and official.url.endswith("/092824/sam2.1_hiera_large.pt")
    assert not official.weights_present


def test_segment_and_a_batch_equal_sam2s_generator(server: ServerThread, theirs: torch.nn.Module) -> None:
    images = [scene(96, 72, seed=21), scene(80, 64, seed=22)]
    response = server.stub.Segment(pb.SegmentRequest(image=encode(images[0]), model_type="tiny2", **PERMISSIVE))
    assert response.model_type == "tiny2"
    reference = [expected_masks(theirs, image) for image in images]
    assert_masks_equal(list(response.masks), reference[0])

    options = pb.SegmentOptions(model_type="tiny2", **PERMISSIVE)
    batch = pb.SubmitBatchRequest(images=[encode(i) for i in images], options=options)
    events = list(server.stub.SegmentBatch(batch, timeout=600))
    assert events[-1].finished.job.status == job_pb2.JOB_STATUS_COMPLETED
    results = {e.image.index: e.image for e in events if e.WhichOneof("event") == "image"}
    assert sorted(results) == [0, 1]
    for index, expected in enumerate(reference):
        assert_masks_equal(list(results[index].masks), expected)


def test_use_m2m_is_for_sam2_only(server: ServerThread, theirs: torch.nn.Module) -> None:
    image = scene(64, 48, seed=23)
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.Segment(pb.SegmentRequest(image=encode(image), model_type="tiny", use_m2m=True))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    _, details = rich_status(caught.value)
    assert [v.field for v in details["BadRequest"].field_violations] == ["use_m2m"]
    # The service keeps serving, and SAM 2 takes it.
    request = pb.SegmentRequest(image=encode(image), model_type="tiny2", use_m2m=True, **PERMISSIVE)
    refined = server.stub.Segment(request)
    generator = SAM2AutomaticMaskGenerator(theirs, use_m2m=True, **PERMISSIVE)  # type: ignore[arg-type]
    assert_masks_equal(list(refined.masks), generator.generate(image))


def test_prompts_sessions_and_the_embedding(server: ServerThread, theirs: torch.nn.Module) -> None:
    image = scene(120, 90, seed=24)
    data = encode(image)
    predictor = SAM2ImagePredictor(theirs)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(np.array([[40.0, 30.0]]), np.array([1]), multimask_output=True)

    prompt = pb.Prompt(points=[pb.PointPrompt(x=40, y=30)])
    sent = server.stub.SegmentPrompts(
        pb.SegmentPromptsRequest(image=data, model_type="tiny2", prompts=[prompt], multimask_output=True)
    )
    session = server.stub.CreateImageSession(ipb.CreateImageSessionRequest(image=data, model_type="tiny2"))
    by_id = server.stub.SegmentPrompts(
        pb.SegmentPromptsRequest(image_id=session.image_id, prompts=[prompt], multimask_output=True)
    )
    for answer in (sent, by_id):
        got = answer.results[0].masks
        assert len(got) == 3
        assert all(iou(png_mask(m), expected.astype(bool)) >= 0.999 for m, expected in zip(got, masks, strict=True))
        np.testing.assert_allclose([m.predicted_iou for m in got], scores, atol=1e-4)
    assert by_id.embedding_cache_hit

    embedding = server.stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image_id=session.image_id))
    assert embedding.model_type == "tiny2"
    features = predictor._features
    expected_tensors = [features["image_embed"], *features["high_res_feats"]]
    assert [t.name for t in embedding.tensors] == ["image_embed", "high_res_feats_0", "high_res_feats_1"]
    for tensor, expected in zip(embedding.tensors, expected_tensors, strict=True):
        assert list(tensor.shape) == list(expected.shape)
        array = np.frombuffer(tensor.data, dtype="<f4").reshape(list(tensor.shape))
        np.testing.assert_allclose(array, expected.numpy(), atol=1e-5)
    t = embedding.transform
    assert (t.resized_width, t.resized_height, t.input_size) == (1024, 1024, 1024)
    assert (t.scale_x, t.scale_y) == pytest.approx((1024 / 120, 1024 / 90))
    # The embedding cache holds all three tensors: a second request is a hit with the same bytes.
    again = server.stub.GetImageEmbedding(ipb.GetImageEmbeddingRequest(image=data, model_type="tiny2"))
    assert again.embedding_cache_hit
    assert [t.data for t in again.tensors] == [t.data for t in embedding.tensors]


def test_no_onnx_decoder_for_sam2(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.GetDecoderInfo(ipb.GetDecoderRequest(model_type="tiny2"))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    _, details = rich_status(caught.value)
    assert details["ErrorInfo"].reason == "DECODER_UNAVAILABLE"


def test_the_sdk_and_cli_flags_reach_sam2(server: ServerThread) -> None:
    import argparse

    from samsvc.client.commands.flags import add_option_flags, options_of
    from samsvc.client.sync import Client

    parser = argparse.ArgumentParser()
    add_option_flags(parser)
    args = parser.parse_args(["--use-m2m", "true", "--points-per-side", "3", "--model", "tiny2"])
    options = options_of(args)
    assert options["use_m2m"] is True and options["points_per_side"] == 3
    with pytest.raises(SystemExit):
        parser.parse_args(["--use-m2m", "maybe"])
    client = Client(server.address)
    try:
        image = scene(64, 48, seed=25)
        result = client.segment(image, model="tiny2", use_m2m=True, **PERMISSIVE)
        direct = server.stub.Segment(
            pb.SegmentRequest(image=encode(image), model_type="tiny2", use_m2m=True, **PERMISSIVE)
        )
        assert len(result.masks) == len(direct.masks) > 0
    finally:
        client.close()
