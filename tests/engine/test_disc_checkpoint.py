"""The hand-weighted disc model: built with segment-anything's builder, saved and loaded through
the user's path, its clicks give discs of the stated radii centred on the point with scores the
default thresholds keep, automatic generation keeps hundreds of distinct masks at the default
settings, and samsvc's fast engine gives segment-anything's answer on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam

from samsvc.engine.amg_types import AmgOptions, MaskRecord
from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.engine.sam.amg import generate_masks
from samsvc.engine.sam.disc_checkpoint import DISC_RADII, build_disc_checkpoint
from tests.support import scene


@pytest.fixture(scope="module")
def sam(tmp_path_factory: pytest.TempPathFactory) -> Sam:
    path = tmp_path_factory.mktemp("discs") / "discs.pth"
    digest = build_disc_checkpoint(path)
    spec = ModelSpec("discs", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest)
    return load_checkpoint(spec, torch.device("cpu"))


@pytest.mark.parametrize("point", [(512, 384), (130, 90), (900, 700)])
def test_a_click_gives_sharp_discs_of_the_stated_radii_around_it(sam: Sam, point: tuple[int, int]) -> None:
    image = scene(1024, 768, seed=3)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict(np.array([point]), np.array([1]), multimask_output=True)
    yy, xx = np.mgrid[0:768, 0:1024]
    for mask, radius in zip(masks, DISC_RADII[1:], strict=True):
        disc = (xx - point[0]) ** 2 + (yy - point[1]) ** 2 < (radius * 1024) ** 2
        inter, union = np.logical_and(mask, disc).sum(), np.logical_or(mask, disc).sum()
        # cos(w du) + cos(w dv) > 2 - delta is a disc for small radii, a rounded square for large
        assert inter / union > 0.9, "about a disc of that radius around the point (cut by the image's edges)"
    assert (scores > 0.88).all() and len(set(scores.tolist())) == 3
    (single,), _, _ = predictor.predict(np.array([point]), np.array([1]), multimask_output=False)
    disc = (xx - point[0]) ** 2 + (yy - point[1]) ** 2 < (DISC_RADII[0] * 1024) ** 2
    assert np.logical_and(single, disc).sum() / np.logical_or(single, disc).sum() > 0.95


def test_default_generation_keeps_hundreds_of_masks_and_the_fast_engine_gives_them(sam: Sam) -> None:
    image = scene(512, 384, seed=4)
    options = AmgOptions(points_per_side=16)  # the default thresholds: 0.88, 0.95, NMS 0.7
    reference = SamAutomaticMaskGenerator(sam, **options.generator_kwargs()).generate(image)
    assert len(reference) >= 200, f"{len(reference)} masks"
    assert min(r["stability_score"] for r in reference) > 0.95
    fast: list[MaskRecord] = generate_masks(sam, image, options, fast=True)
    assert len(fast) == len(reference)
    for ours, theirs in zip(fast, reference, strict=True):
        inter = np.logical_and(ours.segmentation, theirs["segmentation"]).sum()
        union = np.logical_or(ours.segmentation, theirs["segmentation"]).sum()
        assert inter / union >= 0.999
        assert [list(p) for p in ours.point_coords] == theirs["point_coords"]
        assert abs(ours.predicted_iou - theirs["predicted_iou"]) <= 1e-4
        assert abs(ours.stability_score - theirs["stability_score"]) <= 1e-4
