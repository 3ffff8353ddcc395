"""The sliced image encoder computes segment-anything's embedding: the same bits on this CPU, for
global attention (query rows per slice) and windowed attention (windows per slice), whatever
the slice size; a wrapped encoder is called as it is."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling import Sam
from segment_anything.predictor import SamPredictor

from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE
from samsvc.engine.encoder_batching import BatchingEncoder
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.engine.sam import fast_encoder
from samsvc.engine.sam.fast_encoder import FastPredictor, encode
from tests.support import scene


@pytest.fixture(scope="module")
def sam(tiny_checkpoint: tuple[Path, str]) -> Sam:
    path, digest = tiny_checkpoint
    spec = ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest)
    return load_checkpoint(spec, torch.device("cpu"))


def test_the_tiny_model_has_both_kinds_of_attention(sam: Sam) -> None:
    kinds = {block.window_size > 0 for block in sam.image_encoder.blocks}
    assert kinds == {True, False}
    assert all(block.attn.use_rel_pos for block in sam.image_encoder.blocks)


@pytest.mark.parametrize("budget", [1 << 12, 1 << 16, fast_encoder.DEFAULT_LOGITS_BUDGET, 1 << 26])
def test_embedding_equals_the_reference(sam: Sam, budget: int) -> None:
    """From one query row (and one window) per slice to everything at once."""
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(budget))
    with torch.inference_mode():
        # Same operations in the same order; a CPU whose matrix kernels block a row slice
        # differently from the whole may round the last bit apart (seen: 2e-6 on values near 5).
        torch.testing.assert_close(encode(sam.image_encoder, x, budget), sam.image_encoder(x), rtol=1e-5, atol=1e-5)


def test_predictor_gives_the_reference_predictors_embedding_and_masks(sam: Sam) -> None:
    image = scene(150, 100, seed=5)
    ours, theirs = FastPredictor(sam), SamPredictor(sam)
    with torch.inference_mode():
        ours.set_image(image)
        theirs.set_image(image)
    torch.testing.assert_close(ours.features, theirs.features, rtol=1e-5, atol=1e-5)
    assert (ours.input_size, ours.original_size) == (theirs.input_size, theirs.original_size)
    point = dict(point_coords=np.array([[40.0, 30.0]]), point_labels=np.array([1]))
    masks, scores, _ = ours.predict(**point)
    ref_masks, ref_scores, _ = theirs.predict(**point)
    assert (masks == ref_masks).mean() >= 0.999 and np.allclose(scores, ref_scores, atol=1e-4)


def test_a_wrapped_encoder_is_called_as_it_is(tiny_checkpoint: tuple[Path, str]) -> None:
    path, digest = tiny_checkpoint
    spec = ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest)
    model = load_checkpoint(spec, torch.device("cpu"))
    model.image_encoder = BatchingEncoder(model.image_encoder, 2, max_wait_s=0.0)
    calls: list[int] = []
    model.image_encoder.register_forward_hook(lambda *_: calls.append(1))
    image = scene(80, 60, seed=1)
    ours, theirs = FastPredictor(model), SamPredictor(model)
    with torch.inference_mode():
        ours.set_image(image)
        assert calls == [1]
        theirs.set_image(image)
    torch.testing.assert_close(ours.features, theirs.features, rtol=1e-5, atol=1e-5)
