"""Health: the standard grpc.health.v1 service (what load balancers and Kubernetes probe) and
the detailed report behind CheckHealth (each model, the inference pool, the process)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator

import grpc
import psutil
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from samsvc.server.error_boundary import ServicerContext
from samsvc.v1 import health_pb2 as samsvc_health_pb2

#: The service names grpc.health.v1 reports on: the whole server ("") and ours.
SERVICE_NAME = "samsvc.v1.SegmentationService"
HEALTH_SERVICE_NAMES = ("", SERVICE_NAME)


class HealthService(health_pb2_grpc.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1.Health for the whole server ("") and SegmentationService, with one
    switch that CheckHealth reads too.

    Unlike a plain health servicer, Watch streams end once they have delivered NOT_SERVING at
    shutdown, so open watchers never hold a draining server past its in-flight work.
    """

    def __init__(self) -> None:
        self._serving = False
        self._closing = False
        self._changed = asyncio.Condition()

    @property
    def serving(self) -> bool:
        return self._serving

    def proto_status(self) -> int:
        return (
            samsvc_health_pb2.SERVING_STATUS_SERVING if self._serving else samsvc_health_pb2.SERVING_STATUS_NOT_SERVING
        )

    async def set_serving(self, serving: bool) -> None:
        async with self._changed:
            self._serving = serving
            self._changed.notify_all()

    async def begin_shutdown(self) -> None:
        """Report NOT_SERVING to everyone and let Watch streams end."""
        async with self._changed:
            self._serving = False
            self._closing = True
            self._changed.notify_all()

    def _status(self, service: str) -> int | None:
        if service not in HEALTH_SERVICE_NAMES:
            return None
        status: int = (
            health_pb2.HealthCheckResponse.SERVING if self._serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        return status

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        status = self._status(request.service)
        if status is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service!r}")
        return health_pb2.HealthCheckResponse(status=status)

    async def Watch(
        self, request: health_pb2.HealthCheckRequest, context: ServicerContext
    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        last: int | None = None
        while True:
            async with self._changed:
                status = self._status(request.service)
                if status is None:
                    status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
                closing = self._closing
                if status == last and not closing:
                    await self._changed.wait()
                    continue
            if status != last:
                yield health_pb2.HealthCheckResponse(status=status)
                last = status
            if closing:
                return


class ProcessProbe:
    """Resource use of this process."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        self._started = time.monotonic()

    def resources(self) -> samsvc_health_pb2.ProcessResources:
        with self._process.oneshot():
            memory = self._process.memory_info()
            cpu = self._process.cpu_times()
        gpu_bytes = 0
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            gpu_bytes = torch.cuda.memory_allocated()
        return samsvc_health_pb2.ProcessResources(
            rss_bytes=memory.rss,
            cpu_seconds=cpu.user + cpu.system,
            uptime_seconds=time.monotonic() - self._started,
            threads=threading.active_count(),
            cpu_count=len(os.sched_getaffinity(0)),
            gpu_memory_allocated_bytes=gpu_bytes,
        )
