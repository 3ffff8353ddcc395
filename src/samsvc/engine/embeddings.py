"""Image embeddings (the encoder's output) and their cache: image content hash + model digest
-> embedding, so a second prompt on the same image skips the encoder. An embedding also leaves
the service (GetImageEmbedding, embedding jobs) as raw tensors with the transform a client needs
to place its clicks on the model's input."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from samsvc.cache.backend import ByteCache

#: The name SAM's decoders (segment-anything's ONNX export, CVAT's plugin) give the embedding.
SAM_TENSOR_NAME = "image_embeddings"
#: Input pixels per embedding cell, along each side (the ViT's patch size).
SAM_PATCH_SIZE = 16
#: Element types an embedding leaves the service in, by name, with their little-endian numpy type.
TENSOR_DTYPES: dict[str, np.dtype[Any]] = {"float32": np.dtype("<f4"), "float16": np.dtype("<f2")}


@dataclass(frozen=True)
class EmbeddingTransform:
    """How an image's pixels map onto the model's input: resized to `resized_size` (SAM keeps
    the aspect ratio, its longest side `input_size`; SAM 2 stretches to the full square), then
    padded right and bottom to an `input_size` square. A pixel (x, y) is (x * scale_x,
    y * scale_y) in the model's input."""

    original_size: tuple[int, int]  # (h, w)
    resized_size: tuple[int, int]  # (h, w), before padding
    input_size: int
    mask_input_size: int

    @property
    def scale(self) -> float:
        """The longest side's scale (SAM's single scale; SAM 2 scales the axes apart)."""
        return self.input_size / max(self.original_size)

    @property
    def scale_x(self) -> float:
        return self.resized_size[1] / self.original_size[1]

    @property
    def scale_y(self) -> float:
        return self.resized_size[0] / self.original_size[0]


@dataclass(frozen=True)
class ImageEmbedding:
    """What the image encoder made of one image: the embedding its decoder reads (`features`,
    named `name`), any further feature maps (SAM 2's high-resolution features, in `extra`) and
    the sizes that place prompts on it."""

    features: torch.Tensor
    #: The resized image's (h, w) before padding (SamPredictor.input_size).
    input_size: tuple[int, int]
    original_size: tuple[int, int]
    #: Further named feature maps the decoder reads, in order.
    extra: tuple[tuple[str, torch.Tensor], ...] = ()
    name: str = SAM_TENSOR_NAME

    def transform(self) -> EmbeddingTransform:
        """The encoder turns each 16 x 16 patch of its input into one embedding cell, and the
        decoder's low-resolution masks have 4 x 4 cells per embedding cell (SAM and SAM 2)."""
        grid = int(self.features.shape[-1])
        return EmbeddingTransform(self.original_size, self.input_size, grid * SAM_PATCH_SIZE, grid * 4)

    def named(self) -> list[tuple[str, torch.Tensor]]:
        return [(self.name, self.features), *self.extra]

    def tensors(self, dtype: str = "float32") -> list[tuple[str, tuple[int, ...], bytes]]:
        """(name, shape, C-order little-endian bytes) of each tensor, in `dtype`."""
        out = []
        for name, tensor in self.named():
            array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
            out.append((name, tuple(array.shape), array.astype(TENSOR_DTYPES[dtype], copy=False).tobytes()))
        return out

    @property
    def nbytes(self) -> int:
        return sum(int(tensor.numel() * 4) for _, tensor in self.named())

    def to_bytes(self, meta: dict[str, str] | None = None) -> bytes:
        """A self-describing serialisation (names, shapes, sizes and `meta` in a JSON header,
        then each tensor's float32 bytes)."""
        tensors = self.tensors("float32")
        header = json.dumps(
            {
                "tensors": [{"name": name, "shape": list(shape)} for name, shape, _ in tensors],
                "input_size": list(self.input_size),
                "original_size": list(self.original_size),
                "meta": meta or {},
            }
        ).encode()
        return len(header).to_bytes(4, "little") + header + b"".join(raw for _, _, raw in tensors)

    @classmethod
    def from_bytes(cls, data: bytes, device: torch.device) -> ImageEmbedding:
        return cls.from_bytes_with_meta(data, device)[0]

    @classmethod
    def from_bytes_with_meta(cls, data: bytes, device: torch.device) -> tuple[ImageEmbedding, dict[str, str]]:
        size = int.from_bytes(data[:4], "little")
        header = json.loads(data[4 : 4 + size])
        offset = 4 + size
        named = []
        for described in header["tensors"]:
            shape = [int(v) for v in described["shape"]]
            count = int(np.prod(shape))
            array = np.frombuffer(data, dtype="<f4", count=count, offset=offset).reshape(shape)
            offset += count * 4
            named.append((str(described["name"]), torch.from_numpy(array.astype(np.float32)).to(device)))
        ih, iw = header["input_size"]
        oh, ow = header["original_size"]
        (name, features), *extra = named
        embedding = cls(features, (ih, iw), (oh, ow), extra=tuple(extra), name=name)
        return embedding, dict(header.get("meta", {}))


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
