"""The decoder CVAT's SAM plugin loads: its outputs by name, dtype and shape, fed as the plugin
feeds them (no padding point, box corners labelled 2 and 3, the previous low-resolution mask),
against segment-anything's own `SamOnnxModel` run in torch with the same inputs, cropped as the
plugin crops (the inclusive box of the mask, values > 0 kept); an empty mask; int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from segment_anything.utils.onnx import SamOnnxModel

from samsvc.engine.sam import decoder_cvat
from samsvc.engine.sam.decoder_export import export_decoder, quantize_decoder
from samsvc.engine.sam.disc_checkpoint import disc_sam

SIZES = [(480, 640), (300, 200), (77, 513)]


@pytest.fixture(scope="module")
def sam() -> torch.nn.Module:
    return disc_sam().eval()  # each click a sharp disc: real crops, real boxes


@pytest.fixture(scope="module")
def cvat_file(sam: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cvat") / "decoder.onnx"
    export_decoder(sam, path, graph="cvat")
    return path


def plugin_feeds(
    embedding: np.ndarray,
    size: tuple[int, int],
    positive: list[tuple[float, float]],
    negative: list[tuple[float, float]] = (),  # type: ignore[assignment]
    box: tuple[float, float, float, float] | None = None,
    low_res: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The inputs as index.tsx's modelData and inference.worker.ts build them."""
    h, w = size
    scale = 1024 / max(h, w)
    clicks: list[tuple[float, float, float]] = []
    if box is not None:
        clicks += [(box[0], box[1], 2), (box[2], box[3], 3)]
    clicks += [(x, y, 1) for x, y in positive] + [(x, y, 0) for x, y in negative]
    return {
        "image_embeddings": embedding,
        "point_coords": np.array([[(x * scale, y * scale) for x, y, _ in clicks]], dtype=np.float32),
        "point_labels": np.array([[label for _, _, label in clicks]], dtype=np.float32),
        "mask_input": low_res if low_res is not None else np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.array([1.0 if low_res is not None else 0.0], np.float32),
        "orig_im_size": np.array([h, w], np.float32),
    }


def expected(sam: torch.nn.Module, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """segment-anything's SamOnnxModel (the model CVAT exported) on the same inputs, then the
    plugin's crop: the inclusive box of the pixels above 0."""
    model = SamOnnxModel(sam, return_single_mask=True)
    with torch.no_grad():
        masks, _, _ = model(*(torch.from_numpy(feeds[name]) for name in decoder_cvat_inputs()))
    mask = masks[0, 0].numpy() > 0
    if not mask.any():
        return np.zeros((1, 1), bool), (0, 0, 0, 0)
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    return mask[box[1] : box[3] + 1, box[0] : box[2] + 1], box


def decoder_cvat_inputs() -> tuple[str, ...]:
    return ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")


def embedding_of(sam: torch.nn.Module, size: tuple[int, int]) -> np.ndarray:
    from samsvc.engine.sam.embedding import embed
    from tests.support import scene

    return embed(sam, scene(size[1], size[0], seed=5)).features.numpy()


def run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip(decoder_cvat.OUTPUT_NAMES, session.run(None, feeds), strict=True))


def test_the_outputs_are_the_ones_cvats_plugin_reads(cvat_file: Path) -> None:
    session = ort.InferenceSession(str(cvat_file), providers=["CPUExecutionProvider"])
    outputs = {o.name: o.type for o in session.get_outputs()}
    assert outputs == {
        "masks": "tensor(uint8)", "iou_predictions": "tensor(float)", "low_res_masks": "tensor(float)",
        "xtl": "tensor(int64)", "ytl": "tensor(int64)", "xbr": "tensor(int64)", "ybr": "tensor(int64)",
    }  # fmt: skip
    assert [i.name for i in session.get_inputs()] == list(decoder_cvat_inputs())


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "prompt",
    [
        {"positive": [(0.3, 0.4)]},
        {"positive": [(0.3, 0.4)], "negative": [(0.35, 0.45)]},
        {"positive": [(0.2, 0.2), (0.7, 0.6), (0.5, 0.5)]},
        {"positive": [], "box": (0.1, 0.1, 0.6, 0.7)},
        {"positive": [(0.4, 0.4)], "box": (0.1, 0.1, 0.6, 0.7)},
    ],
    ids=["click", "click-and-negative", "three-clicks", "box", "box-then-click"],
)
def test_masks_and_boxes_equal_segment_anythings_cropped_as_cvat_crops(
    sam: torch.nn.Module, cvat_file: Path, size: tuple[int, int], prompt: dict[str, object]
) -> None:
    h, w = size
    embedding = embedding_of(sam, size)

    def at(points: object) -> list[tuple[float, float]]:
        return [(x * w, y * h) for x, y in points]  # type: ignore[attr-defined]

    box = prompt.get("box")
    feeds = plugin_feeds(
        embedding,
        size,
        at(prompt["positive"]),
        at(prompt.get("negative", [])),
        (box[0] * w, box[1] * h, box[2] * w, box[3] * h) if box else None,  # type: ignore[index]
    )
    out = run(cvat_file, feeds)
    want, (xtl, ytl, xbr, ybr) = expected(sam, feeds)
    got = out["masks"][0, 0] > 0
    assert (out["xtl"][0], out["ytl"][0], out["xbr"][0], out["ybr"][0]) == pytest.approx((xtl, ytl, xbr, ybr), abs=1)
    assert got.shape == (int(out["ybr"][0] - out["ytl"][0] + 1), int(out["xbr"][0] - out["xtl"][0] + 1))
    full_got = np.zeros((h, w), bool)
    full_got[out["ytl"][0] : out["ybr"][0] + 1, out["xtl"][0] : out["xbr"][0] + 1] = got
    full_want = np.zeros((h, w), bool)
    full_want[ytl : ybr + 1, xtl : xbr + 1] = want
    union = (full_got | full_want).sum()
    assert union and (full_got & full_want).sum() / union > 0.99, "the same mask, to float rounding"
    assert out["low_res_masks"].shape == (1, 1, 256, 256)

    # The next click feeds the previous low-resolution mask back, as the plugin does.
    clicks = [*at(prompt["positive"]), (w * 0.9, h * 0.1)]
    chained = plugin_feeds(embedding, size, clicks, low_res=out["low_res_masks"])
    again = run(cvat_file, chained)
    _, box_chained = expected(sam, chained)
    assert (again["xtl"][0], again["ytl"][0]) == pytest.approx(box_chained[:2], abs=1)


def test_an_empty_mask_is_a_one_pixel_crop_of_nothing(sam: torch.nn.Module, cvat_file: Path) -> None:
    size = (240, 320)
    # The disc model draws a disc around each click: one far outside the frame leaves it empty.
    feeds = plugin_feeds(embedding_of(sam, size), size, [(-2000.0, -2000.0)])
    assert not expected(sam, feeds)[0].any(), "segment-anything's model finds nothing here either"
    out = run(cvat_file, feeds)
    assert out["masks"].shape == (1, 1, 1, 1) and int(out["masks"][0, 0, 0, 0]) == 0
    assert [int(out[k][0]) for k in ("xtl", "ytl", "xbr", "ybr")] == [0, 0, 0, 0]


def test_the_int8_decoder_keeps_the_interface(sam: torch.nn.Module, cvat_file: Path, tmp_path: Path) -> None:
    int8 = tmp_path / "decoder-int8.onnx"
    quantize_decoder(cvat_file, int8)
    size = (480, 640)
    feeds = plugin_feeds(embedding_of(sam, size), size, [(200.0, 150.0)])
    full, quantized = run(cvat_file, feeds), run(int8, feeds)
    assert quantized["masks"].dtype == np.uint8 and quantized["xtl"].dtype == np.int64
    xtl, ytl, xbr, ybr = (int(quantized[name][0]) for name in ("xtl", "ytl", "xbr", "ybr"))
    assert quantized["masks"].shape == (1, 1, ybr - ytl + 1, xbr - xtl + 1)
    # int8 weights move a hand-weighted model's disc (its weights are exact values): the boxes overlap.
    assert xtl <= int(full["xbr"][0]) and int(full["xtl"][0]) <= xbr
    assert ytl <= int(full["ybr"][0]) and int(full["ytl"][0]) <= ybr
