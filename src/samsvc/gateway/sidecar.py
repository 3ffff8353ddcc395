"""The sidecar: the small HTTP service behind Envoy for what its transcoder cannot do: the design document's
multipart/form-data uploads, the documentation pages, and other tools' protocols (Label
Studio's ML backend, samsvc.gateway.label_studio; CVAT's SAM function, samsvc.gateway.cvat).

A multipart request (its form fields, and its query parameters as further fields) becomes the
same JSON the transcoder would have received, is parsed into the protobuf request by
protobuf's own JSON mapping, and is sent to the gRPC service; the answer (or the gRPC error)
is written back as the transcoder would have written it. The sidecar judges nothing itself:
every check happens in the gRPC service.

It answers Envoy only: Envoy adds a secret made at start-up (GATEWAY_HEADER) to every
request it routes here, and a request without it (a local process that skipped the gateway's
authorization check) is refused with 403 before its body is read. Its calls are bounded, in all
and per credential (DEFAULT_MAX_CALLS, DEFAULT_MAX_CALLS_PER_KEY); beyond, 429 at once. A body
it cannot read is a JSON 400, and anything unexpected a JSON 500 with the cause in the log.
"""

from __future__ import annotations

import hmac
import http.server
import json
import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from samsvc.errors import ERROR_DOMAIN, InvalidArgument
from samsvc.gateway import cvat, docs, label_studio
from samsvc.gateway.call_limits import CallLimits
from samsvc.gateway.console_assets import CONSOLE_PREFIX, SECURITY_HEADERS, console_file
from samsvc.gateway.envoy_routes import GATEWAY_HEADER
from samsvc.gateway.http_errors import (
    HTTP_STATUS,
    SOURCE_FAILURES,
    error_body,
    info_of,
    phrase,
    to_json,
    tool_http_status,
)
from samsvc.gateway.label_studio import LabelStudioBackend
from samsvc.gateway.multipart import Upload, form_to_json, parse_multipart
from samsvc.gateway.options import ToolOptions
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc

log = logging.getLogger(__name__)

#: Request headers passed on to the gRPC service as metadata.
FORWARDED_HEADERS = ("x-request-id", "authorization", "x-api-key")


class _Handler(http.server.BaseHTTPRequestHandler):
    server: SidecarServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("sidecar: " + format, *args)

    def _send(
        self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None, reason: str = ""
    ) -> None:
        """Answer; `reason` becomes the status line's phrase (Envoy forwards it): the one text of
        a failed call Label Studio shows its user."""
        self.send_response(status, phrase(reason) or None)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        try:
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the caller left: nobody to answer
            self.close_connection = True
            log.info("sidecar: %s %s: the caller left before its %d answer", self.command, self._route(), status)

    def _route(self) -> str:
        return urlsplit(self.path).path

    def _send_rpc_error(self, error: grpc.RpcError) -> None:
        """The gRPC service's error as the transcoder would have written it."""
        code = error.code()
        body = error_body(code, error.details() or "", rpc_status.from_call(error))
        self._send(HTTP_STATUS.get(code, 500), body, "application/json")

    def _not_found(self) -> None:
        status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message=f"no route {self.path}")
        self._send(404, to_json(status), "application/json")

    def _from_gateway(self) -> bool:
        """Whether Envoy sent this request (it carries the gateway's secret); 403 otherwise."""
        given = self.headers.get(GATEWAY_HEADER, "")
        if hmac.compare_digest(given.encode(), self.server.gateway_secret.encode()):
            return True
        self.close_connection = True  # its body, if any, is never read
        message = "the sidecar answers the gateway only: call samsvc through its REST port"
        self._send(
            403,
            to_json(status_pb2.Status(code=grpc.StatusCode.PERMISSION_DENIED.value[0], message=message)),
            "application/json",
        )
        log.warning("sidecar: refused %s %s without the gateway's secret", self.command, urlsplit(self.path).path)
        return False

    def _bounded(self, serve: Callable[[], None]) -> None:
        """Serve within the call limits: 429 at once when the sidecar (or this credential) has
        too many calls running. An unexpected error is a JSON 500, its cause in the log."""
        credential = self.headers.get("authorization") or self.headers.get("x-api-key") or ""
        with self.server.limits.hold(credential) as admitted:
            if not admitted:
                self.close_connection = True
                status = status_pb2.Status(
                    code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                    message="too many calls to the label-tool adapter are running; retry shortly",
                )
                self._send(429, to_json(status), "application/json", {"Retry-After": "1"})
                return
            try:
                serve()
            except Exception:
                log.exception("sidecar: %s %s failed", self.command, urlsplit(self.path).path)
                self.close_connection = True
                status = status_pb2.Status(
                    code=grpc.StatusCode.INTERNAL.value[0], message="internal error; the server logged the details"
                )
                self._send(500, to_json(status), "application/json")

    def do_GET(self) -> None:
        if self._from_gateway():
            self._bounded(self._get)

    def do_POST(self) -> None:
        if self._from_gateway():
            self._bounded(self._post)

    def _get(self) -> None:
        path = urlsplit(self.path).path
        studio = label_studio.route(path)
        if studio is not None and studio[1] in {"/", "/health"}:
            self._send(200, json.dumps(LabelStudioBackend.health()).encode(), "application/json")
        elif path == "/docs":
            self._send(200, docs.SWAGGER_PAGE.encode(), "text/html; charset=utf-8", docs.SECURITY_HEADERS)
        elif path == "/redoc":
            self._send(200, docs.REDOC_PAGE.encode(), "text/html; charset=utf-8", docs.SECURITY_HEADERS)
        elif path == "/openapi.json":
            self._send(200, docs.openapi_json(), "application/json", docs.SECURITY_HEADERS)
        elif path.startswith(docs.ASSETS_PREFIX) and (found := docs.asset(path[len(docs.ASSETS_PREFIX) :])):
            content, kind = found
            self._send(200, content, kind, {**docs.SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"})
        elif path in {"/", "/console", CONSOLE_PREFIX}:
            self._send_console("index.html")
        elif path.startswith(CONSOLE_PREFIX) and console_file(path[len(CONSOLE_PREFIX) :]) is not None:
            self._send_console(path[len(CONSOLE_PREFIX) :])
        else:
            self._not_found()

    def _send_console(self, name: str) -> None:
        found = console_file(name)
        if found is None:
            self._not_found()
            return
        content, kind = found
        self._send(200, content, kind, SECURITY_HEADERS)

    def _read_body(self) -> bytes | None:
        """The request body; None after answering 413 for one over the limit, or when the caller
        left before sending it all (nobody to answer)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_body_bytes:
            self.rfile.read(length)
            message = f"request body is {length} bytes; the limit is {self.server.max_body_bytes}"
            status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message)
            self._send(413, to_json(status), "application/json")
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the caller closed before sending it all: nobody to answer
            self.close_connection = True
            log.info(
                "sidecar: %s %s: the caller left after %d of %d bytes", self.command, self._route(), len(body), length
            )
            return None
        return body

    def _tool_call(self, handler: Callable[[dict[str, Any], list[tuple[str, str]]], dict[str, Any]]) -> None:
        """A label tool's JSON call: the answer as JSON, or the error as a google.rpc.Status whose
        message is also the status line's phrase (what the tools show). A task image its source
        would not give is that source's 4xx, one unreachable or failing 502: not "samsvc is down"."""
        body = self._read_body()
        if body is None:
            return
        metadata = [(h, v) for h in FORWARDED_HEADERS if (v := self.headers.get(h))]
        try:
            payload = json.loads(body or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("the body must be a JSON object")
            answer = handler(payload, metadata)
        except ValueError as exc:
            self._send_status(
                400, status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=f"body: {exc}")
            )
        except InvalidArgument as exc:
            status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=exc.message)
            status.details.add().Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN))
            self._send_status(400, status)
        except grpc.RpcError as exc:
            status = rpc_status.from_call(exc) or status_pb2.Status(
                code=exc.code().value[0], message=exc.details() or ""
            )
            self._send_status(tool_http_status(exc.code(), status), status)
        else:
            self._send(200, json.dumps(answer).encode(), "application/json")

    def _send_status(self, http_status: int, status: status_pb2.Status) -> None:
        if info_of(status).reason in SOURCE_FAILURES:
            log.warning("%s %s: %s", self.command, urlsplit(self.path).path, status.message)
        self._send(http_status, to_json(status), "application/json", reason=status.message)

    def _post(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        studio = label_studio.route(path)
        if studio is not None and studio[1] in {"/setup", "/predict"}:
            model, endpoint = studio
            backend = self.server.label_studio
            if endpoint == "/setup":
                self._tool_call(lambda body, metadata: backend.setup(body, model, metadata))
            else:
                self._tool_call(lambda body, metadata: backend.predict(body, model, metadata))
            return
        cvat_model = cvat.route(path)
        if cvat_model is not None:
            stub, timeout = self.server.stub, self.server.timeout_s
            self._tool_call(lambda body, metadata: cvat.embedding_answer(stub, body, cvat_model, metadata, timeout))
            return
        calls: dict[str, Callable[[dict[str, Any], list[tuple[str, str]]], Message]] = {
            "/api/v1/segment": self.server.segment,
            "/segment": self.server.segment,
            "/api/v1/segment/batch": self.server.submit_batch,
            "/segment/batch": self.server.submit_batch,
        }
        call = calls.get(path)
        if call is None:
            self._not_found()
            return
        body = self._read_body()
        if body is None:
            return
        metadata = [(h, v) for h in FORWARDED_HEADERS if (v := self.headers.get(h))]
        try:
            upload = parse_multipart(self.headers.get("Content-Type", ""), body)
            # Query parameters count as form fields, as they do for the transcoder's routes
            # (an unknown one is named in protobuf's error instead of being ignored).
            upload.fields.extend(parse_qsl(url.query, keep_blank_values=True))
            response = call(self.server.request_json(path, upload), metadata)
        except (ValueError, json_format.ParseError) as exc:
            status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=f"form: {exc}")
            self._send(400, to_json(status), "application/json")
            return
        except grpc.RpcError as exc:
            self._send_rpc_error(exc)
            return
        self._send(200, to_json(response), "application/json")


class SidecarServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        grpc_target: str,
        max_body_bytes: int,
        timeout_s: float,
        tools: ToolOptions | None = None,
        *,
        gateway_secret: str,
        limits: CallLimits | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.gateway_secret = gateway_secret
        self.limits = limits or CallLimits()
        tools = tools or ToolOptions()
        self.channel = grpc.insecure_channel(
            grpc_target,
            options=[
                ("grpc.max_send_message_length", max_body_bytes),
                ("grpc.max_receive_message_length", -1),
            ],
        )
        self.stub = segmentation_service_pb2_grpc.SegmentationServiceStub(self.channel)
        self.label_studio = LabelStudioBackend(
            self.stub,
            timeout_s,
            tools.max_image_bytes,
            tools.label_studio_url,
            prelabel_max_regions=tools.prelabel_max_regions,
            prelabel_points_per_side=tools.prelabel_points_per_side,
        )

    def request_json(self, path: str, upload: Upload) -> dict[str, Any]:
        if path.endswith("/batch"):
            return form_to_json(upload, pb.SubmitBatchRequest.DESCRIPTOR, "images", nested="options")
        return form_to_json(upload, pb.SegmentRequest.DESCRIPTOR, "image")

    def segment(self, body: dict[str, Any], metadata: list[tuple[str, str]]) -> Message:
        request = json_format.ParseDict(body, pb.SegmentRequest())
        response: Message = self.stub.Segment(request, timeout=self.timeout_s, metadata=metadata)
        return response

    def submit_batch(self, body: dict[str, Any], metadata: list[tuple[str, str]]) -> Message:
        request = json_format.ParseDict(body, pb.SubmitBatchRequest())
        response: Message = self.stub.SubmitBatch(request, timeout=self.timeout_s, metadata=metadata)
        return response

    def server_close(self) -> None:
        super().server_close()
        self.channel.close()


def start_sidecar(
    host: str,
    grpc_target: str,
    max_body_bytes: int,
    timeout_s: float,
    tools: ToolOptions | None = None,
    *,
    gateway_secret: str,
    limits: CallLimits | None = None,
) -> tuple[SidecarServer, int]:
    """Serve the sidecar on a free port in a background thread; returns it and its port."""
    server = SidecarServer(
        (host, 0), grpc_target, max_body_bytes, timeout_s, tools, gateway_secret=gateway_secret, limits=limits
    )
    threading.Thread(target=server.serve_forever, name="samsvc-sidecar", daemon=True).start()
    return server, int(server.server_address[1])
