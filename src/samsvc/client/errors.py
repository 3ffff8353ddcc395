"""One exception type per gRPC status, raised by the client for a failed call or image.

Every error carries the status code, the message, the google.rpc.ErrorInfo reason and metadata,
the google.rpc.BadRequest field violations and the google.rpc.RetryInfo delay when the server
sent them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class ClientError(Exception):
    """A call (or one image of a batch) failed."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_s: float | None = None

    def __str__(self) -> str:
        fields = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        reason = f" [{self.reason}]" if self.reason else ""
        return f"{self.code.name}{reason}: {self.message}" + (
            f" ({fields})" if fields and fields not in self.message else ""
        )


class InvalidArgumentError(ClientError):
    """The request is malformed; `violations` name the fields."""


class NotFoundError(ClientError):
    """The job or model does not exist (or is not this key's)."""


class AlreadyExistsError(ClientError):
    pass


class PermissionDeniedError(ClientError):
    pass


class UnauthenticatedError(ClientError):
    """No valid API key was sent."""


class ResourceExhaustedError(ClientError):
    """The server is busy or the key's rate limit is reached; see `retry_after_s`."""


class FailedPreconditionError(ClientError):
    pass


class UnavailableError(ClientError):
    """The server (or its Redis) cannot be reached now; retrying later may work."""


class DeadlineExceededError(ClientError):
    pass


class CancelledError(ClientError):
    pass


class InternalError(ClientError):
    pass


class UnknownError(ClientError):
    pass


ERRORS: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.ABORTED: UnavailableError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.INTERNAL: InternalError,
    grpc.StatusCode.DATA_LOSS: InternalError,
    grpc.StatusCode.UNIMPLEMENTED: InternalError,
    grpc.StatusCode.UNKNOWN: UnknownError,
}
_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> ClientError:
    """The exception for a google.rpc.Status (a call's, or a failed image's in a job)."""
    code = _BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    error = ERRORS.get(code, UnknownError)(code=code, message=status.message)
    for packed in status.details:
        info = error_details_pb2.ErrorInfo()
        bad = error_details_pb2.BadRequest()
        retry = error_details_pb2.RetryInfo()
        if packed.Unpack(info):
            error.reason, error.metadata = info.reason, dict(info.metadata)
        elif packed.Unpack(bad):
            error.violations = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif packed.Unpack(retry):
            error.retry_after_s = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return error


def from_rpc_error(error: grpc.RpcError) -> ClientError:
    """The exception for a failed call (sync or asyncio), with the rich details the server attached."""
    code_of = getattr(error, "code", None)
    code: grpc.StatusCode = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    status = None
    if hasattr(error, "trailing_metadata"):
        try:
            status = rpc_status.from_call(error)
        except ValueError:
            status = None
    if status is not None:
        return from_status(status)
    details_of = getattr(error, "details", None)
    message = str(details_of() if callable(details_of) else error) or ""
    return from_status(status_pb2.Status(code=code.value[0] if code else code_pb2.UNKNOWN, message=message))
