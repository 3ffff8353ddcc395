"""How a process's ModelManager is configured (the models section of the settings hands it over,
samsvc.config.models): torch-free, so the settings never import the engine."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samsvc.infra.object_storage import S3Options


@dataclass(frozen=True)
class ModelOptions:
    """Where the weights are and how models are loaded."""

    model_dir: Path
    models_file: Path | None = None
    #: auto (cuda when present, else cpu), cpu, cuda, cuda:N or mps.
    device: str = "auto"
    verify_checksums: bool = True
    #: Download absent built-in weights inside a request instead of failing.
    auto_download: bool = False
    #: Precision of models whose MODELS_FILE entry names none: fp32, fp16 or bf16.
    dtype: str = "fp32"
    #: What runs image encoders whose MODELS_FILE entry names none (registry.ENCODERS).
    encoder: str = "torch"
    compile_models: bool = False
    #: Images encoded in one pass, and how long the first waits for others (seconds).
    encoder_batch_size: int = 1
    encoder_batch_wait_s: float = 0.01
    #: How weights at s3:// addresses are fetched (MODELS_FILE entries).
    s3: S3Options | None = None
