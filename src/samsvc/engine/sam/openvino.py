"""SAM's ViT image encoder on OpenVINO (samsvc.engine.openvino_encoder): the module that takes
its place as the model's `image_encoder`, and what its int8 calibration feeds it."""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from samsvc.engine.family import EncoderChoice
from samsvc.engine.openvino_encoder import CompiledEncoder, compile_encoder


class SamOpenVinoEncoder(nn.Module):
    """N x 3 x 1024 x 1024 in, the N x 256 x 64 x 64 embedding out, as ImageEncoderViT."""

    def __init__(self, compiled: CompiledEncoder, img_size: int) -> None:
        super().__init__()
        self._compiled = compiled
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._compiled(x)[0]


def use_openvino(sam: Sam, choice: EncoderChoice) -> None:
    size = int(sam.image_encoder.img_size)
    compiled = compile_encoder(
        sam.image_encoder,
        size=size,
        precision="int8" if choice.runtime == "openvino-int8" else "fp32",
        digest=choice.digest,
        cache_dir=choice.cache_dir,
        model=choice.model,
        to_input=functools.partial(encoder_input, sam),
        calibration_dir=choice.calibration_dir,
    )
    sam.image_encoder = SamOpenVinoEncoder(compiled, size)


def encoder_input(sam: Sam, picture: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """What SamPredictor feeds the encoder for `picture`: resized, normalised, padded."""
    resized = ResizeLongestSide(int(sam.image_encoder.img_size)).apply_image(picture)
    tensor = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None].float()
    with torch.inference_mode():
        array: npt.NDArray[np.float32] = sam.preprocess(tensor).numpy()
    return array
