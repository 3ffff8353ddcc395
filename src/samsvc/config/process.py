"""The process: where the gRPC server listens, how it stops, its logs and metrics.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings


class ProcessSettings(BaseSettings):
    """The process: where the gRPC server listens, how it stops, its logs and metrics."""

    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    device: str = Field("auto", description="Torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:N.")
    shutdown_grace: float = Field(30.0, ge=0, description="Seconds in-flight requests get to finish on SIGTERM.")
    drain_delay: float = Field(
        0.0, ge=0, description="Seconds health reports NOT_SERVING before the server stops taking requests."
    )
    log_level: str = Field("INFO", description="Logging level.")
    log_format: Literal["json", "text"] = Field(
        "json", description="Log lines as JSON objects (ts, level, logger, message, request_id, ...), or as text."
    )
    metrics_host: str = Field(
        "127.0.0.1",
        description="Address of the Prometheus metrics endpoint (served by the process itself, not through Envoy).",
    )
    metrics_port: int = Field(
        9464, ge=-1, le=65535, description="Port of the Prometheus metrics endpoint; 0 picks one, -1 turns it off."
    )
    worker_metrics_port: int = Field(
        9465, ge=-1, le=65535, description="Metrics port of `samsvc worker` (all its processes); 0 picks one, -1: off."
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in {"auto", "cpu", "cuda", "mps"} or value.startswith("cuda:"):
            return value
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")
