"""The parity rule the engine tests use (tests.support.masks): a few pixels on the reference
mask's boundary may differ (float rounding at the threshold), nothing inside or beyond it."""

from __future__ import annotations

import numpy as np

from tests.support.masks import same_box, same_mask


def disc(size: int = 64, radius: float = 5.0) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size]
    return (y - 32) ** 2 + (x - 32) ** 2 <= radius**2


def test_boundary_pixels_may_differ_on_a_small_mask() -> None:
    theirs = disc()
    ours = theirs.copy()
    ours[32, 37] = False  # on the edge: IoU falls below 0.999 for an 81-pixel disc
    ours[27, 32] = False
    union = np.logical_or(ours, theirs).sum()
    assert np.logical_and(ours, theirs).sum() / union < 0.999
    assert same_mask(ours, theirs)
    assert same_box([27, 27, 11, 11], [27, 27, 11, 11], masks_equal=False)


def test_a_pixel_inside_or_far_away_is_a_different_mask() -> None:
    theirs = disc()
    inside = theirs.copy()
    inside[32, 32] = False
    assert not same_mask(inside, theirs)
    far = theirs.copy()
    far[2, 2] = True
    assert not same_mask(far, theirs)
    many = theirs.copy()
    many[np.roll(theirs, 1, axis=0) != theirs] = False  # the whole upper edge: too many pixels
    assert not same_mask(many, theirs)
    assert not same_box([27, 27, 11, 11], [29, 27, 11, 11], masks_equal=False)
