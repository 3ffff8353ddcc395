"""The one place domain errors become gRPC statuses.

Each SamsvcError kind maps to a status code; the status carries a google.rpc.ErrorInfo
(reason, domain "samsvc", metadata) and, where it applies, a BadRequest with field
violations or a RetryInfo. Unexpected exceptions are logged with their stack trace and
reported as INTERNAL without internals. Servicer methods opt in with `@unary_boundary`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, NoReturn, TypeAlias, TypeVar

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

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
from samsvc.infra import metrics
from samsvc.infra.logs import REQUEST_ID, new_request_id

log = logging.getLogger(__name__)

#: grpc ships no type information: its servicer context is typed as Any.
ServicerContext: TypeAlias = Any

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


_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
Handler = Callable[[_Servicer, _Request, ServicerContext], Awaitable[_Response]]


class _Observation:
    """One call, counted once by its final status code and timed: before its status reaches the
    caller, so that whoever scrapes the metrics after an answer finds it counted."""

    def __init__(self, rpc: str) -> None:
        self.rpc = rpc
        self.started = time.perf_counter()
        self.counted = False

    def finish(self, code: str) -> None:
        if self.counted:
            return
        self.counted = True
        elapsed = time.perf_counter() - self.started
        metrics.REQUESTS.labels(self.rpc, code).inc()
        metrics.REQUEST_SECONDS.labels(self.rpc).observe(elapsed)
        log.info(
            "rpc %s %s in %.3f s", self.rpc, code, elapsed, extra={"rpc": self.rpc, "code": code, "seconds": elapsed}
        )


@contextlib.contextmanager
def _observed(rpc: str) -> Iterator[_Observation]:
    """Count the call by its final status code and time it (failures are counted by `_fail`,
    before their status is sent)."""
    observation = _Observation(rpc)
    try:
        yield observation
    except asyncio.CancelledError:
        observation.finish("CANCELLED")
        raise
    except SamsvcError as exc:
        observation.finish(code_pb2.Code.Name(status_code_for(exc)))
        raise
    except Exception:
        observation.finish("INTERNAL")
        raise
    observation.finish("OK")


async def _fail(context: ServicerContext, observation: _Observation, error: Exception) -> NoReturn:
    """End the call with the status for `error`: its own for domain errors, INTERNAL (with the
    stack trace in the log only) for anything else."""
    method = observation.rpc
    if isinstance(error, SamsvcError):
        log.info("%s failed: %s %s", method, error.reason, error.for_log())
        status = to_status(error)
    else:
        log.error("%s failed with an unexpected error", method, exc_info=error)
        status = internal_status()
    observation.finish(code_pb2.Code.Name(status.code))
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover


REQUEST_ID_HEADER = "x-request-id"


def request_id(context: ServicerContext) -> str:
    """The caller's correlation id (`x-request-id` metadata, which Envoy sets), or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            return str(value)[:128]
    return ""


def _adopt_request_id(context: ServicerContext) -> str:
    """Adopt the caller's correlation id (or make one) for this call's logs, jobs and webhooks."""
    rid = request_id(context) or new_request_id()
    REQUEST_ID.set(rid)
    return rid


async def echo_request_id(context: ServicerContext) -> None:
    """Adopt the caller's correlation id and send it back in the response headers."""
    await context.send_initial_metadata(((REQUEST_ID_HEADER, _adopt_request_id(context)),))


async def send_headers(context: ServicerContext, headers: Sequence[tuple[str, str]]) -> None:
    """The response headers of a `headers_boundary` method: the correlation id and `headers`
    (through the gateway they become HTTP response headers). Call it once, before answering."""
    await context.send_initial_metadata(((REQUEST_ID_HEADER, REQUEST_ID.get()), *headers))


def unary_boundary(method: Handler[_Servicer, _Request, _Response]) -> Handler[_Servicer, _Request, _Response]:
    """Wrap a unary servicer method so every exception leaves as a proper gRPC status."""
    return _unary(method, echo=True)


def headers_boundary(method: Handler[_Servicer, _Request, _Response]) -> Handler[_Servicer, _Request, _Response]:
    """`unary_boundary` for a method that sends response headers of its own (`send_headers`)."""
    return _unary(method, echo=False)


def _unary(method: Handler[_Servicer, _Request, _Response], echo: bool) -> Handler[_Servicer, _Request, _Response]:
    @functools.wraps(method)
    async def wrapper(self: _Servicer, request: _Request, context: ServicerContext) -> _Response:
        if echo:
            await echo_request_id(context)
        else:
            _adopt_request_id(context)
        with _observed(method.__name__) as observation:
            try:
                return await method(self, request, context)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the boundary: every exception becomes a status)
                await _fail(context, observation, exc)

    return wrapper


_StreamHandler = Callable[[_Servicer, _Request, ServicerContext], AsyncIterator[_Response]]


def stream_boundary(
    method: _StreamHandler[_Servicer, _Request, _Response],
) -> _StreamHandler[_Servicer, _Request, _Response]:
    """Like `unary_boundary`, for server-streaming methods written as async generators."""

    @functools.wraps(method)
    async def wrapper(self: _Servicer, request: _Request, context: ServicerContext) -> AsyncIterator[_Response]:
        await echo_request_id(context)
        with _observed(method.__name__) as observation:
            try:
                async for item in method(self, request, context):
                    yield item
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the boundary: every exception becomes a status)
                await _fail(context, observation, exc)

    return wrapper


def error_by_kind(kind: str, message: str, reason: str, violations: list[FieldViolation]) -> SamsvcError:
    """Rebuild a domain error recorded by name (a failed image kept in the job store)."""
    cls = next((c for c in STATUS_CODES if c.__name__ == kind), Internal)
    if cls is InvalidArgument:
        return InvalidArgument(message, violations=violations, reason=reason)
    return cls(message, reason=reason)
