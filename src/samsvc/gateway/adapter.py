"""The small HTTP service behind Envoy for what its transcoder cannot do: the seed's
multipart/form-data uploads, the documentation pages, and other tools' protocols (Label
Studio's ML backend, samsvc.gateway.label_studio; CVAT's SAM function, samsvc.gateway.cvat).

A multipart request (its form fields, and its query parameters as further fields) becomes the
same JSON the transcoder would have received, is parsed into the protobuf request by
protobuf's own JSON mapping, and is sent to the gRPC service; the answer (or the gRPC error)
is written back as the transcoder would have written it. The adapter judges nothing itself:
every check happens in the gRPC service.
"""

from __future__ import annotations

import base64
import http.server
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from python_multipart.multipart import MultipartParser, parse_options_header

from samsvc.errors import ERROR_DOMAIN, InvalidArgument, Unavailable
from samsvc.gateway import cvat, docs, label_studio
from samsvc.gateway.console_assets import CONSOLE_PREFIX, SECURITY_HEADERS, console_file
from samsvc.gateway.label_studio import LabelStudioBackend
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc

log = logging.getLogger(__name__)

#: gRPC status -> HTTP status, as Envoy's transcoder maps them.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
#: Request headers passed on to the gRPC service as metadata.
FORWARDED_HEADERS = ("x-request-id", "authorization", "x-api-key")
_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


@dataclass(frozen=True)
class ToolSettings:
    """What the label-tool adapters need: where Label Studio serves task images (and its token),
    hosts image fetches may reach although not public, and the largest image."""

    label_studio_url: str = ""
    label_studio_api_key: str = ""
    allowed_hosts: tuple[str, ...] = ()
    max_image_bytes: int = 10 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    """One multipart form: text fields (a name may repeat) and files."""

    fields: list[tuple[str, str]]
    files: list[tuple[str, bytes]]


def parse_multipart(content_type: str, body: bytes) -> Upload:
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise ValueError("multipart/form-data without a boundary")
    fields: list[tuple[str, str]] = []
    files: list[tuple[str, bytes]] = []
    state: dict[str, Any] = {}

    def on_part_begin() -> None:
        state.update(headers={}, data=bytearray(), header_name=b"", header_value=b"")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header_name"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["header_value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["header_name"].lower()] = state["header_value"]
        state["header_name"], state["header_value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        state["data"] += data[start:end]

    def on_part_end() -> None:
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in disposition:
            files.append((name, bytes(state["data"])))
        else:
            fields.append((name, state["data"].decode("utf-8", "replace")))

    parser = MultipartParser(
        boundary,
        callbacks={
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return Upload(fields, files)


def _json_value(field: FieldDescriptor, text: str) -> Any:
    """A form string as the JSON value protobuf's JSON mapping expects for `field`."""
    if field.type == FieldDescriptor.TYPE_BOOL and text.lower() in _TRUE | _FALSE:
        return text.lower() in _TRUE
    return text


def form_to_json(upload: Upload, descriptor: Descriptor, file_field: str, nested: str = "") -> dict[str, Any]:
    """The JSON body the transcoder would take, from a form: files (base64) under `file_field`,
    other fields by name; names unknown to the request go to the `nested` message (options)."""
    body: dict[str, Any] = {}
    target = descriptor.fields_by_name[file_field]
    encoded = [base64.b64encode(data).decode("ascii") for name, data in upload.files if name == file_field]
    if encoded:
        body[file_field] = encoded if target.is_repeated else encoded[0]
    nested_descriptor = descriptor.fields_by_name[nested].message_type if nested else None
    for name, text in upload.fields:
        if name in descriptor.fields_by_name:
            body[name] = _json_value(descriptor.fields_by_name[name], text)
        elif nested_descriptor is not None and name in nested_descriptor.fields_by_name:
            body.setdefault(nested, {})[name] = _json_value(nested_descriptor.fields_by_name[name], text)
        else:
            body[name] = text  # protobuf's parser names the unknown field in its error
    return body


def _to_json(message: Message) -> bytes:
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
    ).encode()


def _error_body(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> bytes:
    if status is None:
        status = status_pb2.Status(code=code.value[0], message=message)
    return _to_json(status)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: AdapterServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("adapter: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_rpc_error(self, error: grpc.RpcError) -> None:
        """The gRPC service's error as the transcoder would have written it."""
        code = error.code()
        body = _error_body(code, error.details() or "", rpc_status.from_call(error))
        self._send(HTTP_STATUS.get(code, 500), body, "application/json")

    def _not_found(self) -> None:
        status = status_pb2.Status(code=grpc.StatusCode.NOT_FOUND.value[0], message=f"no route {self.path}")
        self._send(404, _to_json(status), "application/json")

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        studio = label_studio.route(path)
        if studio is not None and studio[1] in {"/", "/health"}:
            self._send(200, json.dumps(LabelStudioBackend.health()).encode(), "application/json")
        elif path == "/docs":
            self._send(200, docs.SWAGGER_PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/redoc":
            self._send(200, docs.REDOC_PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/openapi.json":
            self._send(200, docs.openapi_json(), "application/json")
        elif path.startswith(docs.ASSETS_PREFIX) and (found := docs.asset(path[len(docs.ASSETS_PREFIX) :])):
            content, kind = found
            self._send(200, content, kind, {"Cache-Control": "public, max-age=86400"})
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
        """The request body, or None after answering 413 for one over the limit."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.server.max_body_bytes:
            self.rfile.read(length)
            message = f"request body is {length} bytes; the limit is {self.server.max_body_bytes}"
            status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message)
            self._send(413, _to_json(status), "application/json")
            return None
        return self.rfile.read(length)

    def _tool_call(self, handler: Callable[[dict[str, Any], list[tuple[str, str]]], dict[str, Any]]) -> None:
        """A label tool's JSON call: the answer as JSON, or the error as a google.rpc.Status."""
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
            status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=f"body: {exc}")
            self._send(400, _to_json(status), "application/json")
        except (InvalidArgument, Unavailable) as exc:
            code = grpc.StatusCode.INVALID_ARGUMENT if isinstance(exc, InvalidArgument) else grpc.StatusCode.UNAVAILABLE
            status = status_pb2.Status(code=code.value[0], message=exc.message)
            info = error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN)
            status.details.add().Pack(info)
            self._send(HTTP_STATUS[code], _to_json(status), "application/json")
        except grpc.RpcError as exc:
            self._send_rpc_error(exc)
        else:
            self._send(200, json.dumps(answer).encode(), "application/json")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        studio = label_studio.route(path)
        if studio is not None and studio[1] in {"/setup", "/predict"}:
            model, endpoint = studio
            backend = self.server.label_studio
            if endpoint == "/setup":
                self._tool_call(lambda body, _: backend.setup(body, model))
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
            self._send(400, _to_json(status), "application/json")
            return
        except grpc.RpcError as exc:
            self._send_rpc_error(exc)
            return
        self._send(200, _to_json(response), "application/json")


class AdapterServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        grpc_target: str,
        max_body_bytes: int,
        timeout_s: float,
        tools: ToolSettings | None = None,
    ) -> None:
        super().__init__(address, _Handler)
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        tools = tools or ToolSettings()
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
            tools.label_studio_api_key,
            tools.allowed_hosts,
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


def start_adapter(
    host: str, grpc_target: str, max_body_bytes: int, timeout_s: float, tools: ToolSettings | None = None
) -> tuple[AdapterServer, int]:
    """Serve the adapter on a free port in a background thread; returns it and its port."""
    server = AdapterServer((host, 0), grpc_target, max_body_bytes, timeout_s, tools)
    threading.Thread(target=server.serve_forever, name="samsvc-adapter", daemon=True).start()
    return server, int(server.server_address[1])
