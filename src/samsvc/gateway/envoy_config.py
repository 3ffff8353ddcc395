"""Envoy's configuration, rendered from settings: one listener (plus an optional TLS one)
serving REST/JSON through the gRPC-JSON transcoder and native gRPC on the same port.

Nothing is buffered before the caller is known: the first filter after CORS is ext_authz,
which asks the gRPC server's `envoy.service.auth.v3.Authorization/Check`
(samsvc.server.gateway_auth) about the request's headers alone. Each route then buffers at
most what fits it: a batch (MAX_BATCH_BYTES as base64 JSON, plus room) on the batch routes,
one image (MAX_IMAGE_BYTES likewise) on every other. Headers must arrive within the headers
timeout, a whole request within the receive timeout; idle connections and streams are closed;
an overload manager refuses new connections past the connection limit and sheds load as the
heap nears its limit.

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
EXT_AUTHZ = "envoy.filters.http.ext_authz"
#: Methods that stream: no route timeout may cut them.
STREAMING_METHODS = ("SegmentBatch", "WatchJob")
#: Methods whose request carries a batch of images (every other carries one at most).
BATCH_METHODS = ("SubmitBatch", "SegmentBatch")
#: Room for JSON around base64 image data.
JSON_OVERHEAD_BYTES = 1024 * 1024
MAX_RESPONSE_BYTES = 512 * 1024 * 1024
#: Bytes read from one connection before filters see them.
CONNECTION_BUFFER_BYTES = 32 * 1024
#: Seconds a stream (job events) may stay silent: images can take minutes each.
STREAM_IDLE_TIMEOUT_S = 3600
#: Seconds the gateway waits for the authorization check.
AUTHZ_TIMEOUT_S = 5
#: Heap fractions at which the overload manager shrinks the heap, stops keep-alive, refuses
#: requests; from the first to the last it resets the streams holding the most memory.
HEAP_SHRINK, HEAP_NO_KEEPALIVE, HEAP_REFUSE = 0.85, 0.90, 0.95

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
    #: Bodies of one-image requests and of batches (the transcoder's limit is the larger).
    image_request_bytes: int = 16 * 1024 * 1024
    batch_request_bytes: int = 16 * 1024 * 1024
    request_timeout_s: float = 600.0
    headers_timeout_s: float = 10.0
    receive_timeout_s: float = 300.0
    idle_timeout_s: float = 300.0
    max_connections: int = 10_000
    max_heap_bytes: int = 1024 * 1024 * 1024
    cors_origins: tuple[str, ...] = ()
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_port: int = 8443
    extra: dict[str, Any] = field(default_factory=dict)


def _typed(type_name: str, **body: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **body}


def _disabled() -> dict[str, Any]:
    return _typed("envoy.config.route.v3.FilterConfig", disabled=True)


def _buffered(limit: int, **more: Any) -> dict[str, Any]:
    """Per-route filter configs: buffer at most `limit` bytes of the request body."""
    per_route = _typed("envoy.extensions.filters.http.buffer.v3.BufferPerRoute", buffer={"max_request_bytes": limit})
    return {BUFFER: per_route, **more}


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
    timeout = f"{config.request_timeout_s:g}s"
    to_adapter = {"cluster": ADAPTER_CLUSTER, "timeout": timeout}
    off = {TRANSCODER: _disabled()}
    image, batch = config.image_request_bytes, config.batch_request_bytes
    multipart = [
        {"name": ":method", "string_match": {"exact": "POST"}},
        {"name": "content-type", "string_match": {"prefix": "multipart/form-data", "ignore_case": True}},
    ]
    routes: list[dict[str, Any]] = [
        {"match": {"path": path}, "route": to_adapter, "typed_per_filter_config": _buffered(image, **off)}
        for path in ("/docs", "/redoc", "/openapi.json")
    ]
    routes += [
        {
            "match": {"prefix": "/docs/"},
            "route": to_adapter,
            "typed_per_filter_config": _buffered(image, **off),
        },
        {
            "match": {"safe_regex": {"regex": "^/(api/v1/)?segment$"}, "headers": multipart},
            "route": to_adapter,
            "typed_per_filter_config": _buffered(image, **off),
        },
        {
            "match": {"safe_regex": {"regex": "^/(api/v1/)?segment/batch$"}, "headers": multipart},
            "route": to_adapter,
            "typed_per_filter_config": _buffered(batch, **off),
        },
    ]
    for method in STREAMING_METHODS:
        routes.append(
            {
                "match": {"prefix": f"/{SERVICE}/{method}"},
                "route": {"cluster": GRPC_CLUSTER, "timeout": "0s", "idle_timeout": f"{STREAM_IDLE_TIMEOUT_S}s"},
                "typed_per_filter_config": _buffered(batch if method in BATCH_METHODS else image),
            }
        )
    routes += [
        {
            "match": {"path": f"/{SERVICE}/{method}"},
            "route": {"cluster": GRPC_CLUSTER, "timeout": timeout},
            "typed_per_filter_config": _buffered(batch),
        }
        for method in BATCH_METHODS
        if method not in STREAMING_METHODS
    ]
    routes += [
        {
            "match": {"prefix": f"/{service}/"},
            "route": {"cluster": GRPC_CLUSTER, "timeout": timeout},
            "typed_per_filter_config": _buffered(image),
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
        # REST before transcoding (once transcoded, the routes above match on the gRPC path):
        # batches buffer a batch, the rest one image.
        {
            "match": {"safe_regex": {"regex": "^/(api/v1/)?segment/batch(:stream)?$"}},
            "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": _buffered(batch),
        },
        {
            "match": {"prefix": "/"},
            "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": _buffered(image),
        },
    ]
    return routes


def _ext_authz() -> dict[str, Any]:
    """The check before the body: the caller's credential headers only, no body."""
    return _typed(
        "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        grpc_service={"envoy_grpc": {"cluster_name": GRPC_CLUSTER}, "timeout": f"{AUTHZ_TIMEOUT_S}s"},
        transport_api_version="V3",
        failure_mode_allow=False,
        status_on_error={"code": "ServiceUnavailable"},
        allowed_headers={
            "patterns": [
                {"exact": "authorization"},
                {"exact": "x-api-key"},
                {"exact": "content-type"},
            ]
        },
    )


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
        max_request_body_size=max(config.image_request_bytes, config.batch_request_bytes),
        max_response_body_size=MAX_RESPONSE_BYTES,
    )
    return _typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix=stat_prefix,
        codec_type="AUTO",
        # Headers within the headers timeout, the whole request within the receive timeout (a
        # response that has begun, such as a job's event stream, disarms it); idle streams and
        # connections are closed (job event streams have a longer idle limit on their routes).
        request_headers_timeout=f"{config.headers_timeout_s:g}s",
        request_timeout=f"{config.receive_timeout_s:g}s",
        stream_idle_timeout=f"{config.idle_timeout_s:g}s",
        common_http_protocol_options={"idle_timeout": f"{config.idle_timeout_s:g}s"},
        http2_protocol_options={
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 64 * 1024,
            "initial_connection_window_size": 1024 * 1024,
        },
        generate_request_id=True,
        preserve_external_request_id=True,
        route_config={"name": "samsvc", "virtual_hosts": [virtual_host]},
        http_filters=[
            {"name": CORS, "typed_config": _typed("envoy.extensions.filters.http.cors.v3.Cors")},
            # Refuses callers without valid credentials before any body is read.
            {"name": EXT_AUTHZ, "typed_config": _ext_authz()},
            # Refuses bodies over their route's limit with 413 before anything else reads them.
            {
                "name": BUFFER,
                "typed_config": _typed(
                    "envoy.extensions.filters.http.buffer.v3.Buffer", max_request_bytes=config.image_request_bytes
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
        # Envoy's edge advice: what one read takes in before filters see it (a body arriving in
        # one read would otherwise pass a route's buffer limit up to this size).
        "per_connection_buffer_limit_bytes": CONNECTION_BUFFER_BYTES,
        "filter_chains": [chain],
    }


def render(config: GatewayConfig) -> dict[str, Any]:
    """The Envoy bootstrap for `config`, as a JSON-able dict."""
    listeners = [_listener(config, "rest", config.rest_port, tls=False)]
    if config.tls_cert_file and config.tls_key_file:
        listeners.append(_listener(config, "rest_tls", config.tls_port, tls=True))
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": config.admin_port}}},
        "overload_manager": _overload_manager(config),
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                _cluster(GRPC_CLUSTER, config.grpc_host, config.grpc_port, http2=True),
                _cluster(ADAPTER_CLUSTER, config.adapter_host, config.adapter_port, http2=False),
            ],
        },
    }


def _overload_manager(config: GatewayConfig) -> dict[str, Any]:
    heap = "envoy.resource_monitors.fixed_heap"

    def when(fraction: float) -> list[dict[str, Any]]:
        return [{"name": heap, "threshold": {"value": fraction}}]

    return {
        "refresh_interval": "0.25s",
        # Streams buffering 1 MiB or more are tracked, so the largest can be reset under pressure.
        "buffer_factory_config": {"minimum_account_to_track_power_of_two": 20},
        "resource_monitors": [
            {
                "name": heap,
                "typed_config": _typed(
                    "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    max_heap_size_bytes=config.max_heap_bytes,
                ),
            },
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": _typed(
                    "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                    max_active_downstream_connections=config.max_connections,
                ),
            },
        ],
        "actions": [
            {"name": "envoy.overload_actions.shrink_heap", "triggers": when(HEAP_SHRINK)},
            {"name": "envoy.overload_actions.disable_http_keepalive", "triggers": when(HEAP_NO_KEEPALIVE)},
            {"name": "envoy.overload_actions.stop_accepting_requests", "triggers": when(HEAP_REFUSE)},
            {
                "name": "envoy.overload_actions.reset_high_memory_stream",
                "triggers": [
                    {"name": heap, "scaled": {"scaling_threshold": HEAP_SHRINK, "saturation_threshold": HEAP_REFUSE}}
                ],
            },
        ],
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
