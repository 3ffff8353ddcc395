from __future__ import annotations

import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from pycocotools import mask as coco_mask

from samsvc.encoding.masks import (
    decode_png,
    decode_polygons,
    decode_rle,
    encode_png,
    encode_polygons,
    encode_rle,
    encode_rle_runs,
)

masks = st.integers(1, 40).flatmap(lambda h: st.integers(1, 40).flatmap(lambda w: arrays(np.bool_, (h, w))))


@settings(max_examples=60, deadline=None)
@given(masks)
def test_png_round_trips_and_is_one_bit(mask: np.ndarray) -> None:
    data = encode_png(mask)
    with Image.open(io.BytesIO(data)) as image:
        assert image.mode == "1" and image.size == (mask.shape[1], mask.shape[0])
    assert np.array_equal(decode_png(data), mask)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_rle_round_trips_and_matches_pycocotools(mask: np.ndarray) -> None:
    rle = encode_rle(mask)
    assert rle.size == mask.shape
    reference = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert rle.counts == reference["counts"].decode("ascii")
    assert np.array_equal(decode_rle(rle), mask)


@settings(max_examples=60, deadline=None)
@given(masks)
def test_rle_from_runs_is_the_rle_of_the_mask(mask: np.ndarray) -> None:
    """The engine's masks stay runs (segment-anything's uncompressed RLE); RLE output is written
    from them without expanding pixels, and must equal the RLE of the expanded mask."""
    import torch
    from segment_anything.utils.amg import mask_to_rle_pytorch

    (runs,) = mask_to_rle_pytorch(torch.from_numpy(mask)[None])
    assert encode_rle_runs((mask.shape[0], mask.shape[1]), runs["counts"]) == encode_rle(mask)


def test_polygons_cover_solid_shapes() -> None:
    mask = np.zeros((60, 80), bool)
    mask[10:30, 10:50] = True
    yy, xx = np.mgrid[0:60, 0:80]
    mask |= (xx - 60) ** 2 + (yy - 45) ** 2 < 100
    polygons = encode_polygons(mask)
    assert len(polygons) == 2
    assert all(len(p) >= 6 and len(p) % 2 == 0 for p in polygons)
    assert np.array_equal(decode_polygons(polygons, 60, 80), mask) or (
        np.logical_and(decode_polygons(polygons, 60, 80), mask).sum() / mask.sum() > 0.97
    )


def test_single_pixels_still_make_polygons() -> None:
    mask = np.zeros((5, 5), bool)
    mask[2, 2] = True
    polygons = encode_polygons(mask)
    assert len(polygons) == 1 and len(polygons[0]) == 6
    assert decode_polygons(polygons, 5, 5)[2, 2]
