"""Image embeddings (the encoder's output) and their cache: image content hash + model digest
-> embedding, so a second prompt on the same image skips the encoder."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from segment_anything.modeling import Sam
from segment_anything.predictor import SamPredictor

from samsvc.cache.backend import ByteCache
from samsvc.engine.fast_encoder import FastPredictor


@dataclass(frozen=True)
class ImageEmbedding:
    features: torch.Tensor
    input_size: tuple[int, int]
    original_size: tuple[int, int]

    def to_bytes(self) -> bytes:
        array = self.features.detach().to("cpu", torch.float32).contiguous().numpy()
        header = json.dumps(
            {"shape": list(array.shape), "input_size": list(self.input_size), "original_size": list(self.original_size)}
        ).encode()
        return len(header).to_bytes(4, "little") + header + array.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device) -> ImageEmbedding:
        size = int.from_bytes(data[:4], "little")
        header = json.loads(data[4 : 4 + size])
        array = np.frombuffer(data[4 + size :], dtype=np.float32).reshape(header["shape"])
        features = torch.from_numpy(array.copy()).to(device)
        ih, iw = header["input_size"]
        oh, ow = header["original_size"]
        return cls(features, (ih, iw), (oh, ow))


def embed(
    model: Sam, image: npt.NDArray[np.uint8], precision: Callable[[], AbstractContextManager[Any]] | None = None
) -> ImageEmbedding:
    """Run the image encoder once, as SamPredictor.set_image does (under `precision`, if any),
    with its attention a slice at a time (samsvc.engine.fast_encoder: the same embedding)."""
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


class EmbeddingCache:
    """A byte cache of embeddings (memory LRU, or Redis), counting hits and misses."""

    def __init__(self, backend: ByteCache) -> None:
        self.backend = backend
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    def get(self, key: str, device: torch.device) -> ImageEmbedding | None:
        data = self.backend.get(key)
        with self._lock:
            if data is None:
                self.misses += 1
                return None
            self.hits += 1
        return ImageEmbedding.from_bytes(data, device)

    def put(self, key: str, embedding: ImageEmbedding) -> None:
        self.backend.put(key, embedding.to_bytes())
