"""SAM image encoders run by OpenVINO (MODELS_FILE `encoder`): fp32 answers with torch's masks
through gRPC, int8 close to them (its agreement measured here on the tiny model), the compiled
graph kept per checkpoint and reused, and a server without OpenVINO saying what to do."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samsvc.config import Settings
from samsvc.encoding.masks import Rle, decode_rle
from samsvc.engine.checkpoints import models_file_entry, sam2_models_file_entry
from samsvc.engine.family import EncoderChoice, check_cpu_encoder
from samsvc.engine.loader import ModelManager
from samsvc.engine.registry import ModelRegistry
from samsvc.errors import ConfigurationError, FailedPrecondition
from samsvc.v1 import mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene
from tests.support.masks import same_mask

RLE = mask_pb2.MASK_FORMAT_RLE
CLICKS = [pb.Prompt(points=[pb.PointPrompt(x=20 + 17 * i, y=15 + 11 * i)]) for i in range(6)]
GRID = {"points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "mask_format": RLE}


def entries(path: Path, digest: str, **encoders: str) -> str:
    """MODELS_FILE tables for the same checkpoint under several names, each with its encoder."""
    text = ""
    for name, encoder in encoders.items():
        text += models_file_entry(name, path, digest) + (f'encoder = "{encoder}"\n' if encoder else "")
    return text


@pytest.fixture(scope="module")
def server_settings(
    base_settings: Settings,
    tiny_checkpoint: tuple[Path, str],
    sam2_checkpoint: tuple[Path, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    path, digest = tiny_checkpoint
    folder = tmp_path_factory.mktemp("openvino")
    models_file = folder / "models.toml"
    sam2_path, sam2_digest = sam2_checkpoint
    models_file.write_text(
        entries(path, digest, tiny="", tiny_ov="openvino", tiny_ov8="openvino-int8")
        + sam2_models_file_entry("hiera", sam2_path, sam2_digest)
        + sam2_models_file_entry("hiera_ov", sam2_path, sam2_digest)
        + 'encoder = "openvino"\n'
    )
    return base_settings.model_copy(
        update={"models_file": models_file, "model_dir": folder / "models", "embedding_cache_bytes": 0}
    )


def mask_of(mask: mask_pb2.Mask) -> np.ndarray:
    return decode_rle(Rle(size=(mask.rle.size[0], mask.rle.size[1]), counts=mask.rle.counts))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def prompts(server: ServerThread, model: str, image: bytes) -> pb.SegmentPromptsResponse:
    return server.stub.SegmentPrompts(
        pb.SegmentPromptsRequest(image=image, model_type=model, prompts=CLICKS, mask_format=RLE), timeout=300
    )


def assert_same_answers(ours: pb.SegmentPromptsResponse, theirs: pb.SegmentPromptsResponse) -> None:
    """Each prompt's masks: as many, scores within 1e-4, each the same mask (or boundary pixels)."""
    for got, want in zip(ours.results, theirs.results, strict=True):
        assert len(got.masks) == len(want.masks) >= 1
        for a, b in zip(got.masks, want.masks, strict=True):
            assert a.predicted_iou == pytest.approx(b.predicted_iou, abs=1e-4)
            assert same_mask(mask_of(a), mask_of(b))


def test_list_models_says_what_runs_each_encoder(server: ServerThread) -> None:
    models = {m.name: m for m in server.stub.ListModels(pb.ListModelsRequest(page_size=100)).models}
    assert [models[n].encoder for n in ("tiny", "tiny_ov", "tiny_ov8")] == ["torch", "openvino", "openvino-int8"]
    assert [models[n].encoder for n in ("hiera", "hiera_ov", "sam2.1_hiera_tiny")] == ["torch", "openvino", "torch"]


def test_openvino_fp32_answers_with_torchs_masks(server: ServerThread) -> None:
    image = encode(scene(200, 150, seed=4))
    assert_same_answers(prompts(server, "tiny_ov", image), prompts(server, "tiny", image))
    grid = server.stub.Segment(pb.SegmentRequest(image=image, model_type="tiny_ov", **GRID), timeout=300)
    reference = server.stub.Segment(pb.SegmentRequest(image=image, model_type="tiny", **GRID), timeout=300)
    assert len(grid.masks) == len(reference.masks) > 0
    for a, b in zip(grid.masks, reference.masks, strict=True):
        assert a.predicted_iou == pytest.approx(b.predicted_iou, abs=1e-4)
        assert list(a.point_coords) == list(b.point_coords)
        assert same_mask(mask_of(a), mask_of(b))


@pytest.mark.slow  # exports and compiles a full-size Hiera-tiny encoder
def test_openvino_fp32_answers_with_torchs_masks_on_sam2(server: ServerThread) -> None:
    """SAM 2's Hiera trunk and FPN neck compiled by OpenVINO: the same masks and scores."""
    image = encode(scene(200, 150, seed=6))
    assert_same_answers(prompts(server, "hiera_ov", image), prompts(server, "hiera", image))


def test_openvino_int8_is_close_to_torch(server: ServerThread) -> None:
    """Approximate by design: on the tiny random-weight model, each click's best mask against
    torch's (the docs give vit_b's figures from bench/cpu_speed.py)."""
    ious = []
    for seed in range(3):
        image = encode(scene(200, 150, seed=seed))
        ours, theirs = prompts(server, "tiny_ov8", image), prompts(server, "tiny", image)
        for got, want in zip(ours.results, theirs.results, strict=True):
            best = int(np.argmax([m.predicted_iou for m in want.masks]))
            ious.append(iou(mask_of(got.masks[best]), mask_of(want.masks[best])))
    print(f"int8 click-mask IoU against torch fp32: mean {np.mean(ious):.4f}, worst {min(ious):.4f}")
    assert np.mean(ious) >= 0.95 and min(ious) >= 0.9


def test_the_compiled_encoder_is_kept_and_reused(
    tiny_checkpoint: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, digest = tiny_checkpoint
    (tmp_path / "models.toml").write_text(entries(path, digest, ov="openvino"))
    image = np.asarray(scene(120, 90))
    first = ModelManager(ModelRegistry.load(tmp_path, tmp_path / "models.toml"), encoder_cache=tmp_path / "ov")
    embedding = first.get("ov").embed(image).features
    assert [p.name for p in (tmp_path / "ov").iterdir()] == [f"{digest}-fp32"]

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("the encoder was exported again")

    monkeypatch.setattr(torch.onnx, "export", no_export)
    again = ModelManager(ModelRegistry.load(tmp_path, tmp_path / "models.toml"), encoder_cache=tmp_path / "ov")
    assert torch.equal(again.get("ov").embed(image).features, embedding)


def test_without_openvino_the_error_says_what_to_do(
    tiny_checkpoint: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, digest = tiny_checkpoint
    (tmp_path / "models.toml").write_text(entries(path, digest, ov="openvino"))
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    models = ModelManager(ModelRegistry.load(tmp_path, tmp_path / "models.toml"), encoder_cache=tmp_path / "ov")
    with pytest.raises(FailedPrecondition) as refused:
        models.get("ov")
    assert refused.value.reason == "ENCODER_UNAVAILABLE"
    assert "openvino extra" in refused.value.message and str(tmp_path) not in refused.value.message


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('encoder = "tensorrt"\n', "encoder must be one of torch, openvino, openvino-int8"),
        ('calibration_dir = "nowhere"\n', "is not a folder"),
    ],
)
def test_models_file_encoder_keys_are_checked(
    tiny_checkpoint: tuple[Path, str], tmp_path: Path, extra: str, message: str
) -> None:
    path, digest = tiny_checkpoint
    (tmp_path / "models.toml").write_text(models_file_entry("m", path, digest) + extra)
    with pytest.raises(ConfigurationError, match=message):
        ModelRegistry.load(tmp_path, tmp_path / "models.toml")


def test_openvino_encoders_are_refused_off_the_cpu() -> None:
    choice = EncoderChoice("openvino", "m", "0" * 64, Path("cache"))
    check_cpu_encoder(choice, "cpu")
    with pytest.raises(FailedPrecondition) as refused:
        check_cpu_encoder(choice, "cuda")
    assert refused.value.reason == "ENCODER_UNAVAILABLE" and "runs on CPUs" in refused.value.message
