"""SAM 2.1 in the engine: a random-weight hiera-tiny made by sam2's own builder, saved like the
official checkpoints and loaded through MODELS_FILE as a user's would be, answers exactly as
the sam2 package's SAM2AutomaticMaskGenerator and SAM2ImagePredictor do on the same model
(built the way sam2's README builds it: build_sam2(config, checkpoint))."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.build_sam import build_sam2
from sam2.sam2_image_predictor import SAM2ImagePredictor

from samsvc.engine.amg_types import AmgOptions, MaskRecord, rle_to_mask
from samsvc.engine.checkpoints import SAM2_TINY_CONFIG
from samsvc.engine.embeddings import ImageEmbedding
from samsvc.engine.loader import LoadedModel, ModelManager
from samsvc.engine.prompt_types import PromptSpec
from samsvc.engine.registry import ModelRegistry
from tests.support import scene

# Random weights score masks low: keep every mask, and keep NMS from collapsing them.
PERMISSIVE = AmgOptions(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def manager(sam2_models_file: Path, tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    registry = ModelRegistry.load(tmp_path_factory.mktemp("weights"), sam2_models_file)
    return ModelManager(registry, device="cpu")


@pytest.fixture(scope="module")
def loaded(manager: ModelManager) -> LoadedModel:
    return manager.get("tiny2")


@pytest.fixture(scope="module")
def theirs(sam2_checkpoint: tuple[Path, str]) -> torch.nn.Module:
    """The same checkpoint, loaded the way sam2's README loads one."""
    return build_sam2(SAM2_TINY_CONFIG, str(sam2_checkpoint[0]), device="cpu")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def assert_same_masks(ours: list[MaskRecord], reference: list[dict[str, object]]) -> None:
    assert len(ours) == len(reference) > 0
    for mine, their in zip(ours, reference, strict=True):
        expected = rle_to_mask(their["segmentation"])  # type: ignore[arg-type]
        assert iou(mine.segmentation, expected) >= 0.999
        assert abs(mine.predicted_iou - float(their["predicted_iou"])) <= 1e-4  # type: ignore[arg-type]
        assert abs(mine.stability_score - float(their["stability_score"])) <= 1e-4  # type: ignore[arg-type]
        assert list(mine.bbox) == [int(v) for v in their["bbox"]]  # type: ignore[attr-defined]


def test_the_checkpoint_loads_strictly_through_models_file(loaded: LoadedModel, theirs: torch.nn.Module) -> None:
    assert loaded.spec.family == "sam2" and loaded.family.name == "sam2"
    mine, reference = loaded.model.state_dict(), theirs.state_dict()
    assert mine.keys() == reference.keys()
    assert all(torch.equal(mine[k], reference[k]) for k in mine)


@pytest.mark.parametrize("use_m2m", [False, True])
def test_automatic_masks_equal_sam2s_generator(loaded: LoadedModel, theirs: torch.nn.Module, use_m2m: bool) -> None:
    image = scene(96, 72, seed=4)
    options = dataclasses.replace(PERMISSIVE, use_m2m=use_m2m)
    ours = loaded.generate_masks(image, options, fast=True)
    generator = SAM2AutomaticMaskGenerator(
        theirs, output_mode="uncompressed_rle", **options.generator_kwargs(), use_m2m=use_m2m
    )
    assert_same_masks(ours, generator.generate(image))


def test_sam2_defaults_are_its_generators(manager: ModelManager) -> None:
    defaults = manager.amg_defaults("tiny2")
    signature = inspect.signature(SAM2AutomaticMaskGenerator.__init__).parameters
    for name, value in dataclasses.asdict(defaults).items():
        assert signature[name].default == pytest.approx(value), name
    assert manager.amg_defaults("tiny") == AmgOptions()  # SAM keeps the seed's
    assert manager.option_violations("tiny", dataclasses.replace(defaults, use_m2m=True), "options.")[0].field == (
        "options.use_m2m"
    )


def test_prompts_equal_sam2s_predictor(loaded: LoadedModel, theirs: torch.nn.Module) -> None:
    image = scene(120, 80, seed=5)
    embedding = loaded.embed(image)
    predictor = SAM2ImagePredictor(theirs)
    predictor.set_image(image)
    assert [name for name, _ in embedding.named()] == ["image_embed", "high_res_feats_0", "high_res_feats_1"]
    for (_, mine), their in zip(
        embedding.named(), [predictor._features["image_embed"], *predictor._features["high_res_feats"]], strict=True
    ):
        torch.testing.assert_close(mine, their, rtol=1e-5, atol=1e-5)
    t = embedding.transform()
    assert (t.resized_size, t.input_size, t.mask_input_size) == ((1024, 1024), 1024, 256)
    assert (t.scale_x, t.scale_y) == (1024 / 120, 1024 / 80)

    prompts = [
        PromptSpec(points=((30.0, 20.0, 1),)),
        PromptSpec(points=((30.0, 20.0, 1), (90.0, 60.0, 0)), box=(10.0, 5.0, 100.0, 70.0)),
    ]
    for multimask in (True, False):
        answers = loaded.predict_prompts(embedding, prompts, multimask, fast=True)
        for prompt, answer in zip(prompts, answers, strict=True):
            coords = np.array([[x, y] for x, y, _ in prompt.points], dtype=np.float32)
            labels = np.array([label for _, _, label in prompt.points])
            box = None if prompt.box is None else np.array(prompt.box)
            masks, scores, logits = predictor.predict(coords, labels, box, multimask_output=multimask)
            assert answer.masks.shape == masks.shape and answer.masks.dtype == np.bool_
            assert all(iou(a, b) >= 0.999 for a, b in zip(answer.masks, masks.astype(bool), strict=True))
            np.testing.assert_allclose(answer.scores, scores, atol=1e-4)
            np.testing.assert_allclose(answer.low_res_logits, logits, atol=1e-3)

    # A refinement click feeds the best logits back, as sam2's predictor takes them.
    first = loaded.predict_prompts(embedding, prompts[:1], True, fast=True)[0]
    refined = loaded.predict_prompts(
        embedding, [PromptSpec(points=((40.0, 30.0, 1),), mask_logits=first.best_logits)], False, fast=True
    )[0]
    masks, scores, _ = predictor.predict(
        np.array([[40.0, 30.0]]), np.array([1]), mask_input=first.best_logits, multimask_output=False
    )
    assert iou(refined.masks[0], masks[0].astype(bool)) >= 0.999
    np.testing.assert_allclose(refined.scores, scores, atol=1e-4)


def test_the_embedding_round_trips_all_three_tensors(loaded: LoadedModel) -> None:
    embedding = loaded.embed(scene(64, 48, seed=6))
    again, meta = ImageEmbedding.from_bytes_with_meta(embedding.to_bytes({"k": "v"}), torch.device("cpu"))
    assert meta == {"k": "v"} and again.name == "image_embed"
    assert [(n, tuple(t.shape)) for n, t in again.named()] == [
        ("image_embed", (1, 256, 64, 64)),
        ("high_res_feats_0", (1, 32, 256, 256)),
        ("high_res_feats_1", (1, 64, 128, 128)),
    ]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(again.named(), embedding.named(), strict=True))
    assert embedding.nbytes == 4 * (256 * 64 * 64 + 32 * 256 * 256 + 64 * 128 * 128)


def test_no_onnx_decoder_for_sam2(loaded: LoadedModel) -> None:
    from samsvc.errors import FailedPrecondition

    with pytest.raises(FailedPrecondition) as caught:
        loaded.exportable_decoder()
    assert caught.value.reason == "DECODER_UNAVAILABLE"
