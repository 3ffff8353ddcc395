"""Prompts on one image's embedding, click after click: from the second prompt on, the fast
decoder reuses the image's first-layer side (kept per embedding) and the answers stay the
reference predictor's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.prompt_types import PromptSpec
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.engine.sam import fast_decoder, prompts
from samsvc.engine.sam.embedding import embed
from samsvc.engine.sam.prompts import ImageSides, dense_pe, predict_prompts
from tests.support import scene


@pytest.fixture(scope="module")
def sam(tiny_checkpoint: tuple[Path, str]) -> Sam:
    path, digest = tiny_checkpoint
    spec = ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest)
    return load_checkpoint(spec, torch.device("cpu"))


CLICKS = [
    PromptSpec(points=((60.0, 40.0, 1),)),
    PromptSpec(points=((20.0, 70.0, 1), (90.0, 30.0, 0))),
    PromptSpec(box=(10.0, 10.0, 120.0, 90.0)),
    PromptSpec(points=((100.0, 80.0, 1),), box=(50.0, 40.0, 150.0, 110.0)),
]


def test_the_side_is_kept_from_the_second_prompt_and_answers_stay_the_predictors(
    sam: Sam, monkeypatch: pytest.MonkeyPatch
) -> None:
    sides = ImageSides(entries=2)
    monkeypatch.setattr(prompts, "_IMAGE_SIDES", sides)
    image = scene(160, 120, seed=7)
    embedding = embed(sam, image)
    predictor = SamPredictor(sam)
    predictor.set_image(image)
    for index, click in enumerate(CLICKS * 2):
        (ours,) = predict_prompts(sam, embedding, [click], multimask=index % 2 == 0)
        points = np.array([[x, y] for x, y, _ in click.points]) if click.points else None
        labels = np.array([label for _, _, label in click.points]) if click.points else None
        box = np.array(click.box) if click.box else None
        masks, scores, logits = predictor.predict(points, labels, box, multimask_output=index % 2 == 0)
        assert np.abs(ours.scores - scores).max() <= 1e-4
        assert np.abs(ours.low_res_logits - logits).max() <= 1e-3
        for mine, theirs in zip(ours.masks, masks, strict=True):
            union = np.logical_or(mine, theirs).sum()
            assert union == 0 or np.logical_and(mine, theirs).sum() / union >= 0.999
        assert (len(sides._sides) == 1) == (index >= 1), "kept from the image's second prompt on, not before"
    # A refinement click (mask input) changes the dense embedding: it must not read the kept side.
    previous = logits[:1].astype(np.float32)
    (refined,) = predict_prompts(sam, embedding, [PromptSpec(points=CLICKS[0].points, mask_logits=previous)], True)
    _, scores, _ = predictor.predict(
        np.array([[60.0, 40.0]]), np.array([1]), mask_input=previous, multimask_output=True
    )
    assert np.abs(refined.scores - scores).max() <= 1e-4


def test_decoding_with_the_side_equals_decoding_without(sam: Sam) -> None:
    embedding = embed(sam, scene(96, 64, seed=2))
    coords = torch.tensor([[[300.0, 200.0]], [[40.0, 500.0]], [[900.0, 100.0]]])
    labels = torch.ones(3, 1, dtype=torch.int)
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        pe = dense_pe(sam)
        side = fast_decoder.image_side(sam.mask_decoder, embedding.features, pe, dense)
        plain = fast_decoder.decode_prompts(sam.mask_decoder, embedding.features, pe, sparse, dense)
        kept = fast_decoder.decode_prompts(sam.mask_decoder, embedding.features, pe, sparse, dense, side)
        reference_masks, reference_iou = sam.mask_decoder.predict_masks(embedding.features, pe, sparse, dense)
        kept_masks = kept.masks(sam.mask_decoder)
    assert torch.allclose(kept.iou_pred, reference_iou, atol=1e-5)
    assert torch.allclose(kept_masks, reference_masks, atol=1e-3)
    assert torch.allclose(kept.iou_pred, plain.iou_pred, atol=1e-5)
