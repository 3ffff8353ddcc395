"""Envoy's routes and the Lua rewrites in front of the transcoder (samsvc.gateway.envoy_config
renders the rest).

Routing, in order:
- the open routes (no key needed: / and /console/* for the web console, /docs, /docs/*, /redoc,
  /openapi.json, and health: /health, /api/v1/health, gRPC health and CheckHealth) take no body
  beyond OPEN_BODY_BYTES, so an unauthenticated caller cannot make Envoy buffer anything;
- the pages, multipart uploads and the label-tool adapters go to the sidecar, with the
  transcoder off (the transcoder cannot parse multipart, and the tools speak their own
  protocols);
- everything else is transcoded (or passed through when it already is gRPC) to the gRPC
  server. After transcoding Envoy matches routes again on the gRPC path, so the timeouts sit
  on `/samsvc.v1.SegmentationService/...` routes; streams have none.

Rewrites (Lua, before the transcoder picks the method by path):
- a raw image body (Content-Type image/*) posted to /api/v1/segment or /segment goes to the
  `:upload` route, whose request body is a google.api.HttpBody;
- an embedding asked for with `Accept: application/octet-stream` goes to its `:raw` route,
  whose answer is the raw tensor (a google.api.HttpBody).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from samsvc.gateway.envoy_config import GatewayConfig

SERVICE = "samsvc.v1.SegmentationService"
ADMIN_SERVICE = "samsvc.v1.AdminService"
GRPC_CLUSTER = "samsvc_grpc"
SIDECAR_CLUSTER = "samsvc_sidecar"
TRANSCODER = "envoy.filters.http.grpc_json_transcoder"
BUFFER = "envoy.filters.http.buffer"
#: Methods that stream: no route timeout may cut them.
STREAMING_METHODS = ("SegmentBatch", "WatchJob")
#: Methods whose request carries a batch of images (every other carries one at most).
BATCH_METHODS = ("SubmitBatch", "SegmentBatch", "SubmitEmbeddingBatch")
#: The REST paths of those methods.
BATCH_REST_PATHS = "^/(api/v1/)?segment/batch(:stream)?$|^/api/v1/embeddings/batch$"
#: Seconds a stream (job events) may stay silent: images can take minutes each.
STREAM_IDLE_TIMEOUT_S = 3600
#: Path prefixes of the label-tool adapters (samsvc.gateway.label_studio, samsvc.gateway.cvat).
ADAPTER_PREFIXES = ("/label-studio/", "/cvat/")
#: Where Label Studio posts its project's events (the webhook it makes for an ML backend, with no
#: credentials): answered 200 by Envoy itself, the body unread, nothing logged or done.
LABEL_STUDIO_WEBHOOK = r"^/label-studio/(m/[^/]+/)?webhook/?$"
#: The header carrying the gateway's secret to the sidecar (samsvc.gateway.sidecar checks it).
GATEWAY_HEADER = "x-samsvc-gateway"
#: Largest body Envoy takes on a route open without a key (pages and health take none; a few
#: KiB leave room for clients that send an empty JSON object or form).
OPEN_BODY_BYTES = 4 * 1024
#: The health checks, open to probes without a key unless AUTH_PROTECT_HEALTH: REST paths and
#: unary gRPC methods (their requests are a few bytes).
HEALTH_REST_PATHS = ("/health", "/api/v1/health")
HEALTH_GRPC_METHODS = (f"/{SERVICE}/CheckHealth", "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch")

REWRITE_LUA = """
local function raw_embedding(base)
  return base == "/api/v1/embeddings"
    or string.match(base, "^/api/v1/images/[^/:]+/embedding$") ~= nil
    or string.match(base, "^/api/v1/jobs/[^/:]+/images/[^/:]+/embedding$") ~= nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local method = headers:get(":method")
  local base, query = string.match(headers:get(":path"), "^([^?]*)(.*)$")
  local accept = string.lower(headers:get("accept") or "")
  if string.find(accept, "application/octet-stream", 1, true) and raw_embedding(base) then
    headers:replace(":path", base .. ":raw" .. query)
    return
  end
  if method ~= "POST" then return end
  local kind = string.lower(headers:get("content-type") or "")
  if string.sub(kind, 1, 6) ~= "image/" then return end
  if base == "/api/v1/segment" or base == "/segment" then
    headers:replace(":path", base .. ":upload" .. query)
  end
end
"""


def typed(type_name: str, **body: Any) -> dict[str, Any]:
    return {"@type": f"type.googleapis.com/{type_name}", **body}


def disabled() -> dict[str, Any]:
    return typed("envoy.config.route.v3.FilterConfig", disabled=True)


def buffered(limit: int, **more: Any) -> dict[str, Any]:
    """Per-route filter configs: buffer at most `limit` bytes of the request body."""
    per_route = typed("envoy.extensions.filters.http.buffer.v3.BufferPerRoute", buffer={"max_request_bytes": limit})
    return {BUFFER: per_route, **more}


def _from_gateway(config: GatewayConfig) -> list[dict[str, Any]]:
    """The header with the gateway's secret, added to (or replacing one sent with) every request
    routed to the sidecar: the sidecar answers nothing else (samsvc.gateway.sidecar)."""
    header = {"key": GATEWAY_HEADER, "value": config.sidecar_secret}
    return [{"header": header, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]


def routes(config: GatewayConfig) -> list[dict[str, Any]]:
    timeout = f"{config.request_timeout_s:g}s"
    to_sidecar = {"cluster": SIDECAR_CLUSTER, "timeout": timeout}
    off = {TRANSCODER: disabled()}
    image, batch = config.image_request_bytes, config.batch_request_bytes
    multipart = [
        {"name": ":method", "string_match": {"exact": "POST"}},
        {"name": "content-type", "string_match": {"prefix": "multipart/form-data", "ignore_case": True}},
    ]
    table: list[dict[str, Any]] = [
        {
            "match": {"safe_regex": {"regex": LABEL_STUDIO_WEBHOOK}},
            "direct_response": {"status": 200, "body": {"inline_string": '{"status":"ok"}'}},
            "typed_per_filter_config": {BUFFER: disabled(), TRANSCODER: disabled()},
        },
    ]
    table += [
        {"match": {"path": path}, "route": to_sidecar, "typed_per_filter_config": buffered(OPEN_BODY_BYTES, **off)}
        for path in ("/docs", "/redoc", "/openapi.json", "/", "/console")
    ]
    table += [
        *(
            {
                "match": {"prefix": prefix},
                "route": to_sidecar,
                "typed_per_filter_config": buffered(OPEN_BODY_BYTES, **off),
            }
            for prefix in ("/docs/", "/console/")
        ),
        *(
            {
                "match": {"path": path},
                "route": {"cluster": GRPC_CLUSTER, "timeout": timeout},
                "typed_per_filter_config": buffered(OPEN_BODY_BYTES),
            }
            for path in HEALTH_REST_PATHS
        ),
        *(
            {
                "match": {"path": method},
                # Watch streams the serving status for as long as the caller listens.
                "route": {"cluster": GRPC_CLUSTER, "timeout": "0s" if method.endswith("/Watch") else timeout},
                "typed_per_filter_config": buffered(OPEN_BODY_BYTES),
            }
            for method in HEALTH_GRPC_METHODS
        ),
        *(
            {"match": {"prefix": prefix}, "route": to_sidecar, "typed_per_filter_config": buffered(image, **off)}
            for prefix in ADAPTER_PREFIXES
        ),
        {
            "match": {"safe_regex": {"regex": "^/(api/v1/)?segment$"}, "headers": multipart},
            "route": to_sidecar,
            "typed_per_filter_config": buffered(image, **off),
        },
        {
            "match": {"safe_regex": {"regex": "^/(api/v1/)?segment/batch$"}, "headers": multipart},
            "route": to_sidecar,
            "typed_per_filter_config": buffered(batch, **off),
        },
    ]
    for method in STREAMING_METHODS:
        table.append(
            {
                "match": {"prefix": f"/{SERVICE}/{method}"},
                "route": {"cluster": GRPC_CLUSTER, "timeout": "0s", "idle_timeout": f"{STREAM_IDLE_TIMEOUT_S}s"},
                "typed_per_filter_config": buffered(batch if method in BATCH_METHODS else image),
            }
        )
    table += [
        {
            "match": {"path": f"/{SERVICE}/{method}"},
            "route": {"cluster": GRPC_CLUSTER, "timeout": timeout},
            "typed_per_filter_config": buffered(batch),
        }
        for method in BATCH_METHODS
        if method not in STREAMING_METHODS
    ]
    table += [
        {
            "match": {"prefix": f"/{service}/"},
            "route": {"cluster": GRPC_CLUSTER, "timeout": timeout},
            "typed_per_filter_config": buffered(image),
        }
        for service in (SERVICE, ADMIN_SERVICE)
    ]
    table += [
        # Other native gRPC (reflection, health Watch) streams both ways: no timeout, no buffering.
        {
            "match": {
                "prefix": "/",
                "headers": [{"name": "content-type", "string_match": {"prefix": "application/grpc"}}],
            },
            "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": {BUFFER: disabled()},
        },
        # REST before transcoding (once transcoded, the routes above match on the gRPC path):
        # batches buffer a batch, the rest one image.
        {
            "match": {"safe_regex": {"regex": BATCH_REST_PATHS}},
            "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": buffered(batch),
        },
        {
            "match": {"prefix": "/"},
            "route": {"cluster": GRPC_CLUSTER, "timeout": "0s"},
            "typed_per_filter_config": buffered(image),
        },
    ]
    for route in table:
        if route.get("route", {}).get("cluster") == SIDECAR_CLUSTER:
            route["request_headers_to_add"] = _from_gateway(config)
    return table
