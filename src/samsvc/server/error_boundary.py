"""The one place domain errors become gRPC statuses (samsvc.server.statuses says which).

Servicer methods opt in with `@unary_boundary` (or `headers_boundary`, `stream_boundary`): each
call adopts its correlation id and is counted and timed (samsvc.server.call_context), and every
exception leaves as a proper status. Unexpected exceptions are logged with their stack trace and
reported as INTERNAL without internals.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import NoReturn, TypeVar

from google.rpc import code_pb2
from grpc_status import rpc_status

from samsvc.errors import SamsvcError
from samsvc.server.call_context import (
    Observation,
    ServicerContext,
    adopt_request_id,
    echo_request_id,
    observed,
    send_headers,
)
from samsvc.server.statuses import internal_status, to_status

__all__ = ["ServicerContext", "headers_boundary", "send_headers", "stream_boundary", "unary_boundary"]

log = logging.getLogger(__name__)

_Servicer = TypeVar("_Servicer")
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
Handler = Callable[[_Servicer, _Request, ServicerContext], Awaitable[_Response]]


async def _fail(context: ServicerContext, observation: Observation, error: Exception) -> NoReturn:
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
            adopt_request_id(context)
        with observed(method.__name__) as observation:
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
        with observed(method.__name__) as observation:
            try:
                async for item in method(self, request, context):
                    yield item
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 (the boundary: every exception becomes a status)
                await _fail(context, observation, exc)

    return wrapper
