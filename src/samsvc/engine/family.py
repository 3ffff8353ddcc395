"""The engine interface: what every model family (SAM, SAM 2) does for the service. One package
per family implements it (samsvc.engine.sam, samsvc.engine.sam2), imported only when one of its
models is built; nothing above the engine asks which family a model is, it calls the loaded
model's family. This module and the types it names import neither family's library (nor torch).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord
from samsvc.engine.prompt_types import PromptOutput, PromptSpec
from samsvc.engine.registry import ModelSpec
from samsvc.errors import FailedPrecondition, FieldViolation

if TYPE_CHECKING:
    import torch

    from samsvc.engine.embeddings import ImageEmbedding

Precision = Callable[[], contextlib.AbstractContextManager[Any]]


@dataclass(frozen=True)
class EncoderChoice:
    """What runs a model's image encoder other than torch (registry.ENCODERS), and where its
    compiled forms are kept."""

    runtime: str
    model: str
    #: The checkpoint's SHA-256: compiled forms are kept by it.
    digest: str
    cache_dir: Path
    #: The operator's images for int8 calibration; None: synthetic pictures.
    calibration_dir: Path | None = None


def check_cpu_encoder(choice: EncoderChoice, device: str) -> None:
    """FailedPrecondition (ENCODER_UNAVAILABLE) for an OpenVINO encoder on a server whose models
    run elsewhere than on the CPU."""
    if device != "cpu":
        raise FailedPrecondition(
            f"model {choice.model!r} runs its encoder with {choice.runtime}, which runs on CPUs; this server "
            f"runs models on {device}: ask the operator (set the model's encoder to torch)",
            reason="ENCODER_UNAVAILABLE",
            metadata={"model": choice.model},
        )


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

    def use_encoder(self, model: Any, choice: EncoderChoice, device: torch.device) -> None:
        """Run the model's image encoder with `choice.runtime` instead of torch (before
        `accelerate`); FailedPrecondition (ENCODER_UNAVAILABLE) where it cannot."""
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


#: Each family's implementation, imported only when a model of that family is built: loading
#: this interface, or one family, does not import another family's library.
IMPLEMENTATIONS: dict[str, str] = {
    "sam": "samsvc.engine.sam.family:SamFamily",
    "sam2": "samsvc.engine.sam2.family:Sam2Family",
}


def family_for(name: str) -> ModelFamily:
    """The family implementation by name (registry.FAMILIES); SAM for an empty name."""
    module, _, attribute = IMPLEMENTATIONS[name or "sam"].partition(":")
    family: ModelFamily = getattr(importlib.import_module(module), attribute)()
    return family
