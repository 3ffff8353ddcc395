"""Health: the standard grpc.health.v1 service (what load balancers and Kubernetes probe) and
the detailed report behind CheckHealth (each model, the inference pool, the process)."""

from __future__ import annotations

import os
import threading
import time

import psutil
import torch
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from samsvc.v1 import health_pb2 as samsvc_health_pb2

#: The service names grpc.health.v1 reports on: the whole server ("") and ours.
SERVICE_NAME = "samsvc.v1.SegmentationService"
HEALTH_SERVICE_NAMES = ("", SERVICE_NAME)


class ServingState:
    """One switch for both health views: grpc.health.v1 and CheckHealth."""

    def __init__(self, standard: HealthServicer) -> None:
        self.standard = standard
        self._serving = False

    @property
    def serving(self) -> bool:
        return self._serving

    async def set_serving(self, serving: bool) -> None:
        self._serving = serving
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in HEALTH_SERVICE_NAMES:
            await self.standard.set(name, status)

    def proto_status(self) -> int:
        return samsvc_health_pb2.SERVING_STATUS_SERVING if self._serving else samsvc_health_pb2.SERVING_STATUS_NOT_SERVING


class ProcessProbe:
    """Resource use of this process."""

    def __init__(self) -> None:
        self._process = psutil.Process(os.getpid())
        self._started = time.monotonic()

    def resources(self) -> samsvc_health_pb2.ProcessResources:
        with self._process.oneshot():
            memory = self._process.memory_info()
            cpu = self._process.cpu_times()
        gpu_bytes = torch.cuda.memory_allocated() if torch.cuda.is_available() and torch.cuda.is_initialized() else 0
        return samsvc_health_pb2.ProcessResources(
            rss_bytes=memory.rss,
            cpu_seconds=cpu.user + cpu.system,
            uptime_seconds=time.monotonic() - self._started,
            threads=threading.active_count(),
            cpu_count=len(os.sched_getaffinity(0)),
            gpu_memory_allocated_bytes=gpu_bytes,
        )
