"""Label Studio's brush RLE as its editor reads it. The golden bytes were written by
label-studio-sdk 2.1.2's own `brush.mask2rle` for the mask below; the decoder here follows the
format as thi.ng's rle-pack (which Label Studio's editor uses) reads it."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from samsvc.encoding.brush_rle import decode_brush_rle, encode_brush_rle

#: label_studio_sdk.converter.brush.mask2rle of GOLDEN_MASK * 255 (label-studio-sdk 2.1.2).
GOLDEN = [0, 0, 0, 80, 57, 27, 254, 23, 0, 183, 255, 56, 5, 191, 252, 46, 0]
GOLDEN_MASK = np.zeros((4, 5), dtype=bool)
GOLDEN_MASK[1:3, 1:4] = True


def test_the_bytes_label_studio_writes() -> None:
    assert encode_brush_rle(GOLDEN_MASK) == GOLDEN
    assert np.array_equal(decode_brush_rle(GOLDEN, 4, 5), GOLDEN_MASK)


@settings(max_examples=60, deadline=None)
@given(arrays(np.bool_, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_any_mask_round_trips(mask: np.ndarray) -> None:
    rle = encode_brush_rle(mask)
    assert all(0 <= b <= 255 for b in rle)
    assert np.array_equal(decode_brush_rle(rle, *mask.shape), mask)


def test_runs_longer_than_the_longest_field_are_split() -> None:
    mask = np.zeros((700, 400), dtype=bool)
    mask[100:650] = True  # 220,000 pixels: 880,000 values in one run
    assert np.array_equal(decode_brush_rle(encode_brush_rle(mask), 700, 400), mask)
