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

Routes and the Lua rewrites are samsvc.gateway.envoy_routes'.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samsvc.gateway.envoy_routes import (
    ADMIN_SERVICE,
    BUFFER,
    GRPC_CLUSTER,
    REWRITE_LUA,
    SERVICE,
    SIDECAR_CLUSTER,
    TRANSCODER,
    routes,
    typed,
)

CORS = "envoy.filters.http.cors"
ROUTER = "envoy.filters.http.router"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
#: The type URL of google.rpc.ErrorInfo in a JSON error's details.
ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
#: Room for JSON around base64 image data.
JSON_OVERHEAD_BYTES = 1024 * 1024
MAX_RESPONSE_BYTES = 512 * 1024 * 1024
#: Bytes read from one connection before filters see them.
CONNECTION_BUFFER_BYTES = 32 * 1024
#: Seconds the gateway waits for the authorization check.
AUTHZ_TIMEOUT_S = 5
#: Heap fractions at which the overload manager shrinks the heap, stops keep-alive, refuses
#: requests; from the first to the last it resets the streams holding the most memory.
HEAP_SHRINK, HEAP_NO_KEEPALIVE, HEAP_REFUSE = 0.85, 0.90, 0.95


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the rendered Envoy config depends on."""

    descriptor_set: Path
    grpc_host: str
    grpc_port: int
    sidecar_host: str
    sidecar_port: int
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
    #: Sent to the sidecar with every request routed there: it answers only the gateway.
    sidecar_secret: str = ""
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_port: int = 8443
    extra: dict[str, Any] = field(default_factory=dict)


#: HTTP/1 options that pass the sidecar's status-line phrases on (Label Studio shows a failed
#: call's phrase to its user, and nothing else of the answer).
REASON_PHRASES = {
    "header_key_format": {
        "stateful_formatter": {
            "name": "preserve_case",
            "typed_config": typed(
                "envoy.extensions.http.header_formatters.preserve_case.v3.PreserveCaseFormatterConfig",
                forward_reason_phrase=True,
            ),
        }
    }
}


def _cluster(name: str, host: str, port: int, http2: bool) -> dict[str, Any]:
    protocol: dict[str, Any] = {"http2_protocol_options": {}} if http2 else {"http_protocol_options": REASON_PHRASES}
    return {
        "name": name,
        "type": "STRICT_DNS",
        "connect_timeout": "5s",
        "dns_lookup_family": "V4_PREFERRED",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
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


def _ext_authz() -> dict[str, Any]:
    """The check before the body: the caller's credential headers only, no body."""
    return typed(
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
    return typed(
        "envoy.extensions.filters.http.cors.v3.CorsPolicy",
        allow_origin_string_match=[{"exact": origin} for origin in origins],
        allow_methods="GET, POST, DELETE, OPTIONS",
        allow_headers="content-type, authorization, x-api-key, x-request-id, grpc-timeout, x-grpc-web",
        expose_headers="x-request-id, grpc-status, grpc-message",
        max_age="86400",
        # A preflight from another origin is answered here too (without CORS headers, so the
        # browser refuses), never passed on to the authorization check and the routes.
        forward_not_matching_preflights=False,
    )


def _error_body(code: int, reason: str) -> dict[str, Any]:
    """A local reply's body as the API's error: google.rpc.Status in JSON with one ErrorInfo
    (the transcoder's own refusals, such as a body that is not the message's JSON or a second
    field of a oneof, are otherwise plain text)."""
    return {
        "json_format": {
            "code": code,
            "message": "%LOCAL_REPLY_BODY%",
            "details": [{"@type": ERROR_INFO, "reason": reason, "domain": "samsvc"}],
        },
        "content_type": "application/json",
    }


def _local_replies() -> dict[str, Any]:
    """Envoy's own 400s in the shape of the server's: a request the transcoder cannot read."""
    bad_request = {
        "status_code_filter": {
            "comparison": {"op": "EQ", "value": {"default_value": 400, "runtime_key": "samsvc.bad_request"}}
        }
    }
    return {"mappers": [{"filter": bad_request, "body_format_override": _error_body(3, reason="MALFORMED_REQUEST")}]}


def _connection_manager(config: GatewayConfig, stat_prefix: str) -> dict[str, Any]:
    virtual_host: dict[str, Any] = {"name": "samsvc", "domains": ["*"], "routes": routes(config)}
    if config.cors_origins:
        virtual_host["typed_per_filter_config"] = {CORS: _cors_policy(config.cors_origins)}
    transcoder = typed(
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
    return typed(
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
        http_protocol_options=REASON_PHRASES,
        http2_protocol_options={
            "max_concurrent_streams": 100,
            "initial_stream_window_size": 64 * 1024,
            "initial_connection_window_size": 1024 * 1024,
        },
        generate_request_id=True,
        preserve_external_request_id=True,
        route_config={"name": "samsvc", "virtual_hosts": [virtual_host]},
        local_reply_config=_local_replies(),
        http_filters=[
            {"name": CORS, "typed_config": typed("envoy.extensions.filters.http.cors.v3.Cors")},
            # Refuses callers without valid credentials before any body is read.
            {"name": EXT_AUTHZ, "typed_config": _ext_authz()},
            # Refuses bodies over their route's limit with 413 before anything else reads them.
            {
                "name": BUFFER,
                "typed_config": typed(
                    "envoy.extensions.filters.http.buffer.v3.Buffer", max_request_bytes=config.image_request_bytes
                ),
            },
            {
                "name": "envoy.filters.http.lua",
                "typed_config": typed(
                    "envoy.extensions.filters.http.lua.v3.Lua", default_source_code={"inline_string": REWRITE_LUA}
                ),
            },
            {"name": TRANSCODER, "typed_config": transcoder},
            {
                "name": "envoy.filters.http.router",
                "typed_config": typed("envoy.extensions.filters.http.router.v3.Router"),
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
            "typed_config": typed(
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
                _cluster(SIDECAR_CLUSTER, config.sidecar_host, config.sidecar_port, http2=False),
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
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    max_heap_size_bytes=config.max_heap_bytes,
                ),
            },
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": typed(
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
        sidecar_host="127.0.0.1",
        sidecar_port=8001,
        sidecar_secret="(made at each start)",  # noqa: S106 (a placeholder: each start makes its own)
    )
    json.dump(render(example), sys.stdout, indent=1)
    sys.stdout.write("\n")
