"""Segment end to end over a real gRPC channel: every mask format decodes back to masks that
agree with their area and bbox, and the masks equal segment-anything's reference generator's
(bit for bit on AMG_ENGINE=reference, within the engine parity bounds on the default)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.build_sam import _build_sam

from samsvc.config import Settings
from samsvc.encoding.masks import Rle, decode_png, decode_polygons, decode_rle
from samsvc.v1 import mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene
from tests.support.masks import same_box, same_mask

# Random weights score masks low: keep every mask, and keep NMS from collapsing them.
PERMISSIVE = dict(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


def decoded(mask: mask_pb2.Mask, height: int, width: int) -> np.ndarray:
    kind = mask.WhichOneof("data")
    if kind == "segmentation":
        return decode_png(mask.segmentation)
    if kind == "rle":
        return decode_rle(Rle(size=(mask.rle.size[0], mask.rle.size[1]), counts=mask.rle.counts))
    assert kind == "polygons"
    return decode_polygons([list(p.points) for p in mask.polygons.polygons], height, width)


def bbox_of(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min()), int(ys.max() - ys.min())]


@pytest.mark.parametrize("fmt", [mask_pb2.MASK_FORMAT_UNSPECIFIED, mask_pb2.MASK_FORMAT_PNG, mask_pb2.MASK_FORMAT_RLE])
def test_exact_formats_decode_to_masks_matching_area_and_bbox(server: ServerThread, fmt: int) -> None:
    image = scene(160, 120, seed=1)
    response = server.stub.Segment(pb.SegmentRequest(image=encode(image), mask_format=fmt, **PERMISSIVE))
    assert response.job_id.startswith("seg_")
    assert (response.image_width, response.image_height) == (160, 120)
    assert response.model_type == "tiny"
    assert response.mask_format == (fmt or mask_pb2.MASK_FORMAT_PNG)
    assert response.processing_time > 0
    assert len(response.masks) > 1
    for mask in response.masks:
        pixels = decoded(mask, 120, 160)
        assert pixels.shape == (120, 160)
        assert int(pixels.sum()) == mask.area
        if mask.area:
            assert list(mask.bbox) == bbox_of(pixels)
        assert 0.0 <= mask.stability_score <= 1.0
        assert len(mask.point_coords) == 1
        assert list(mask.crop_box) == [0, 0, 160, 120]


def test_polygons_outline_the_mask(server: ServerThread) -> None:
    image = scene(160, 120, seed=2)
    request = pb.SegmentRequest(image=encode(image), mask_format=mask_pb2.MASK_FORMAT_POLYGONS, **PERMISSIVE)
    rle_request = pb.SegmentRequest(image=encode(image), mask_format=mask_pb2.MASK_FORMAT_RLE, **PERMISSIVE)
    polygons = server.stub.Segment(request).masks
    exact = server.stub.Segment(rle_request).masks
    assert len(polygons) == len(exact) > 1
    for poly, truth in zip(polygons, exact, strict=True):
        assert poly.area == truth.area and list(poly.bbox) == list(truth.bbox)
        if truth.area < 50:
            continue
        drawn, real = decoded(poly, 120, 160), decoded(truth, 120, 160)
        # Outer contours drop holes and trace pixel centres: close to, not equal to, the mask.
        inter = np.logical_and(drawn, real).sum()
        assert inter / real.sum() > 0.9


@pytest.fixture(scope="module")
def reference_server(base_settings: Settings) -> Iterator[ServerThread]:
    running = ServerThread(base_settings.model_copy(update={"amg_engine": "reference"}))
    yield running
    running.stop()


def segment_beside_the_reference(
    server: ServerThread, tiny_checkpoint: tuple
) -> tuple[list[mask_pb2.Mask], list[dict[str, Any]]]:
    """The service's masks and segment-anything's generator's for one image and set of options."""
    image = scene(200, 150, seed=3)
    options = dict(PERMISSIVE, points_per_side=5)
    response = server.stub.Segment(
        pb.SegmentRequest(image=encode(image), mask_format=mask_pb2.MASK_FORMAT_RLE, **options)
    )
    path, _ = tiny_checkpoint
    reference_model = _build_sam(64, 2, 2, [1], checkpoint=str(path))
    reference: list[dict[str, Any]] = SamAutomaticMaskGenerator(reference_model, **options).generate(image)
    assert len(response.masks) == len(reference) > 10
    return list(response.masks), reference


def test_reference_engine_gives_the_reference_generator_bit_for_bit(
    reference_server: ServerThread, tiny_checkpoint: tuple
) -> None:
    ours_all, reference = segment_beside_the_reference(reference_server, tiny_checkpoint)
    for ours, theirs in zip(ours_all, reference, strict=True):
        assert np.array_equal(decoded(ours, 150, 200), theirs["segmentation"])
        assert list(ours.bbox) == [int(v) for v in theirs["bbox"]]
        assert ours.area == theirs["area"]
        assert ours.predicted_iou == pytest.approx(theirs["predicted_iou"], abs=1e-6)
        assert ours.stability_score == pytest.approx(theirs["stability_score"], abs=1e-6)
        assert [(p.x, p.y) for p in ours.point_coords] == [tuple(p) for p in theirs["point_coords"]]
        assert list(ours.crop_box) == theirs["crop_box"]


def test_default_engine_gives_the_reference_generators_masks(server: ServerThread, tiny_checkpoint: tuple) -> None:
    """The default (fast) engine: as many masks in the same order, each the same mask
    (tests.support.masks: IoU >= 0.999 or a few boundary pixels) with its box (a pixel off where
    boundary pixels differ), the same points and crops, scores within 1e-4."""
    ours_all, reference = segment_beside_the_reference(server, tiny_checkpoint)
    for ours, theirs in zip(ours_all, reference, strict=True):
        pixels = decoded(ours, 150, 200)
        assert same_mask(pixels, theirs["segmentation"])
        equal = bool((pixels == theirs["segmentation"]).all())
        assert same_box(list(ours.bbox), theirs["bbox"], equal)
        assert ours.predicted_iou == pytest.approx(theirs["predicted_iou"], abs=1e-4)
        assert ours.stability_score == pytest.approx(theirs["stability_score"], abs=1e-4)
        assert [(p.x, p.y) for p in ours.point_coords] == [tuple(p) for p in theirs["point_coords"]]
        assert list(ours.crop_box) == theirs["crop_box"]


def test_visualization_is_a_png_of_the_image_size(server: ServerThread) -> None:
    image = scene(160, 120, seed=4)
    response = server.stub.Segment(pb.SegmentRequest(image=encode(image), return_visualization=True, **PERMISSIVE))
    with Image.open(io.BytesIO(response.visualization)) as overlay:
        assert overlay.format == "PNG" and overlay.size == (160, 120) and overlay.mode == "RGB"
        painted = np.asarray(overlay)
    assert not np.array_equal(painted, image), "the overlay paints the masks"
    without = server.stub.Segment(pb.SegmentRequest(image=encode(image), **PERMISSIVE))
    assert without.visualization == b""


def test_seed_defaults_apply_when_fields_are_unset(server: ServerThread) -> None:
    """Unset thresholds mean 0.90 / 0.92, which random weights never reach: no masks."""
    response = server.stub.Segment(pb.SegmentRequest(image=encode(scene(96, 64)), points_per_side=2))
    assert len(response.masks) == 0
    explicit_zero = server.stub.Segment(
        pb.SegmentRequest(
            image=encode(scene(96, 64)), points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0
        )
    )
    assert len(explicit_zero.masks) >= 1, "0 is a value, not 'unset'"


@pytest.mark.parametrize("fmt,params", [("JPEG", {"quality": 90}), ("WEBP", {"quality": 90}), ("PNG", {})])
def test_each_supported_format_is_segmented(server: ServerThread, fmt: str, params: dict) -> None:
    response = server.stub.Segment(pb.SegmentRequest(image=encode(scene(96, 64), fmt, **params), **PERMISSIVE))
    assert (response.image_width, response.image_height) == (96, 64)
    assert len(response.masks) > 0


def test_exif_orientation_is_applied(server: ServerThread) -> None:
    picture = Image.fromarray(scene(96, 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(picture, "JPEG", exif=exif.tobytes())
    response = server.stub.Segment(pb.SegmentRequest(image=data, **PERMISSIVE))
    assert (response.image_width, response.image_height) == (64, 96)
