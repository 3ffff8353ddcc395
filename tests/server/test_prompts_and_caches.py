"""Prompted segmentation (points, boxes, mask logits) with embedding reuse, and the Segment
result cache, over a real channel."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from segment_anything.predictor import SamPredictor

from samsvc.config import Settings
from samsvc.encoding.masks import MaskEncoding, Rle, decode_rle
from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.inference.pipeline import SegmentTask, result_cache_key
from samsvc.v1 import mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.validation.image import ImageHeader
from tests.support import ServerThread, encode, rich_status, scene

RLE = mask_pb2.MASK_FORMAT_RLE


@pytest.fixture(scope="module")
def server_settings(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    settings = base_settings.model_copy(
        update={"result_cache_ttl_s": 600, "data_dir": str(tmp_path_factory.mktemp("data"))}
    )
    return settings


def mask_of(mask: mask_pb2.Mask) -> np.ndarray:
    return decode_rle(Rle(size=(mask.rle.size[0], mask.rle.size[1]), counts=mask.rle.counts))


def test_point_prompts_equal_the_predictor(server: ServerThread, tiny_checkpoint: tuple[Path, str]) -> None:
    image = scene(120, 90, seed=21)
    request = pb.SegmentPromptsRequest(
        image=encode(image),
        prompts=[
            pb.Prompt(points=[pb.PointPrompt(x=30, y=40), pb.PointPrompt(x=90, y=20, background=True)]),
            pb.Prompt(box=pb.BoxPrompt(x0=10, y0=10, x1=70, y1=60)),
        ],
        multimask_output=True,
        mask_format=RLE,
        return_logits=True,
    )
    response = server.stub.SegmentPrompts(request)
    assert (response.image_width, response.image_height) == (120, 90)
    assert [len(r.masks) for r in response.results] == [3, 3]
    assert len(response.results[0].low_res_logits) == 3 * 256 * 256 * 4

    path, digest = tiny_checkpoint
    sam = load_checkpoint(
        ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest), torch.device("cpu")
    )
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(
        point_coords=np.array([[30, 40], [90, 20]], dtype=np.float32),
        point_labels=np.array([1, 0]),
        multimask_output=True,
    )
    for ours, theirs, score in zip(response.results[0].masks, masks, scores, strict=True):
        assert np.array_equal(mask_of(ours), theirs)
        assert ours.predicted_iou == pytest.approx(float(score), abs=1e-6)
        assert ours.area == int(theirs.sum())


def test_second_prompt_reuses_the_embedding_and_logits_refine(server: ServerThread) -> None:
    image = encode(scene(100, 80, seed=22))
    first = server.stub.SegmentPrompts(
        pb.SegmentPromptsRequest(
            image=image, prompts=[pb.Prompt(points=[pb.PointPrompt(x=50, y=40)])], return_logits=True
        )
    )
    assert not first.embedding_cache_hit and len(first.results[0].masks) == 1
    refine = pb.Prompt(points=[pb.PointPrompt(x=50, y=40)], mask_logits=first.results[0].low_res_logits)
    second = server.stub.SegmentPrompts(pb.SegmentPromptsRequest(image=image, prompts=[refine]))
    assert second.embedding_cache_hit
    assert len(second.results[0].masks) == 1


@pytest.mark.parametrize(
    "prompt,field",
    [
        (pb.Prompt(), "prompts[0]"),
        (pb.Prompt(points=[pb.PointPrompt(x=-1, y=3)]), "prompts[0].points[0].x"),
        (pb.Prompt(points=[pb.PointPrompt(x=float("nan"), y=3)]), "prompts[0].points[0].x"),
        (pb.Prompt(box=pb.BoxPrompt(x0=50, y0=10, x1=20, y1=40)), "prompts[0].box"),
        (pb.Prompt(mask_logits=b"\\x00" * 12), "prompts[0].mask_logits"),
    ],
)
def test_bad_prompts(server: ServerThread, prompt: pb.Prompt, field: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.SegmentPrompts(pb.SegmentPromptsRequest(image=encode(scene(64, 48)), prompts=[prompt]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in [v.field for v in rich_status(caught.value)[1]["BadRequest"].field_violations]


def test_no_prompts_is_refused(server: ServerThread) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        server.stub.SegmentPrompts(pb.SegmentPromptsRequest(image=encode(scene(64, 48))))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_result_cache_hits_only_for_the_same_question(server: ServerThread) -> None:
    image = encode(scene(96, 72, seed=23))
    params = {"points_per_side": 3, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "mask_format": RLE}
    first = server.stub.Segment(pb.SegmentRequest(image=image, **params))
    again = server.stub.Segment(pb.SegmentRequest(image=image, **params))
    assert not first.cache_hit and again.cache_hit
    assert again.job_id != first.job_id
    assert [m.rle.counts for m in again.masks] == [m.rle.counts for m in first.masks]
    assert [m.predicted_iou for m in again.masks] == [m.predicted_iou for m in first.masks]
    other = server.stub.Segment(pb.SegmentRequest(image=image, **{**params, "points_per_side": 2}))
    assert not other.cache_hit
    rebatched = server.stub.Segment(pb.SegmentRequest(image=image, points_per_batch=5, **params))
    assert rebatched.cache_hit, "points_per_batch changes speed only"


def test_cache_key_covers_every_output_affecting_input() -> None:
    header = ImageHeader("PNG", 4, 4)
    base = SegmentTask(b"image", header, "tiny", AmgOptions(), MaskEncoding.PNG, False)
    key = result_cache_key(base, "digest", "alice")
    variants = [
        result_cache_key(base, "another-digest", "alice"),
        result_cache_key(base, "digest", "bob"),
        result_cache_key(replace(base, image=b"other"), "digest", "alice"),
        result_cache_key(replace(base, model="vit_b"), "digest", "alice"),
        result_cache_key(replace(base, encoding=MaskEncoding.RLE), "digest", "alice"),
        result_cache_key(replace(base, visualize=True), "digest", "alice"),
        result_cache_key(replace(base, fast=True), "digest", "alice"),
    ]
    for name in AmgOptions.__dataclass_fields__:
        if name == "points_per_batch":
            continue
        value = getattr(base.options, name)
        changed = replace(base.options, **{name: value + 1 if isinstance(value, int) else value / 2 + 0.01})
        variants.append(result_cache_key(replace(base, options=changed), "digest", "alice"))
    assert key not in variants and len(set(variants)) == len(variants)
    assert result_cache_key(replace(base, options=replace(base.options, points_per_batch=7)), "digest", "alice") == key
