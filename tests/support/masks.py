"""What "the same mask" means when samsvc's engine is compared with segment-anything's: equal, or
IoU >= 0.999, or differing in a few pixels that all lie on the reference mask's boundary (where
the logits sit at the threshold and float rounding decides). Boxes then may move by a pixel."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

#: Intersection over union at which two masks are the same however they differ.
MIN_IOU = 0.999
#: Pixels that may differ, all on the boundary, when the IoU is lower (a small mask).
MAX_BOUNDARY_PIXELS = 4


def boundary(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Pixels with a 4-neighbour of the other value (inside or just outside the edge)."""
    padded = np.pad(mask, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    edge = np.zeros_like(mask, dtype=bool)
    for shifted in (padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]):
        edge |= shifted != centre
    return edge


def same_mask(ours: npt.NDArray[np.bool_], theirs: npt.NDArray[np.bool_]) -> bool:
    ours, theirs = ours.astype(bool), theirs.astype(bool)
    differ = ours != theirs
    if not differ.any():
        return True
    union = np.logical_or(ours, theirs).sum()
    if union and np.logical_and(ours, theirs).sum() / union >= MIN_IOU:
        return True
    return int(differ.sum()) <= MAX_BOUNDARY_PIXELS and bool((differ <= boundary(theirs)).all())


def same_box(ours: list[float], theirs: list[float], masks_equal: bool) -> bool:
    """Equal boxes for equal masks; within a pixel per side when boundary pixels differ."""
    if masks_equal:
        return [int(v) for v in ours] == [int(v) for v in theirs]
    return all(abs(a - b) <= 1 for a, b in zip(ours, theirs, strict=True))
