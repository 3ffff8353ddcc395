"""Prompts and their answers as every family takes and gives them: points, a box and a previous
mask's logits in; masks, scores and low-resolution logits out (numpy only)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: SAM's low-resolution mask size.
LOW_RES = 256


@dataclass(frozen=True)
class PromptSpec:
    #: (x, y, label): label 1 foreground, 0 background.
    points: tuple[tuple[float, float, int], ...] = ()
    #: (x0, y0, x1, y1) in pixels, or None.
    box: tuple[float, float, float, float] | None = None
    #: 1 x 256 x 256 logits of a previous answer, or None.
    mask_logits: npt.NDArray[np.float32] | None = None


@dataclass(frozen=True)
class PromptOutput:
    masks: npt.NDArray[np.bool_]  # k x H x W
    scores: npt.NDArray[np.float32]  # k
    low_res_logits: npt.NDArray[np.float32]  # k x 256 x 256

    @property
    def best_logits(self) -> npt.NDArray[np.float32]:
        """1 x 256 x 256: the logits of the mask with the highest predicted IoU (what a
        refinement click feeds back)."""
        best = int(np.argmax(self.scores))
        return self.low_res_logits[best : best + 1]
