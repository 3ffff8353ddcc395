"""The models: where their weights are, how they are loaded, which engine generates masks.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from samsvc.config.fields import split_commas


class ModelSettings(BaseSettings):
    """The models: where their weights are, how they are loaded, which engine generates masks."""

    model_dir: Path = Field(Path("./models"), description="Directory holding model checkpoints.")
    models_file: Path | None = Field(None, description="TOML file registering extra models.")
    default_model: str = Field("vit_h", description="Model used when a request names none.")
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Models loaded at start, comma separated; 'all' for every one present."
    )
    auto_download: bool = Field(
        False, description="Download absent built-in weights inside a request instead of failing."
    )
    verify_checksums: bool = Field(True, description="Check a checkpoint's SHA-256 before loading it.")
    model_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32",
        description="Inference precision for models whose MODELS_FILE entry names none (fp16/bf16 via autocast).",
    )
    model_encoder: Literal["torch", "openvino", "openvino-int8"] = Field(
        "torch",
        description=(
            "What runs image encoders whose MODELS_FILE entry names none: torch (exact), openvino (the same "
            "masks, faster on CPUs) or openvino-int8 (faster still, approximate); needs the openvino extra."
        ),
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile each model's encoder and decoder at load (pays on GPUs; the first call compiles).",
    )
    encoder_batch_size: int = Field(
        1,
        ge=1,
        le=64,
        description="Images encoded in one pass when threads encode at once (a worker backlog); 1: off.",
    )
    encoder_batch_wait_ms: float = Field(
        10.0, ge=0, le=1000, description="How long a batch's first image waits for others (ms)."
    )
    amg_engine: Literal["reference", "fast"] = Field(
        "fast",
        description=(
            "Mask generation: samsvc's engine (segment-anything's masks, faster; see the benchmarks page) "
            "or segment-anything's own generator, bit for bit."
        ),
    )
    model_cost_probe: bool = Field(
        True,
        description=(
            "Time each preloaded model at start (a grid of 64 points and an encoder pass on a synthetic "
            "image, which also warms it up) for the cost figures of ListModels and the estimates."
        ),
    )
    decoder_dir: Path | None = Field(
        None, description="Where exported ONNX decoders are kept (by checkpoint digest); unset: MODEL_DIR/onnx."
    )

    @field_validator("preload", mode="before")
    @classmethod
    def _split_models_lists(cls, value: Any) -> Any:
        return split_commas(value)
