"""The check Envoy makes before it reads a request's body: `envoy.service.auth.v3.Authorization`.

Envoy's ext_authz filter sends each request's method, path and credential headers here first;
a caller without a valid key (or admin token, on admin routes) is answered 401/403 by Envoy
before one byte of its body is buffered, so unauthenticated uploads cost the gateway nothing.

The decision is the server interceptor's own (`Authenticator.check`) on the RPC the request
will become: REST paths map to RPCs through the protos' `google.api.http` rules, native gRPC
paths are RPCs already, and the documentation pages are open. The refusal is what the server
would have sent: a JSON `google.rpc.Status` for REST, and for gRPC callers the same status in
`grpc-status-details-bin` (Envoy turns the HTTP code into the gRPC code).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2, json_format
from google.rpc import code_pb2, status_pb2

from samsvc.gateway.envoy_routes import LABEL_STUDIO_WEBHOOK
from samsvc.server.auth import Authenticator, log_refusal
from samsvc.server.error_boundary import ServicerContext
from samsvc.server.statuses import to_status

#: Pages the gateway serves without a key: the documentation of the API and the web console's
#: static files (the console itself calls the API with the key its user enters). Their routes
#: take no body beyond a few KiB (samsvc.gateway.envoy_routes.OPEN_BODY_BYTES).
OPEN_PAGES = re.compile(r"/(docs|docs/.*|redoc|openapi\.json|console|console/[A-Za-z0-9_.-]*)?")
#: Label Studio's events for its ML backend, sent without credentials: Envoy answers them itself
#: (samsvc.gateway.envoy_routes.LABEL_STUDIO_WEBHOOK), reading no body.
OPEN_POSTS = re.compile(LABEL_STUDIO_WEBHOOK)


@dataclass(frozen=True)
class HttpRoute:
    verb: str
    pattern: re.Pattern[str]
    rpc: str


def _pattern(template: str) -> re.Pattern[str]:
    """A regex for an http rule's path template: {field} is one segment, {field=**} any."""
    parts = re.split(r"(\{[^}]*\})", template)
    regex = "".join(
        (".+" if part.endswith("**}") else "[^/]+") if part.startswith("{") else re.escape(part) for part in parts
    )
    return re.compile(regex)


def load_routes(descriptor_set: bytes | None = None) -> list[HttpRoute]:
    """Every REST binding of every service in the descriptor set, as (verb, path regex, RPC)."""
    if descriptor_set is None:
        descriptor_set = (resources.files("samsvc.v1") / "descriptor_set.pb").read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set)
    routes: list[HttpRoute] = []
    for file in files.file:
        for service in file.service:
            for method in service.method:
                if not method.options.HasExtension(annotations_pb2.http):
                    continue
                rule = method.options.Extensions[annotations_pb2.http]
                rpc = f"/{file.package}.{service.name}/{method.name}"
                for binding in [rule, *rule.additional_bindings]:
                    verb = binding.WhichOneof("pattern")
                    if verb is not None and verb != "custom":
                        routes.append(HttpRoute(verb.upper(), _pattern(getattr(binding, verb)), rpc))
    return routes


class GatewayAuthServicer(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    def __init__(self, authenticator: Authenticator, routes: Sequence[HttpRoute] | None = None) -> None:
        self.authenticator = authenticator
        self.routes = list(routes) if routes is not None else load_routes()
        self._rpcs = {route.rpc for route in self.routes}

    def known_rpc(self, path: str) -> bool:
        return path in self._rpcs

    def rpc_for(self, verb: str, path: str, grpc: bool) -> str | None:
        """The RPC a request will reach; "" for an open page; None when no route knows it (then a
        key is required, and Envoy answers 404 once it is given)."""
        if grpc:
            return path  # native gRPC: the path is /package.Service/Method
        if (verb == "GET" and OPEN_PAGES.fullmatch(path)) or (verb == "POST" and OPEN_POSTS.match(path)):
            return ""
        for route in self.routes:
            if route.verb == verb and route.pattern.fullmatch(path):
                return route.rpc
        return None

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        path = http.path.split("?", 1)[0]
        headers = dict(http.headers)
        grpc = headers.get("content-type", "").startswith("application/grpc")
        # No method passes on its own: a CORS preflight from an allowed origin is answered by the
        # CORS filter before this check, and any other OPTIONS needs a key like every request.
        rpc = self.rpc_for(http.method.upper(), path, grpc)
        if rpc == "":
            return _allowed()
        error = self.authenticator.check(rpc or path, headers.items())
        if error is None:
            return _allowed()
        # The label is a known method's name, or one word for any other path: a caller choosing
        # paths must not grow the metrics without bound.
        known = rpc is not None and (not grpc or self.known_rpc(rpc))
        label = rpc.rsplit("/", 1)[-1] if known and rpc else "(no route)"
        log_refusal(label, f"{http.method} {path} at the gateway", error)
        return _denied(to_status(error), grpc)


def _allowed() -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK), ok_response=external_auth_pb2.OkHttpResponse()
    )


def _denied(status: status_pb2.Status, grpc: bool) -> external_auth_pb2.CheckResponse:
    http_code = 401 if status.code == code_pb2.UNAUTHENTICATED else 403
    if grpc:
        details = base64.b64encode(status.SerializeToString()).decode("ascii").rstrip("=")
        headers = [("grpc-status-details-bin", details)]
        body = status.message
    else:
        headers = [("content-type", "application/json")]
        body = json_format.MessageToJson(status, preserving_proto_field_name=True, indent=None)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=status.code, message=status.message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_code),
            headers=[base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=k, value=v)) for k, v in headers],
            body=body,
        ),
    )
