"""Domain errors as gRPC statuses: each SamsvcError kind maps to a status code, and the status
carries a google.rpc.ErrorInfo (reason, domain "samsvc", metadata) and, where it applies, a
BadRequest with field violations or a RetryInfo. Used by the error boundary
(samsvc.server.error_boundary), the authentication interceptor and the job results (a failed
image's recorded error, rebuilt by name)."""

from __future__ import annotations

import math
from typing import Any

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from samsvc.errors import (
    ERROR_DOMAIN,
    Cancelled,
    ConfigurationError,
    DeadlineExceeded,
    DownloadError,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SamsvcError,
    Unauthenticated,
    Unavailable,
)

#: Domain error kind -> gRPC status code (google.rpc.Code numbers equal grpc.StatusCode values).
STATUS_CODES: dict[type[SamsvcError], int] = {
    InvalidArgument: code_pb2.INVALID_ARGUMENT,
    NotFound: code_pb2.NOT_FOUND,
    FailedPrecondition: code_pb2.FAILED_PRECONDITION,
    ResourceExhausted: code_pb2.RESOURCE_EXHAUSTED,
    Unavailable: code_pb2.UNAVAILABLE,
    Cancelled: code_pb2.CANCELLED,
    DeadlineExceeded: code_pb2.DEADLINE_EXCEEDED,
    Internal: code_pb2.INTERNAL,
    ConfigurationError: code_pb2.FAILED_PRECONDITION,
    DownloadError: code_pb2.UNAVAILABLE,
    Unauthenticated: code_pb2.UNAUTHENTICATED,
    PermissionDenied: code_pb2.PERMISSION_DENIED,
}


def status_code_for(error: SamsvcError) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS_CODES:
            code: int = STATUS_CODES[kind]
            return code
    fallback: int = code_pb2.INTERNAL
    return fallback


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: SamsvcError) -> status_pb2.Status:
    """google.rpc.Status for a domain error, details included."""
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=error.metadata))]
    if isinstance(error, InvalidArgument) and error.violations:
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
                        for v in error.violations
                    ]
                )
            )
        )
    if isinstance(error, ResourceExhausted):
        seconds = max(error.retry_after, 0.0)
        whole = math.floor(seconds)
        delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=status_code_for(error), message=error.message, details=details)


def internal_status() -> status_pb2.Status:
    return to_status(Internal("internal error; the server logged the details", reason="INTERNAL"))


def error_by_kind(kind: str, message: str, reason: str, violations: list[FieldViolation]) -> SamsvcError:
    """Rebuild a domain error recorded by name (a failed image kept in the job store)."""
    cls = next((c for c in STATUS_CODES if c.__name__ == kind), Internal)
    if cls is InvalidArgument:
        return InvalidArgument(message, violations=violations, reason=reason)
    return cls(message, reason=reason)
