"""Envoy's configuration, rendered from settings: one listener (plus an optional TLS one)
serving REST/JSON through the gRPC-JSON transcoder and native gRPC on the same port.

Routing, in order:
- /docs, /docs/*, /redoc, /openapi.json and multipart uploads go to the adapter, with the
  transcoder off (the transcoder cannot parse multipart);
- everything else is transcoded (or passed through when it already is gRPC) to the gRPC
  server. After transcoding Envoy matches routes again on the gRPC path, so the timeouts sit
  on `/samsvc.v1.SegmentationService/...` routes; streams have none.
- a raw image body (Content-Type image/*) posted to /api/v1/segment or /segment is renamed by
  a small Lua filter to the `:upload` route, whose request body is a google.api.HttpBody.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICE = "samsvc.v1.SegmentationService"
ADMIN_SERVICE = "samsvc.v1.AdminService"
GRPC_CLUSTER = "samsvc_grpc"
ADAPTER_CLUSTER = "samsvc_adapter"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
CORS = "envoy.filters.http.cors"
ROUTER = "envoy.filters.http.router"
BUFFER = "envoy.filters.http.buffer"
#: Methods that stream: no route timeout may cut them.
STREAMING_METHODS = ("SegmentBatch", "WatchJob")
#: Room for JSON around base64 image data.
JSON_OVERHEAD_BYTES = 1024 * 1024
MAX_RESPONSE_BYTES = 512 * 1024 * 1024

_UPLOAD_LUA = """
function envoy_on_request(handle)
  local headers = handle:headers()
  if headers:get(":method") ~= "POST" then return end
  local kind = string.lower(headers:get("content-type") or "")
  if string.sub(kind, 1, 6) ~= "image/" then return end
  local path = headers:get(":path")
  local base, query = string.match(path, "^([^?]*)(.*)$")
  if base == "/api/v1/segment" or base == "/segment" then
    headers:replace(":path", base .. ":upload" .. query)
  end
end
"""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the rendered Envoy config depends on."""

    descriptor_set: Path
    grpc_host: str
    grpc_port: int
    adapter_host: str
    adapter_port: int
    rest_host: str = "127.0.0.1"
    rest_port: int = 8000
    admin_port: int = 9901
    max_request_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 600.0
    cors_origins: tuple[str, ...] = ()
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_port: int = 8443
    extra: dict[str, Any] = field(default_factory=dict)


def _typed(type_name: str, **body: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **body}


def _disabled() -> dict[str, Any]:
    return _typed("envoy.config.route.v3.FilterConfig", disabled=True)


def _cluster(name: str, host: str, port: int, http2: bool) -> dict[str, Any]:
    protocol: dict[str, Any] = {"http2_protocol_options": {}} if http2 else {"http_protocol_options": {}}
    return {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_PREFERRED",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": _typed(
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", explicit_http_config=protocol
            )
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}]}
            ],
        },
    }


def _routes(config: GatewayConfig) -> list[dict[str, Any]]:
    to_adapter = {"cluster": ADAPTER_CLUSTER, "timeout": f"{config.request_timeout_s:g}s"}
    off = {TRANSCODER: _disabled()}
    routes: list[dict[str, Any]] = [
        {"match": {"path": "/docs"}, "route": to_adapter, "typed_per_filter_config": off},
        {"match": {"prefix": "/docs/"}, "route": to_adapter, "typed_per_filter_config": off},
        {"match": {"path": "/redoc"}, "route": to_adapter, "typed_per_filter_config": off},
        {"match": {"path": "/openapi.json"}, "route": to_adapter, "typed_per_filter_config": off},
        {
            "match": {
                "safe_regex": {"regex": "^/(api/v1/)?segment(/batch)?$"},
                "headers": [
                    {"name": ":method", "string_match": {"exact": "POST"}},
                    {"name": "content-type", "string_match": {"prefix": "multipart/form-data", "ignore_case": True}},
                ],
            },
            "route": to_adapter,
            "typed_per_filter_config": off,
        },
    ]
    for method in STREAMING_METHODS:
        routes.append(
            {"match": {"prefix": f"/{SERVICE}/{method}"}, "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"}}
        )
    routes += [
        {
            "match": {"prefix": f"/{service}/"},
            "route": {"cluster": GRPC_CLUSTER, "timeout": f"{config.request_timeout_s:g}s"},
        }
        for service in (SERVICE, ADMIN_SERVICE)
    ]
    routes += [
        # Other native gRPC (reflection, health Watch) streams both ways: no timeout, no buffering.
        {
            "match": {
                "prefix": "/",
                "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
            },
            "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": {BUFFER: _disabled()},
        },
        # REST before transcoding; once transcoded, the routes above match on the gRPC path.
        {"match": {"prefix": "/"}, "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"}},
    ]
    return routes


def _cors_policy(origins: tuple[str, ...]) -> dict[str, Any]:
    return _typed(
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        allow_origin_string_match=[{"exact": origin} for origin in origins],
        allow_methods="GET, POST, DELETE, OPTIONS",
        allow_headers="content-type, authorization, x-api-key, x-request-id, grpc-timeout, x-grpc-web",
        expose_headers="x-request-id, grpc-status, grpc-message",
        max_age="86400",
    )


def _connection_manager(config: GatewayConfig, stat_prefix: str) -> dict[str, Any]:
    virtual_host: dict[str, Any] = {"name": "samsvc", "domains": ["*"], "routes": _routes(config)}
    if config.cors_origins:
        virtual_host["typed_per_filter_config"] = {CORS: _cors_policy(config.cors_origins)}
    transcoder = _typed(
        "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
        proto_descriptor=str(config.descriptor_set),
        services=[SERVICE, ADMIN_SERVICE],
        print_options={
            "add_whitespace": False,
            "always_print_primitive_fields": True,
            "always_print_enums_as_ints": False,
            "preserve_proto_field_names": True,
            "stream_newline_delimited": True,
        },
        convert_grpc_status=True,
        request_validation_options={"reject_unknown_method": True, "reject_unknown_query_parameters": True},
        max_request_body_size=config.max_request_bytes,
        max_response_body_size=MAX_RESPONSE_BYTES,
    )
    return _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=stat_prefix,
        codec_type="AUTO",
        # Streams (batch events) may be long; idle limits are set per route instead.
        stream_idle_timeout="0s",
        request_timeout="0s",
        generate_request_id=True,
        preserve_external_request_id=True,
        route_config={"name": "samsvc", "virtual_hosts": [virtual_host]},
        http_filters=[
            {"name": CORS, "typed_config": _typed("envoy.extensions.filters.http.cors.v3.Cors")},
            # Refuses bodies over the limit with 413 before anything else reads them.
            {
                "name": BUFFER,
                "typed_config": _typed(
                    "envoy.extensions.filters.http.buffer.v3.Buffer", max_request_bytes=config.max_request_bytes
                ),
            },
            {
                "name": "envoy.filters.http.lua",
                "typed_config": _typed(
                    "envoy.extensions.filters.http.lua.v3.Lua", default_source_code={"inline_string": _UPLOAD_LUA}
                ),
            },
            {"name": TRANSCODER, "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": _typed("envoy.extensions.filters.http.router.v3.Router"),
            },
        ],
    )


def _listener(config: GatewayConfig, name: str, port: int, tls: bool) -> dict[str, Any]:
    chain: dict[str, Any] = {
        "filters": [
            {"name": "envoy.filters.network.http_connection_manager", "typed_config": _connection_manager(config, name)}
        ]
    }
    if tls:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": _typed(
                "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                common_tls_context={
                    "alpn_protocols": ["h2", "http/1.1"],
                    "tls_certificates": [
                        {
                            "certificate_chain": {"filename": str(config.tls_cert_file)},
                            "private_key": {"filename": str(config.tls_key_file)},
                        }
                    ],
                },
            ),
        }
    return {
        "name": name,
        "address": {"socket_address": {"address": config.rest_host, "port_value": port}},
        "per_connection_buffer_limit_bytes": 1024 * 1024,
        "filter_chains": [chain],
    }


def render(config: GatewayConfig) -> dict[str, Any]:
    """The Envoy bootstrap for `config`, as a JSON-able dict."""
    listeners = [_listener(config, "rest", config.rest_port, tls=False)]
    if config.tls_cert_file and config.tls_key_file:
        listeners.append(_listener(config, "rest_tls", config.tls_port, tls=True))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": config.admin_port}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                _cluster(GRPC_CLUSTER, config.grpc_host, config.grpc_port, http2=True),
                _cluster(ADAPTER_CLUSTER, config.adapter_host, config.adapter_port, http2=False),
            ],
        },
    }


def write_config(config: GatewayConfig, path: Path) -> Path:
    path.write_text(json.dumps(render(config), indent=1), encoding="utf-8")
    return path


if __name__ == "__main__":
    # The rendering for the defaults, as kept in envoy/envoy.example.json.
    import sys

    example = GatewayConfig(
        descriptor_set=Path("generated/samsvc/v1/descriptor_set.pb"),
        grpc_host="127.0.0.1",
        grpc_port=50051,
        adapter_host="127.0.0.1",
        adapter_port=8001,
    )
    json.dump(render(example), sys.stdout, indent=1)
    sys.stdout.write("\n")
