"""The gateway as `samsvc serve` and `samsvc gateway` run it: the sidecar (multipart and docs)
in a thread of this process, and Envoy as a child process in front of a gRPC address."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from samsvc.gateway.call_limits import CallLimits
from samsvc.gateway.envoy_config import JSON_OVERHEAD_BYTES, GatewayConfig
from samsvc.gateway.envoy_process import EnvoyProcess
from samsvc.gateway.options import GatewayOptions
from samsvc.gateway.sidecar import SidecarServer, start_sidecar

log = logging.getLogger(__name__)


def descriptor_set_path() -> Path:
    return Path(str(resources.files("samsvc.v1") / "descriptor_set.pb"))


def body_limit(payload_bytes: int) -> int:
    """The largest body Envoy buffers for a request carrying `payload_bytes` of images: their
    base64 in JSON (4/3 of them) plus room for the rest; larger bodies get 413 from Envoy."""
    return -(-payload_bytes * 4 // 3) + JSON_OVERHEAD_BYTES


@dataclass
class Gateway:
    sidecar: SidecarServer
    envoy: EnvoyProcess

    @property
    def rest_port(self) -> int:
        return self.envoy.rest_port

    @property
    def tls_port(self) -> int | None:
        return self.envoy.ports.get("rest_tls")

    def stop(self) -> None:
        self.envoy.stop()
        self.sidecar.shutdown()
        self.sidecar.server_close()


def start_gateway(options: GatewayOptions, grpc_host: str, grpc_port: int) -> Gateway:
    image, batch = body_limit(options.max_image_bytes), body_limit(options.max_batch_bytes)
    secret = secrets.token_urlsafe(32)  # this Envoy's, in its private config file only
    sidecar, sidecar_port = start_sidecar(
        "127.0.0.1",
        f"{grpc_host}:{grpc_port}",
        max(image, batch),
        options.request_timeout_s,
        options.tools,
        gateway_secret=secret,
        limits=CallLimits(options.sidecar_max_calls, options.sidecar_max_calls_per_key),
    )
    config = GatewayConfig(
        descriptor_set=descriptor_set_path(),
        grpc_host=grpc_host,
        grpc_port=grpc_port,
        sidecar_host="127.0.0.1",
        sidecar_port=sidecar_port,
        rest_host=options.rest_host,
        rest_port=options.rest_port,
        admin_port=options.admin_port,
        image_request_bytes=image,
        batch_request_bytes=batch,
        request_timeout_s=options.request_timeout_s,
        headers_timeout_s=options.headers_timeout_s,
        receive_timeout_s=options.receive_timeout_s,
        idle_timeout_s=options.idle_timeout_s,
        max_connections=options.max_connections,
        max_heap_bytes=options.max_heap_bytes,
        cors_origins=options.cors_origins,
        sidecar_secret=secret,
        tls_cert_file=options.tls_cert_file,
        tls_key_file=options.tls_key_file,
        tls_port=options.tls_port,
    )
    try:
        envoy = EnvoyProcess(config, options.envoy_binary).start()
    except BaseException:
        sidecar.shutdown()
        sidecar.server_close()
        raise
    return Gateway(sidecar=sidecar, envoy=envoy)


def banner(grpc_host: str, grpc_port: int, rest_host: str, gateway: Gateway | None) -> str:
    lines = [f"samsvc: gRPC on {grpc_host}:{grpc_port} (grpcurl -plaintext 127.0.0.1:{grpc_port} list)"]
    if gateway is not None:
        base = f"http://{rest_host}:{gateway.rest_port}"
        lines += [
            f"samsvc: REST/JSON and gRPC on {base} (POST {base}/api/v1/segment, GET {base}/health)",
            f"samsvc: API docs at {base}/docs and {base}/redoc, OpenAPI at {base}/openapi.json",
        ]
        if gateway.tls_port:
            lines.append(f"samsvc: TLS on https://{rest_host}:{gateway.tls_port}")
    return "\n".join(lines)
