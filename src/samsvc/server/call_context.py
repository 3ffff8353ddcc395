"""What every call leaves behind, apart from its answer: its correlation id (the caller's
`x-request-id`, which Envoy sets, or a new one) adopted for its logs, jobs and webhooks and sent
back in the response headers; and one count, one duration and one log line per call, by its
final status code (samsvc.infra.metrics). The error boundary wraps each servicer method in them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any, TypeAlias

from google.rpc import code_pb2

from samsvc.errors import SamsvcError
from samsvc.infra import metrics
from samsvc.infra.logs import REQUEST_ID, new_request_id
from samsvc.server.statuses import status_code_for

log = logging.getLogger(__name__)

#: grpc ships no type information: its servicer context is typed as Any.
ServicerContext: TypeAlias = Any


class Observation:
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
def observed(rpc: str) -> Iterator[Observation]:
    """Count the call by its final status code and time it (failures are counted by the boundary's `_fail`,
    before their status is sent)."""
    observation = Observation(rpc)
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


REQUEST_ID_HEADER = "x-request-id"


def request_id(context: ServicerContext) -> str:
    """The caller's correlation id (`x-request-id` metadata, which Envoy sets), or ""."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER:
            return str(value)[:128]
    return ""


def adopt_request_id(context: ServicerContext) -> str:
    """Adopt the caller's correlation id (or make one) for this call's logs, jobs and webhooks."""
    rid = request_id(context) or new_request_id()
    REQUEST_ID.set(rid)
    return rid


async def echo_request_id(context: ServicerContext) -> None:
    """Adopt the caller's correlation id and send it back in the response headers."""
    await context.send_initial_metadata(((REQUEST_ID_HEADER, adopt_request_id(context)),))


async def send_headers(context: ServicerContext, headers: Sequence[tuple[str, str]]) -> None:
    """The response headers of a `headers_boundary` method: the correlation id and `headers`
    (through the gateway they become HTTP response headers). Call it once, before answering."""
    await context.send_initial_metadata(((REQUEST_ID_HEADER, REQUEST_ID.get()), *headers))
