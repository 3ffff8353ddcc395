"""gRPC errors as HTTP answers: the status the transcoder would give (so the sidecar's routes
answer like the transcoded ones), and the label tools' own mapping (a task image its source would
not give is that source's 4xx or 502, not "samsvc is down"), with the message as the status line's
phrase: the one text of a failed call Label Studio shows its user."""

from __future__ import annotations

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

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
#: Reasons of a task image its source would not give (samsvc.infra.outbound_http).
SOURCE_FAILURES = ("SOURCE_REFUSED", "FETCH_FAILED")
#: Longest status-line phrase sent.
MAX_PHRASE_CHARS = 300


def phrase(text: str) -> str:
    """`text` as a status line's phrase: one line of printable Latin-1, bounded."""
    flat = " ".join(text.split())
    return "".join(c if " " <= c <= "~" or "\xa0" <= c <= "\xff" else "?" for c in flat)[:MAX_PHRASE_CHARS]


def info_of(status: status_pb2.Status) -> error_details_pb2.ErrorInfo:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    return error_details_pb2.ErrorInfo()


def tool_http_status(code: grpc.StatusCode, status: status_pb2.Status) -> int:
    """The HTTP status of a failed call as a label tool gets it: a source's refusal is that
    source's 4xx, a source unreachable or failing is 502, anything else as the transcoder maps it."""
    info = info_of(status)
    if info.reason == "SOURCE_REFUSED" and info.metadata.get("source_status", "").isdigit():
        return int(info.metadata["source_status"])
    if info.reason == "FETCH_FAILED":
        return 502
    return HTTP_STATUS.get(code, 500)


def to_json(message: Message) -> bytes:
    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=None
    ).encode()


def error_body(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> bytes:
    if status is None:
        status = status_pb2.Status(code=code.value[0], message=message)
    return to_json(status)
