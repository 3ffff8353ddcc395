"""TORCH_COMPILE: a model loaded with torch.compile gives the eager model's answer (to float
rounding) through both engines, and its cache identity says it is compiled."""

from __future__ import annotations

from pathlib import Path

from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.loader import ModelManager
from samsvc.engine.registry import ModelRegistry
from samsvc.engine.sam.amg import generate_masks
from tests.engine.test_fast_amg import assert_same_answer
from tests.support import scene


def test_compiled_model_gives_the_eager_answer(models_file: Path, tmp_path: Path) -> None:
    registry = ModelRegistry.load(tmp_path, models_file)
    eager = ModelManager(registry, device="cpu").get("tiny")
    compiled = ModelManager(registry, device="cpu", compile_models=True).get("tiny")
    assert compiled.compiled and compiled.digest == eager.digest and compiled.identity != eager.identity
    image = scene(96, 64, seed=12)
    options = AmgOptions(points_per_side=3, points_per_batch=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    for fast in (False, True):
        reference = generate_masks(eager.model, image, options, fast=fast)
        assert reference
        assert_same_answer(reference, generate_masks(compiled.model, image, options, fast=fast))
