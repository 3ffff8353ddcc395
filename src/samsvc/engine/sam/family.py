"""The SAM family (segment-anything's ViT models) behind the engine interface: its builder, the
AMG defaults the design document set, samsvc's fast engine or segment-anything's generator,
SamPredictor's embeddings and prompts."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from segment_anything.build_sam import _build_sam

from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord
from samsvc.engine.embeddings import ImageEmbedding
from samsvc.engine.encoder_batching import BatchingEncoder
from samsvc.engine.family import EncoderChoice, Precision, check_cpu_encoder
from samsvc.engine.prompt_types import PromptOutput, PromptSpec
from samsvc.engine.registry import Architecture, ModelSpec
from samsvc.engine.sam import amg, prompts
from samsvc.engine.sam import embedding as sam_embedding
from samsvc.errors import ConfigurationError, FieldViolation


def build_sam(architecture: Architecture) -> torch.nn.Module:
    """An untrained SAM of the given shape, from segment-anything's own builder."""
    model: torch.nn.Module = _build_sam(
        encoder_embed_dim=architecture.encoder_embed_dim,
        encoder_depth=architecture.encoder_depth,
        encoder_num_heads=architecture.encoder_num_heads,
        encoder_global_attn_indexes=list(architecture.encoder_global_attn_indexes),
        checkpoint=None,
    )
    return model


class SamFamily:
    name = "sam"
    exports_decoder = True

    def build(self, spec: ModelSpec) -> torch.nn.Module:
        if spec.architecture is None:
            raise ConfigurationError(f"model {spec.name!r} of family sam has no architecture")
        return build_sam(spec.architecture)

    def amg_defaults(self) -> AmgOptions:
        return AmgOptions()

    def option_violations(self, options: AmgOptions, prefix: str) -> list[FieldViolation]:
        if options.use_m2m:
            return [FieldViolation(prefix + "use_m2m", "is for SAM 2 models; SAM models have no mask-to-mask pass")]
        return []

    def accelerate(self, model: Any, *, compile_model: bool, encoder_batch: tuple[int, float]) -> bool:
        if compile_model:
            # The encoder sees one input shape (1024x1024); prompt batch sizes vary, so the
            # decoder's shapes are dynamic. Compilation happens on first call.
            model.image_encoder = torch.compile(model.image_encoder)
            model.mask_decoder = torch.compile(model.mask_decoder, dynamic=True)
        size, wait_s = encoder_batch
        if size > 1:
            model.image_encoder = BatchingEncoder(model.image_encoder, size, wait_s)
        return size > 1

    def use_encoder(self, model: Any, choice: EncoderChoice, device: torch.device) -> None:
        check_cpu_encoder(choice, device.type)
        from samsvc.engine.sam.openvino import use_openvino  # openvino: imported only when used

        use_openvino(model, choice)

    def generate_masks(
        self,
        model: Any,
        image: npt.NDArray[np.uint8],
        options: AmgOptions,
        cancel: CancelToken | None,
        *,
        fast: bool,
        precision: Precision,
    ) -> list[MaskRecord]:
        return amg.generate_masks(model, image, options, cancel, fast=fast, precision=precision)

    def embed(self, model: Any, image: npt.NDArray[np.uint8], precision: Precision) -> ImageEmbedding:
        return sam_embedding.embed(model, image, precision)

    def predict_prompts(
        self,
        model: Any,
        embedding: ImageEmbedding,
        prompts_: list[PromptSpec],
        multimask: bool,
        precision: Precision,
        *,
        fast: bool,
    ) -> list[PromptOutput]:
        return prompts.predict_prompts(model, embedding, prompts_, multimask, precision, fast=fast)
