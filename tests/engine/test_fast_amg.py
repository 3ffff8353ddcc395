"""samsvc's faster automatic mask generation gives the reference's answer: the same masks in the
same order (each the same mask as tests.support.masks defines it: IoU >= 0.999 or a few
boundary pixels), the same boxes (a pixel off where boundary pixels differ), scores within 1e-4, on many images and
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
from segment_anything.utils.amg import MaskData, mask_to_rle_pytorch
from segment_anything.utils.amg import rle_to_mask as reference_rle_to_mask

from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord, rle_to_mask
from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.engine.sam import fast_decoder
from samsvc.engine.sam.amg import generate_masks
from samsvc.engine.sam.fast_amg import DEFAULT_CPU_UPSAMPLE_GROUP, UnsharedMaskData, masks_to_rles, upsample_masks
from samsvc.engine.sam.fast_decoder import predict_masks
from samsvc.errors import Cancelled
from tests.support import scene
from tests.support.masks import same_box, same_mask


@pytest.fixture(scope="module")
def sam(tiny_checkpoint: tuple[Path, str]) -> Sam:
    path, digest = tiny_checkpoint
    spec = ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest)
    return load_checkpoint(spec, torch.device("cpu"))


def assert_same_answer(reference: list[MaskRecord], fast: list[MaskRecord]) -> None:
    assert len(fast) == len(reference)
    for ours, theirs in zip(fast, reference, strict=True):
        assert same_mask(ours.segmentation, theirs.segmentation)
        equal = bool((ours.segmentation == theirs.segmentation).all())
        assert same_box(ours.bbox, theirs.bbox, equal) and ours.crop_box == theirs.crop_box
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
    # Random weights predict IoUs of about -0.02..0.06: 0.01 and 0.03 drop some prompts' masks
    # entirely (never upscaled) and keep others.
    iou=st.sampled_from([0.0, 0.01, 0.03, 0.1]),
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


def test_prompts_whose_masks_all_fail_the_iou_filter_are_skipped_with_the_same_answer(sam: Sam) -> None:
    image = scene(160, 120, seed=3)
    options = AmgOptions(points_per_side=4, pred_iou_thresh=0.025, stability_score_thresh=0.0, box_nms_thresh=1.0)
    reference = generate_masks(sam, image, options)
    prompts_with_masks = {m.point_coords for m in reference}
    assert 0 < len(prompts_with_masks) < 16, "some prompts keep masks, some lose all three"
    assert_same_answer(reference, generate_masks(sam, image, options, fast=True))


def test_crop_layers_without_any_mask_give_no_masks(sam: Sam) -> None:
    """segment-anything's own generator fails (IndexError) when no crop keeps a mask; both
    engines here answer with no masks."""
    options = AmgOptions(points_per_side=2, crop_n_layers=1, pred_iou_thresh=0.99, stability_score_thresh=0.0)
    assert generate_masks(sam, scene(90, 60, seed=1), options) == []
    assert generate_masks(sam, scene(90, 60, seed=1), options, fast=True) == []


@pytest.mark.parametrize("chunk", [fast_decoder.DEFAULT_UPSCALE_CHUNK, 1000])
@pytest.mark.parametrize("prompts", [1, 5])
def test_decoder_matches_the_reference_decoder(
    sam: Sam, prompts: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Folded attention and the matrix-product upscaling (in chunks of image tokens, also of a
    size that leaves a shorter last chunk) give segment-anything's decoder output."""
    monkeypatch.setattr(fast_decoder, "DEFAULT_UPSCALE_CHUNK", chunk)
    generator = torch.Generator().manual_seed(prompts)
    embedding = torch.randn(1, 256, 64, 64, generator=generator)
    points = torch.rand(prompts, 1, 2, generator=generator) * 1024
    labels = torch.ones(prompts, 1, dtype=torch.int)
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points=(points, labels), boxes=None, masks=None)
        dense_pe = sam.prompt_encoder.get_dense_pe()
        masks, iou = predict_masks(sam.mask_decoder, embedding, dense_pe, sparse, dense)
        ref_masks, ref_iou = sam.mask_decoder.predict_masks(embedding, dense_pe, sparse, dense)
    assert masks.shape == ref_masks.shape == (prompts, 4, 256, 256)
    torch.testing.assert_close(masks, ref_masks, rtol=0, atol=1e-4)
    torch.testing.assert_close(iou, ref_iou, rtol=0, atol=1e-5)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    height=st.integers(8, 2048), width=st.integers(8, 2048), masks=st.integers(1, 2 * DEFAULT_CPU_UPSAMPLE_GROUP + 1),
    seed=st.integers(0, 1000),
)  # fmt: skip
def test_upsampling_is_bit_identical_to_the_reference(sam: Sam, height: int, width: int, masks: int, seed: int) -> None:
    """Also when the masks are upsampled in groups (more than DEFAULT_CPU_UPSAMPLE_GROUP)."""
    low_res = torch.randn(masks, 1, 256, 256, generator=torch.Generator().manual_seed(seed))
    scale = 1024 / max(height, width)
    input_size = (int(height * scale + 0.5), int(width * scale + 0.5))
    ours = upsample_masks(sam, low_res, input_size, (height, width))
    assert torch.equal(ours, sam.postprocess_masks(low_res, input_size, (height, width)))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=12), st.integers(1, 9))
def test_rle_decoding_equals_the_reference(runs: list[int], height: int) -> None:
    total = sum(runs)
    width = -(-total // height) if total else 1
    counts = [*runs, height * width - total]
    rle = {"size": [height, width], "counts": counts}
    assert np.array_equal(rle_to_mask(rle), reference_rle_to_mask(rle))


def test_mask_data_joins_and_filters_like_the_reference() -> None:
    def batch(offset: int) -> dict[str, Any]:
        return {
            "rles": [{"counts": [offset, i]} for i in range(3)],
            "boxes": torch.arange(12).reshape(3, 4) + offset,
            "points": np.arange(6).reshape(3, 2) + offset,
        }

    ours, theirs = UnsharedMaskData(), MaskData()
    for offset in (0, 10):
        ours.cat(UnsharedMaskData(**batch(offset)))
        theirs.cat(MaskData(**batch(offset)))
    for keep in (torch.tensor([True, False, True, True, False, True]), torch.tensor([3, 0])):
        ours.filter(keep)
        theirs.filter(keep)
        assert ours["rles"] == theirs["rles"]
        assert torch.equal(ours["boxes"], theirs["boxes"])
        assert np.array_equal(ours["points"], theirs["points"])
