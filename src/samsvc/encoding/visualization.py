"""A PNG of masks overlaid on their image: each mask a colour at half opacity, largest first
so small masks stay visible on top."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image

#: Opacity of each mask's colour over the image.
DEFAULT_ALPHA = 0.5
#: Colours are drawn from a seeded generator, so the same masks always look the same.
DEFAULT_SEED = 20230405


def overlay_png(
    image: npt.NDArray[np.uint8],
    masks: Sequence[npt.NDArray[np.bool_]],
    *,
    areas: Sequence[int] | None = None,
    alpha: float = DEFAULT_ALPHA,
    seed: int = DEFAULT_SEED,
) -> bytes:
    """PNG bytes of `image` (HxWx3 uint8) with every mask painted over it, largest first.
    With `areas` each mask is read once (a sequence that decodes on access stays lean)."""
    canvas = image.astype(np.float32)
    rng = np.random.default_rng(seed)
    colours = rng.integers(40, 256, size=(len(masks), 3)).astype(np.float32)
    sizes = list(areas) if areas is not None else [int(m.sum()) for m in masks]
    order = sorted(range(len(masks)), key=lambda i: sizes[i], reverse=True)
    for i in order:
        region = masks[i]
        canvas[region] = canvas[region] * (1.0 - alpha) + colours[i] * alpha
    out = io.BytesIO()
    Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), mode="RGB").save(out, format="PNG")
    return out.getvalue()
