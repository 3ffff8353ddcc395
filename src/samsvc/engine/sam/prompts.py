"""Prompted segmentation: points (foreground or background), boxes and previous mask logits on
one image, reusing its embedding.

The arithmetic is SamPredictor.predict's: its coordinate transforms, prompt encoder, mask
decoder, mask selection and postprocessing. With `fast` (the default engine) the mask decoder
is samsvc.engine.sam.fast_decoder's, which reorders floating-point sums (scores agree to 1e-4,
masks to the last pixels at the threshold); without it, SamPredictor.predict_torch runs as is.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import PromptEncoder, Sam
from segment_anything.predictor import SamPredictor

from samsvc.engine.embeddings import ImageEmbedding
from samsvc.engine.prompt_types import PromptOutput, PromptSpec
from samsvc.engine.sam import fast_decoder
from samsvc.engine.sam.embedding import predictor_for
from samsvc.engine.sam.fast_amg import upsample_masks

_DENSE_PE: weakref.WeakKeyDictionary[PromptEncoder, torch.Tensor] = weakref.WeakKeyDictionary()


def dense_pe(model: Sam) -> torch.Tensor:
    """The prompt encoder's positional encoding of the embedding grid: the same for every call
    on a model (its weights are read-only while served), so computed once per model."""
    encoder = model.prompt_encoder
    cached = _DENSE_PE.get(encoder)
    if cached is None or cached.device != encoder.pe_layer.positional_encoding_gaussian_matrix.device:
        cached = _DENSE_PE[encoder] = encoder.get_dense_pe()
    return cached


#: Images whose decoder image side (fast_decoder.ImageSide, about 6 MiB each) is kept for their
#: next click, most recently prompted last.
DEFAULT_IMAGE_SIDES = 8


class ImageSides:
    """The mask decoder's first-layer image side of recently prompted images, by embedding
    tensor (alive: an image session's, the embedding cache's copy is new each time). Kept from
    an image's second prompt on: one prompt alone is cheaper folded into its tokens (the fast
    decoder's default) than projecting the image's 4096 tokens, which a kept side has paid for."""

    def __init__(self, entries: int = DEFAULT_IMAGE_SIDES) -> None:
        self.entries = entries
        self._lock = threading.Lock()
        self._sides: OrderedDict[tuple[int, int], tuple[weakref.ref[torch.Tensor], fast_decoder.ImageSide]] = (
            OrderedDict()
        )
        self._seen: OrderedDict[tuple[int, int], weakref.ref[torch.Tensor]] = OrderedDict()

    def get(self, model: Sam, features: torch.Tensor, dense: torch.Tensor) -> fast_decoder.ImageSide | None:
        key = (id(model.mask_decoder), id(features))
        with self._lock:
            kept = self._sides.get(key)
            if kept is not None and kept[0]() is features:
                self._sides.move_to_end(key)
                return kept[1]
            seen = self._seen.pop(key, None)
            if seen is None or seen() is not features:
                self._seen[key] = weakref.ref(features)
                while len(self._seen) > 4 * self.entries:
                    self._seen.popitem(last=False)
                return None
        side = fast_decoder.image_side(model.mask_decoder, features, dense_pe(model), dense)
        if side is not None:
            with self._lock:
                self._sides[key] = (weakref.ref(features), side)
                while len(self._sides) > self.entries:
                    self._sides.popitem(last=False)
        return side


_IMAGE_SIDES = ImageSides()


def _fast_predict(
    predictor: SamPredictor,
    coords: torch.Tensor | None,
    labels: torch.Tensor | None,
    box: torch.Tensor | None,
    mask: torch.Tensor | None,
    multimask: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SamPredictor.predict_torch for one prompt, with the fast mask decoder."""
    model = predictor.model
    points = (coords, labels) if coords is not None and labels is not None else None
    sparse, dense = model.prompt_encoder(points=points, boxes=box, masks=mask)
    # A mask input changes the dense embedding, hence the image side.
    side = _IMAGE_SIDES.get(model, predictor.features, dense) if mask is None else None
    decoded = fast_decoder.decode_prompts(model.mask_decoder, predictor.features, dense_pe(model), sparse, dense, side)
    # Only the masks the answer keeps go through the hypernetwork product and the upsampling.
    chosen = slice(1, None) if multimask else slice(0, 1)
    decoded = dataclasses.replace(decoded, hyper_in=decoded.hyper_in[:, chosen], iou_pred=decoded.iou_pred[:, chosen])
    low_res = decoded.masks(model.mask_decoder)
    masks = upsample_masks(model, low_res, predictor.input_size, predictor.original_size) > model.mask_threshold
    return masks, decoded.iou_pred, low_res


def predict_prompts(
    model: Sam,
    embedding: ImageEmbedding,
    prompts: list[PromptSpec],
    multimask: bool,
    precision: Callable[[], AbstractContextManager[Any]] | None = None,
    *,
    fast: bool = True,
) -> list[PromptOutput]:
    """Each prompt as SamPredictor.predict computes it (its input transforms, then the network
    under `precision`), with the outputs read back in fp32."""
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
                if fast:
                    masks, scores, logits = _fast_predict(predictor, coords, labels, box, mask, multimask)
                else:
                    masks, scores, logits = predictor.predict_torch(
                        coords, labels, box, mask, multimask_output=multimask
                    )
            outputs.append(
                PromptOutput(
                    masks=masks[0].cpu().numpy().astype(bool),
                    scores=scores[0].float().cpu().numpy(),
                    low_res_logits=logits[0].float().cpu().numpy(),
                )
            )
    return outputs
