"""The exported decoder keeps the crop a function of the image's size: segment-anything's PyPI
release traces it as the dummy input's constant, which shifts and cuts the masks of every
image of another aspect ratio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from segment_anything.build_sam import _build_sam
from segment_anything.predictor import SamPredictor
from segment_anything.utils import onnx as sam_onnx

from samsvc.engine import decoder_export
from samsvc.engine.decoder_export import export_decoder


def run(path: Path, predictor: SamPredictor, point: tuple[float, float]) -> np.ndarray:
    h, w = predictor.original_size
    coords = predictor.transform.apply_coords(np.array([point]), (h, w))
    feeds = {
        "image_embeddings": predictor.features.numpy(),
        "point_coords": np.array([[coords[0], [0.0, 0.0]]], dtype=np.float32),
        "point_labels": np.array([[1, -1]], dtype=np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), dtype=np.float32),
        "has_mask_input": np.zeros(1, dtype=np.float32),
        "orig_im_size": np.array([h, w], dtype=np.float32),
    }
    masks = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    return np.asarray(masks[0, 0] > 0)


@pytest.mark.parametrize("size", [(120, 160), (200, 90), (64, 64)])
def test_masks_follow_the_image_size(size: tuple[int, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    sam = _build_sam(64, 2, 2, [1], checkpoint=None).eval()
    predictor = SamPredictor(sam)
    predictor.set_image((np.random.default_rng(1).random((*size, 3)) * 255).astype(np.uint8))
    point = (size[1] / 3, size[0] / 2)
    masks, scores, _ = predictor.predict(point_coords=np.array([point]), point_labels=np.array([1]))
    expected = masks[int(np.argmax(scores))]

    export_decoder(sam, tmp_path / "fixed.onnx")
    fixed = run(tmp_path / "fixed.onnx", predictor, point)
    assert (fixed == expected).mean() > 0.999

    # The same export with the PyPI release's postprocessing: the fault this module mends.
    monkeypatch.setattr(decoder_export, "DynamicSizeOnnxModel", sam_onnx.SamOnnxModel)
    export_decoder(sam, tmp_path / "release.onnx")
    release = run(tmp_path / "release.onnx", predictor, point)
    if size[0] / size[1] != 1500 / 2250:
        assert (release == expected).mean() < 0.99
