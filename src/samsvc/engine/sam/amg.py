"""Automatic mask generation: a grid of point prompts over the image (and its crops), the
masks SAM returns for them, filtered and de-duplicated.

The answer is segment-anything's `SamAutomaticMaskGenerator`'s, computed by it: this module
only adds a cancellation check between prompt batches (the safe point where a request that
went away stops), keeps crop layers that find no mask from failing, and returns plain records
(samsvc.engine.amg_types: the options, records and cancel token, free of torch).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam

from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord
from samsvc.engine.generation import CancellableGeneration, amg_record


class _CancellableGenerator(CancellableGeneration, SamAutomaticMaskGenerator):  # type: ignore[misc]
    """The reference generator, stopping between prompt batches when its token is cancelled."""

    def __init__(self, model: Sam, cancel: CancelToken | None, **kwargs: Any) -> None:
        super().__init__(model, output_mode="uncompressed_rle", **kwargs)
        self._cancel = cancel


def generate_masks(
    model: Sam,
    image: npt.NDArray[np.uint8],
    options: AmgOptions,
    cancel: CancelToken | None = None,
    *,
    fast: bool = False,
    precision: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> list[MaskRecord]:
    """Masks for an HxWx3 uint8 RGB image; raises Cancelled if `cancel` fires mid-way.

    `fast` uses samsvc.engine.sam.fast_amg (the same masks and order; scores equal to within float
    rounding) instead of segment-anything's own generator; `precision` (autocast for fp16 or
    bf16) applies to the fast engine's network passes. The reference always runs in fp32.
    """
    if fast:
        from samsvc.engine.sam.fast_amg import FastMaskGenerator

        return FastMaskGenerator(model, options, cancel, precision).generate(image)
    generator = _CancellableGenerator(model, cancel, **options.generator_kwargs())
    with torch.inference_mode():
        raw = generator.generate(image)
    return [amg_record(item) for item in raw]
