"""Prompted segmentation: points (foreground or background), boxes and previous mask logits on
one image, reusing its embedding. The arithmetic is SamPredictor.predict's."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

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
    model: Sam,
    embedding: ImageEmbedding,
    prompts: list[PromptSpec],
    multimask: bool,
    precision: Callable[[], AbstractContextManager[Any]] | None = None,
) -> list[PromptOutput]:
    """Each prompt as SamPredictor.predict computes it (its input transforms, then
    predict_torch), with the network under `precision` and the outputs read back in fp32."""
    predictor = predictor_for(model, embedding)
    device = predictor.device
    outputs = []
    with torch.inference_mode():
        for prompt in prompts:
            coords = labels = box = mask = None
            if prompt.points:
                points = np.array([[x, y] for x, y, _ in prompt.points], dtype=np.float32)
                points = predictor.transform.apply_coords(points, predictor.original_size)
                coords = torch.as_tensor(points, dtype=torch.float, device=device)[None, :, :]
                labels = torch.as_tensor([[label for _, _, label in prompt.points]], dtype=torch.int, device=device)
            if prompt.box is not None:
                boxes = predictor.transform.apply_boxes(np.array(prompt.box, dtype=np.float32), predictor.original_size)
                box = torch.as_tensor(boxes, dtype=torch.float, device=device)[None, :]
            if prompt.mask_logits is not None:
                mask = torch.as_tensor(prompt.mask_logits, dtype=torch.float, device=device)[None, :, :, :]
            with (precision or nullcontext)():
                masks, scores, logits = predictor.predict_torch(coords, labels, box, mask, multimask_output=multimask)
            outputs.append(
                PromptOutput(
                    masks=masks[0].cpu().numpy().astype(bool),
                    scores=scores[0].float().cpu().numpy(),
                    low_res_logits=logits[0].float().cpu().numpy(),
                )
            )
    return outputs
