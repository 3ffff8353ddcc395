"""Our automatic mask generation returns exactly what segment-anything's reference does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam

from samsvc.engine.amg_types import AmgOptions, CancelToken
from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.engine.sam.amg import generate_masks
from samsvc.errors import Cancelled
from tests.support import scene

PERMISSIVE: dict[str, Any] = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)


@pytest.fixture(scope="module")
def sam(tiny_checkpoint: tuple[Path, str]) -> Sam:
    path, digest = tiny_checkpoint
    return load_checkpoint(
        ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest), torch.device("cpu")
    )


@pytest.mark.parametrize(
    "params",
    [
        dict(points_per_side=4, box_nms_thresh=1.0),
        dict(points_per_side=3, points_per_batch=5, box_nms_thresh=1.0, stability_score_offset=0.5),
        dict(points_per_side=3, crop_n_layers=1, box_nms_thresh=1.0, crop_nms_thresh=1.0),
        dict(points_per_side=4, box_nms_thresh=1.0, min_mask_region_area=40),
    ],
    ids=["grid", "small-batches", "crop-layer", "small-regions"],
)
def test_parity_with_reference(sam: Sam, params: dict[str, Any]) -> None:
    image = scene(120, 90, seed=7)
    kwargs = {**PERMISSIVE, **params}
    ours = generate_masks(sam, image, AmgOptions(**kwargs))
    theirs = SamAutomaticMaskGenerator(sam, **kwargs).generate(image)
    assert len(ours) == len(theirs) > 1
    for mine, ref in zip(ours, theirs, strict=True):
        assert np.array_equal(mine.segmentation, ref["segmentation"])
        assert list(mine.bbox) == ref["bbox"]
        assert mine.area == ref["area"]
        assert mine.predicted_iou == ref["predicted_iou"]
        assert mine.stability_score == ref["stability_score"]
        assert [list(p) for p in mine.point_coords] == ref["point_coords"]
        assert list(mine.crop_box) == ref["crop_box"]


class CancelAfter(CancelToken):
    """Cancels itself at the n-th safe point, counting how many it saw."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n
        self.checks = 0

    def raise_if_cancelled(self) -> None:
        self.checks += 1
        if self.checks >= self.n:
            self.cancel()
        super().raise_if_cancelled()


def test_cancellation_stops_between_prompt_batches(sam: Sam) -> None:
    token = CancelAfter(3)
    options = AmgOptions(points_per_side=8, points_per_batch=4, **PERMISSIVE)  # 16 batches
    with pytest.raises(Cancelled):
        generate_masks(sam, scene(64, 48), options, token)
    assert token.checks == 3


def test_cancelled_before_start_does_no_work(sam: Sam) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        generate_masks(sam, scene(64, 48), AmgOptions(points_per_side=2), token)


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_kept_masks_stay_runs_until_asked_for(sam: Sam, fast: bool) -> None:
    """A kept mask holds its run lengths (4 bytes a run), never an H x W array: the memory of a
    request's masks grows with their outlines, not with masks x pixels."""
    import dataclasses

    image = scene(320, 240, seed=3)
    records = generate_masks(sam, image, AmgOptions(points_per_side=4, box_nms_thresh=1.0, **PERMISSIVE), fast=fast)
    assert len(records) > 10
    for record in records:
        held = [getattr(record, f.name) for f in dataclasses.fields(record)]
        assert not any(isinstance(v, np.ndarray) and v.size >= 320 * 240 for v in held)
        assert record.rle["counts"].dtype == np.uint32
        assert record.segmentation.shape == (240, 320) and int(record.segmentation.sum()) == record.area


def test_a_solid_mask_as_runs_is_a_small_fraction_of_its_pixels() -> None:
    from segment_anything.utils.amg import mask_to_rle_pytorch

    from samsvc.engine.amg_types import compact_rle, rle_to_mask

    yy, xx = np.mgrid[0:768, 0:1024]
    disc = (xx - 500) ** 2 + (yy - 400) ** 2 < 300**2
    (rle,) = mask_to_rle_pytorch(torch.from_numpy(disc)[None])
    runs = compact_rle(rle)
    assert runs["counts"].nbytes < disc.nbytes / 100
    assert np.array_equal(rle_to_mask(runs), disc)
