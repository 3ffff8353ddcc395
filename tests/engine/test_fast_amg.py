"""samsvc's faster automatic mask generation gives the reference's answer: the same masks in the
same order (IoU >= 0.999 each), the same boxes, scores within 1e-4, on many images and
parameter sets drawn by hypothesis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from segment_anything.modeling import Sam
from segment_anything.utils.amg import mask_to_rle_pytorch

from samsvc.engine.amg import AmgOptions, CancelToken, MaskRecord, generate_masks
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.fast_amg import masks_to_rles
from samsvc.engine.loader import load_checkpoint
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.errors import Cancelled
from tests.support import scene


@pytest.fixture(scope="module")
def sam(tiny_checkpoint: tuple[Path, str]) -> Sam:
    path, digest = tiny_checkpoint
    spec = ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest)
    return load_checkpoint(spec, torch.device("cpu"))


def assert_same_answer(reference: list[MaskRecord], fast: list[MaskRecord]) -> None:
    assert len(fast) == len(reference)
    for ours, theirs in zip(fast, reference, strict=True):
        union = np.logical_or(ours.segmentation, theirs.segmentation).sum()
        inter = np.logical_and(ours.segmentation, theirs.segmentation).sum()
        assert union == 0 or inter / union >= 0.999
        assert ours.bbox == theirs.bbox and ours.crop_box == theirs.crop_box
        assert ours.point_coords == theirs.point_coords
        assert abs(ours.predicted_iou - theirs.predicted_iou) <= 1e-4
        assert abs(ours.stability_score - theirs.stability_score) <= 1e-4
        assert abs(ours.area - theirs.area) <= max(1, 0.001 * theirs.area)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seed=st.integers(0, 10_000),
    width=st.integers(40, 160),
    height=st.integers(40, 160),
    points=st.integers(1, 4),
    batch=st.sampled_from([3, 16, 64]),
    nms=st.sampled_from([0.7, 0.9, 1.0]),
    iou=st.sampled_from([0.0, 0.1]),
    offset=st.sampled_from([1.0, 0.5]),
)
def test_same_answer_as_the_reference(
    sam: Sam, seed: int, width: int, height: int, points: int, batch: int, nms: float, iou: float, offset: float
) -> None:
    image = scene(width, height, seed=seed)
    options = AmgOptions(
        points_per_side=points,
        points_per_batch=batch,
        pred_iou_thresh=iou,
        stability_score_thresh=0.0,
        stability_score_offset=offset,
        box_nms_thresh=nms,
    )
    assert_same_answer(generate_masks(sam, image, options), generate_masks(sam, image, options, fast=True))


@pytest.mark.parametrize(
    "params",
    [
        {"crop_n_layers": 1, "box_nms_thresh": 1.0, "crop_nms_thresh": 1.0, "points_per_side": 3},
        {"min_mask_region_area": 40, "box_nms_thresh": 1.0, "points_per_side": 3},
    ],
    ids=["crop-layer", "small-regions"],
)
def test_same_answer_with_crops_and_region_cleanup(sam: Sam, params: dict[str, Any]) -> None:
    image = scene(120, 90, seed=11)
    options = AmgOptions(pred_iou_thresh=0.0, stability_score_thresh=0.0, **params)
    assert_same_answer(generate_masks(sam, image, options), generate_masks(sam, image, options, fast=True))


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 6).flatmap(lambda b: st.lists(st.booleans(), min_size=b * 35, max_size=b * 35).map(lambda v: (b, v)))
)
def test_rle_equals_the_reference(shape_and_values: tuple[int, list[bool]]) -> None:
    b, values = shape_and_values
    masks = torch.tensor(values, dtype=torch.bool).reshape(b, 5, 7)
    assert masks_to_rles(masks) == mask_to_rle_pytorch(masks)


def test_fast_generation_is_cancellable(sam: Sam) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        generate_masks(sam, scene(64, 48), AmgOptions(points_per_side=2), token, fast=True)
