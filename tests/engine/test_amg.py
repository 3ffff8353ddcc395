"""Our automatic mask generation returns exactly what segment-anything's reference does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam

from samsvc.engine.amg import AmgOptions, CancelToken, generate_masks
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.loader import load_checkpoint
from samsvc.engine.registry import ModelSource, ModelSpec
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
