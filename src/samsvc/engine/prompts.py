"""Prompted segmentation: points (foreground or background), boxes and previous mask logits on
one image, reusing its embedding. The arithmetic is SamPredictor.predict's."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from segment_anything.modeling import Sam

from samsvc.engine.embeddings import ImageEmbedding, predictor_for

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


def predict_prompts(
    model: Sam, embedding: ImageEmbedding, prompts: list[PromptSpec], multimask: bool
) -> list[PromptOutput]:
    predictor = predictor_for(model, embedding)
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            coords = labels = None
            if prompt.points:
                coords = np.array([[x, y] for x, y, _ in prompt.points], dtype=np.float32)
                labels = np.array([label for _, _, label in prompt.points], dtype=np.int64)
            box = np.array(prompt.box, dtype=np.float32) if prompt.box is not None else None
            masks, scores, logits = predictor.predict(
                point_coords=coords,
                point_labels=labels,
                box=box,
                mask_input=prompt.mask_logits,
                multimask_output=multimask,
            )
            outputs.append(
                PromptOutput(
                    masks=np.asarray(masks, dtype=bool),
                    scores=np.asarray(scores, dtype=np.float32),
                    low_res_logits=np.asarray(logits, dtype=np.float32),
                )
            )
    return outputs
