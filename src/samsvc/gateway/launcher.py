"""The gateway as `samsvc serve` and `samsvc gateway` run it: the adapter (multipart and docs)
in a thread of this process, and Envoy as a child process in front of a gRPC address."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from samsvc.config import Settings
from samsvc.gateway.adapter import AdapterServer, ToolSettings, start_adapter
from samsvc.gateway.call_limits import CallLimits
from samsvc.gateway.envoy_config import JSON_OVERHEAD_BYTES, GatewayConfig
from samsvc.gateway.envoy_process import EnvoyProcess

log = logging.getLogger(__name__)


def descriptor_set_path() -> Path:
    return Path(str(resources.files("samsvc.v1") / "descriptor_set.pb"))


def body_limit(payload_bytes: int) -> int:
    """The largest body Envoy buffers for a request carrying `payload_bytes` of images: their
    base64 in JSON (4/3 of them) plus room for the rest; larger bodies get 413 from Envoy."""
    return -(-payload_bytes * 4 // 3) + JSON_OVERHEAD_BYTES


@dataclass
class Gateway:
    adapter: AdapterServer
    envoy: EnvoyProcess

    @property
    def rest_port(self) -> int:
        return self.envoy.rest_port

    @property
    def tls_port(self) -> int | None:
        return self.envoy.ports.get("rest_tls")

    def stop(self) -> None:
        self.envoy.stop()
        self.adapter.shutdown()
        self.adapter.server_close()


def start_gateway(settings: Settings, grpc_host: str, grpc_port: int) -> Gateway:
    image, batch = body_limit(settings.max_image_bytes), body_limit(settings.max_batch_bytes)
    tools = ToolSettings(
        label_studio_url=settings.label_studio_url,
        max_image_bytes=settings.max_image_bytes,
        prelabel_max_regions=settings.label_studio_prelabel_max_regions,
        prelabel_points_per_side=settings.label_studio_prelabel_points_per_side,
    )
    secret = secrets.token_urlsafe(32)  # this Envoy's, in its private config file only
    adapter, adapter_port = start_adapter(
        "127.0.0.1",
        f"{grpc_host}:{grpc_port}",
        max(image, batch),
        settings.rest_timeout_s,
        tools,
        gateway_secret=secret,
        limits=CallLimits(settings.gateway_adapter_max_calls, settings.gateway_adapter_max_calls_per_key),
    )
    config = GatewayConfig(
        descriptor_set=descriptor_set_path(),
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        adapter_host="127.0.0.1",
        adapter_port=adapter_port,
        rest_host=settings.rest_host,
        rest_port=settings.rest_port,
        admin_port=settings.envoy_admin_port,
        image_request_bytes=image,
        batch_request_bytes=batch,
        request_timeout_s=settings.rest_timeout_s,
        headers_timeout_s=settings.gateway_headers_timeout_s,
        receive_timeout_s=settings.gateway_receive_timeout_s,
        idle_timeout_s=settings.gateway_idle_timeout_s,
        max_connections=settings.gateway_max_connections,
        max_heap_bytes=settings.gateway_max_heap_bytes,
        cors_origins=tuple(settings.cors_origins),
        adapter_secret=secret,
        tls_cert_file=settings.tls_cert_file,
        tls_key_file=settings.tls_key_file,
        tls_port=settings.tls_port,
    )
    try:
        envoy = EnvoyProcess(config, settings.envoy_binary).start()
    except BaseException:
        adapter.shutdown()
        adapter.server_close()
        raise
    return Gateway(adapter=adapter, envoy=envoy)


def banner(settings: Settings, grpc_port: int, gateway: Gateway | None) -> str:
    lines = [f"samsvc: gRPC on {settings.grpc_host}:{grpc_port} (grpcurl -plaintext 127.0.0.1:{grpc_port} list)"]
    if gateway is not None:
        base = f"http://{settings.rest_host}:{gateway.rest_port}"
        lines += [
            f"samsvc: REST/JSON and gRPC on {base} (POST {base}/api/v1/segment, GET {base}/health)",
            f"samsvc: API docs at {base}/docs and {base}/redoc, OpenAPI at {base}/openapi.json",
        ]
        if gateway.tls_port:
            lines.append(f"samsvc: TLS on https://{settings.rest_host}:{gateway.tls_port}")
    return "\n".join(lines)
