"""SAM 2's Hiera image encoder (trunk and FPN neck) on OpenVINO (samsvc.engine.openvino_encoder):
the module that takes its place as the model's `image_encoder`, answering the same dictionary,
and what its int8 calibration feeds it."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sam2.utils.transforms import SAM2Transforms
from torch import nn

from samsvc.engine.family import EncoderChoice
from samsvc.engine.openvino_encoder import CompiledEncoder, compile_encoder


class _Flat(nn.Module):
    """The encoder with its dictionary flattened for export: the FPN levels, then their
    position encodings (the neck's, fixed by the input size)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.encoder(x)
        return (*out["backbone_fpn"], *out["vision_pos_enc"])


class Sam2OpenVinoEncoder(nn.Module):
    """N x 3 x 1024 x 1024 in, sam2's ImageEncoder dictionary out."""

    def __init__(self, compiled: CompiledEncoder, levels: int) -> None:
        super().__init__()
        self._compiled = compiled
        self._levels = levels

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        outputs = self._compiled(x)
        features, positions = outputs[: self._levels], outputs[self._levels :]
        return {"vision_features": features[-1], "vision_pos_enc": positions, "backbone_fpn": features}


def use_openvino(model: Any, choice: EncoderChoice) -> None:
    size = int(model.image_size)
    with torch.inference_mode():
        levels = len(model.image_encoder(torch.zeros(1, 3, size, size))["backbone_fpn"])
    compiled = compile_encoder(
        _Flat(model.image_encoder),
        size=size,
        precision="int8" if choice.runtime == "openvino-int8" else "fp32",
        digest=choice.digest,
        cache_dir=choice.cache_dir,
        model=choice.model,
        to_input=functools.partial(encoder_input, SAM2Transforms(resolution=size, mask_threshold=0.0)),
        calibration_dir=choice.calibration_dir,
    )
    model.image_encoder = Sam2OpenVinoEncoder(compiled, levels)


def encoder_input(transforms: SAM2Transforms, picture: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """What SAM2ImagePredictor feeds the encoder for `picture`: resized to a square, normalised."""
    array: npt.NDArray[np.float32] = transforms(picture)[None].numpy()
    return array
