"""The engine interface: what every model family (SAM, SAM 2) does for the service. One module
per family implements it (samsvc.engine.sam_family, samsvc.engine.sam2_family); nothing above
the engine asks which family a model is, it calls the loaded model's family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch

from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord
from samsvc.engine.embeddings import ImageEmbedding
from samsvc.engine.prompts import PromptOutput, PromptSpec
from samsvc.engine.registry import ModelSpec
from samsvc.errors import FieldViolation

Precision = Callable[[], contextlib.AbstractContextManager[Any]]


class ModelFamily(Protocol):
    """One family's models: how they are built, and the three things the service asks of them."""

    #: The family's name as MODELS_FILE and ListModels give it ("sam", "sam2").
    name: str
    #: Whether segment-anything's ONNX export applies (GetDecoder).
    exports_decoder: bool

    def build(self, spec: ModelSpec) -> torch.nn.Module:
        """An untrained model of the spec's shape, on the CPU, from the family's own builder."""
        ...

    def amg_defaults(self) -> AmgOptions:
        """Automatic mask generation's options where a request leaves them unset."""
        ...

    def option_violations(self, options: AmgOptions, prefix: str) -> list[FieldViolation]:
        """Options this family cannot honour, each named."""
        ...

    def accelerate(self, model: Any, *, compile_model: bool, encoder_batch: tuple[int, float]) -> bool:
        """Apply torch.compile and cross-thread encoder batching where the family supports them;
        returns whether encoder batching is on."""
        ...

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
        """Automatic masks of an HxWx3 RGB image."""
        ...

    def embed(self, model: Any, image: npt.NDArray[np.uint8], precision: Precision) -> ImageEmbedding:
        """The image encoder's output for an HxWx3 RGB image."""
        ...

    def predict_prompts(
        self,
        model: Any,
        embedding: ImageEmbedding,
        prompts: list[PromptSpec],
        multimask: bool,
        precision: Precision,
        *,
        fast: bool,
    ) -> list[PromptOutput]:
        """Each prompt's masks, scores and low-resolution logits, from a stored embedding."""
        ...


def family_for(name: str) -> ModelFamily:
    """The family implementation by name (registry.FAMILIES)."""
    if name == "sam2":
        from samsvc.engine.sam2_family import Sam2Family

        return Sam2Family()
    from samsvc.engine.sam_family import SamFamily

    return SamFamily()
