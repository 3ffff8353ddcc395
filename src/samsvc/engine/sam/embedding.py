"""SAM's image encoder run once per image (as SamPredictor.set_image, with its attention a slice at
a time), and a predictor primed with an embedding computed before."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from segment_anything.modeling import Sam
from segment_anything.predictor import SamPredictor

from samsvc.engine.embeddings import ImageEmbedding
from samsvc.engine.sam.fast_encoder import FastPredictor


def embed(
    model: Sam, image: npt.NDArray[np.uint8], precision: Callable[[], AbstractContextManager[Any]] | None = None
) -> ImageEmbedding:
    """Run the image encoder once, as SamPredictor.set_image does (under `precision`, if any),
    with its attention a slice at a time (samsvc.engine.sam.fast_encoder: the same embedding)."""
    predictor = FastPredictor(model)
    with torch.inference_mode(), (precision or nullcontext)():
        predictor.set_image(image)
    h, w = predictor.original_size
    ih, iw = predictor.input_size
    return ImageEmbedding(predictor.features.float(), (ih, iw), (h, w))


def predictor_for(model: Sam, embedding: ImageEmbedding) -> SamPredictor:
    """A predictor primed with an embedding computed before (no encoder run)."""
    predictor = SamPredictor(model)
    predictor.features = embedding.features
    predictor.input_size = embedding.input_size
    predictor.original_size = embedding.original_size
    predictor.is_image_set = True
    return predictor
