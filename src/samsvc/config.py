"""The one typed settings object. Every field is an environment variable (upper case) and a
CLI flag (`--kebab-case`); flags win over the environment, which wins over the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: 10 MiB: the seed's per-image limit.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: Longest image side accepted, read from the header before decoding.
DEFAULT_MAX_IMAGE_SIDE = 4096
#: Room for the protobuf fields around the image in one gRPC message.
MESSAGE_OVERHEAD_BYTES = 1024 * 1024


class Settings(BaseSettings):
    """Configuration of a samsvc process."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
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
    max_workers: int = Field(2, ge=1, le=256, description="Concurrent inferences per process.")
    max_queue: int = Field(16, ge=0, le=10_000, description="Requests allowed to wait for an inference slot.")
    device: str = Field("auto", description="Torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:N.")
    max_image_bytes: int = Field(DEFAULT_MAX_IMAGE_BYTES, ge=1, description="Largest image accepted, in bytes.")
    max_image_side: int = Field(DEFAULT_MAX_IMAGE_SIDE, ge=1, description="Longest image side accepted, in pixels.")
    shutdown_grace: float = Field(30.0, ge=0, description="Seconds in-flight requests get to finish on SIGTERM.")
    drain_delay: float = Field(
        0.0, ge=0, description="Seconds health reports NOT_SERVING before the server stops taking requests."
    )
    log_level: str = Field("INFO", description="Logging level.")

    @field_validator("preload", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in {"auto", "cpu", "cuda", "mps"} or value.startswith("cuda:"):
            return value
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    @property
    def max_message_bytes(self) -> int:
        """gRPC receive limit: the largest allowed request plus its envelope."""
        return self.max_image_bytes + MESSAGE_OVERHEAD_BYTES


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with explicit values (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
