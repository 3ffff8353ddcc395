"""The exported decoders keep the crop a function of the image's size (segment-anything's PyPI
release traces it as the dummy input's constant, which shifts and cuts the masks of every
image of another aspect ratio), and the folded graph computes what the reference graph does."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from segment_anything.build_sam import _build_sam
from segment_anything.predictor import SamPredictor
from segment_anything.utils import onnx as sam_onnx

from samsvc.engine.sam import decoder_export, decoder_graph
from samsvc.engine.sam.decoder_export import export_decoder


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


@pytest.mark.parametrize("graph", ["folded", "reference"])
@pytest.mark.parametrize("size", [(120, 160), (200, 90), (64, 64)])
def test_masks_follow_the_image_size(
    size: tuple[int, int], graph: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    sam = _build_sam(64, 2, 2, [1], checkpoint=None).eval()
    predictor = SamPredictor(sam)
    predictor.set_image((np.random.default_rng(1).random((*size, 3)) * 255).astype(np.uint8))
    point = (size[1] / 3, size[0] / 2)
    masks, scores, _ = predictor.predict(point_coords=np.array([point]), point_labels=np.array([1]))
    expected = masks[int(np.argmax(scores))]

    export_decoder(sam, tmp_path / "fixed.onnx", graph=graph)
    fixed = run(tmp_path / "fixed.onnx", predictor, point)
    assert (fixed == expected).mean() > 0.999

    if graph == "folded":
        return  # its own postprocessing (decoder_graph.FoldedOnnxModel.mask_postprocessing)
    # The same export with the PyPI release's postprocessing: the fault this module mends.
    monkeypatch.setattr(
        decoder_graph.ReferenceOnnxModel, "mask_postprocessing", sam_onnx.SamOnnxModel.mask_postprocessing
    )
    export_decoder(sam, tmp_path / "release.onnx", graph=graph)
    release = run(tmp_path / "release.onnx", predictor, point)
    if size[0] / size[1] != 1500 / 2250:
        assert (release == expected).mean() < 0.99


def feeds(rng: np.random.Generator, points: int, has_mask: float, size: tuple[int, int]) -> dict[str, np.ndarray]:
    labels = rng.integers(-1, 4, size=(1, points)).astype(np.float32)
    return {
        "image_embeddings": rng.standard_normal((1, 256, 64, 64)).astype(np.float32),
        "point_coords": (rng.random((1, points, 2)) * 1024).astype(np.float32),
        "point_labels": labels,
        "mask_input": (3 * rng.standard_normal((1, 1, 256, 256))).astype(np.float32),
        "has_mask_input": np.array([has_mask], dtype=np.float32),
        "orig_im_size": np.array(size, dtype=np.float32),
    }


@pytest.fixture(scope="module")
def both_graphs(tmp_path_factory: pytest.TempPathFactory) -> tuple[ort.InferenceSession, ort.InferenceSession]:
    torch.manual_seed(3)
    sam = _build_sam(64, 2, 2, [1], checkpoint=None).eval()
    folder = tmp_path_factory.mktemp("graphs")
    export_decoder(sam, folder / "folded.onnx", graph="folded")
    export_decoder(sam, folder / "reference.onnx", graph="reference")
    return tuple(
        ort.InferenceSession(str(folder / f"{g}.onnx"), providers=["CPUExecutionProvider"])
        for g in ("folded", "reference")
    )  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("points", "has_mask", "size"),
    [
        (2, 0.0, (768, 1024)),  # one click and the padding point: the best of the multimask outputs
        (1, 0.0, (1500, 2250)),
        (4, 1.0, (1024, 300)),  # a refinement click: the previous mask's logits as input
        (3, 0.5, (1021, 1024)),  # any has_mask_input blends, as the reference does
        (7, 1.0, (64, 64)),
    ],
)
def test_the_folded_graph_computes_the_reference_graph(
    both_graphs: tuple[ort.InferenceSession, ort.InferenceSession], points: int, has_mask: float, size: tuple[int, int]
) -> None:
    folded, reference = both_graphs
    inputs = feeds(np.random.default_rng(points), points, has_mask, size)
    ours, theirs = folded.run(None, inputs), reference.run(None, inputs)
    for name, a, b in zip(("masks", "iou_predictions", "low_res_masks"), ours, theirs, strict=True):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, atol=1e-4 * max(1.0, float(np.abs(b).max())), err_msg=name)
    masks, their_masks = ours[0] > 0, theirs[0] > 0
    assert (masks & their_masks).sum() >= 0.999 * (masks | their_masks).sum()


def test_the_folded_graph_skips_the_mask_input_when_there_is_none(tmp_path: Path) -> None:
    """The downscaling of mask_input sits in an If on has_mask_input: with 0 it is not run, so
    a mask input of anything (the reference multiplies it by 0) changes nothing."""
    import onnx

    torch.manual_seed(4)
    sam = _build_sam(64, 2, 2, [1], checkpoint=None).eval()
    export_decoder(sam, tmp_path / "folded.onnx", graph="folded")
    assert "If" in {node.op_type for node in onnx.load(str(tmp_path / "folded.onnx")).graph.node}
    session = ort.InferenceSession(str(tmp_path / "folded.onnx"), providers=["CPUExecutionProvider"])
    inputs = feeds(np.random.default_rng(0), 2, 0.0, (480, 640))
    first = session.run(None, inputs)
    second = session.run(None, {**inputs, "mask_input": np.full((1, 1, 256, 256), 50.0, dtype=np.float32)})
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_decoder_of_another_layout_gets_the_reference_graph() -> None:
    torch.manual_seed(0)
    sam = _build_sam(64, 2, 2, [1], checkpoint=None).eval()
    assert decoder_graph.foldable(sam) and decoder_export.graph_for(sam, "folded") == "folded"
    sam.mask_decoder.output_upscaling[0] = torch.nn.ConvTranspose2d(256, 64, kernel_size=4, stride=2, padding=1)
    assert decoder_export.graph_for(sam, "folded") == "reference"
    assert decoder_export.graph_for(sam, "reference") == "reference"


POSTPROCESSING_SIZES = [(1, 1), (1, 1000), (2000, 3), (5, 7), (1023, 1024), (1024, 1024), (768, 1024), (4000, 3001)]


@pytest.mark.parametrize("size", POSTPROCESSING_SIZES)
def test_the_folded_postprocessing_is_the_reference_one(size: tuple[int, int]) -> None:
    """Upsampling as separable products with the taps, over the kept rows and columns only:
    the reference's interpolate, crop and resize, at sizes where the crop is 1 pixel, not a
    multiple of 4, the whole input, or the image larger than the encoder's input."""
    torch.manual_seed(5)
    sam = _build_sam(64, 2, 2, [1], checkpoint=None).eval()
    folded = decoder_graph.FoldedOnnxModel(sam)
    reference = decoder_graph.ReferenceOnnxModel(model=sam, return_single_mask=True)
    low_res = 5 * torch.randn(1, 1, 256, 256)
    orig = torch.tensor(size, dtype=torch.float)
    ours, theirs = folded.mask_postprocessing(low_res, orig), reference.mask_postprocessing(low_res, orig)
    assert ours.shape == theirs.shape == (1, 1, *size)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_the_exported_postprocessing_follows_each_size(
    both_graphs: tuple[ort.InferenceSession, ort.InferenceSession],
) -> None:
    """The crop's bounds are graph values, not the export's dummy size."""
    folded, reference = both_graphs
    inputs = feeds(np.random.default_rng(9), 2, 0.0, (768, 1024))
    for size in POSTPROCESSING_SIZES:
        inputs["orig_im_size"] = np.array(size, dtype=np.float32)
        ours, theirs = folded.run(["masks"], inputs)[0], reference.run(["masks"], inputs)[0]
        assert ours.shape == theirs.shape == (1, 1, *size)
        np.testing.assert_allclose(ours, theirs, atol=1e-4 * max(1.0, float(np.abs(theirs).max())), err_msg=str(size))
