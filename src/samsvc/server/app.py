"""Building, starting and stopping the gRPC server.

`start_server` binds (port 0 picks a free port), starts, preloads models and returns a
RunningServer with the real port, so tests talk to it over a real channel. `serve` runs one
until SIGTERM or SIGINT: health turns NOT_SERVING, new calls are refused after
`drain_delay`, and in-flight calls get `shutdown_grace` seconds to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from samsvc.config import Settings
from samsvc.engine.loader import ModelManager
from samsvc.engine.registry import ModelRegistry
from samsvc.server.admission import AdmissionControl
from samsvc.server.health import SERVICE_NAME, HealthService
from samsvc.server.servicer import SegmentationServicer
from samsvc.v1 import segmentation_service_pb2, segmentation_service_pb2_grpc

log = logging.getLogger(__name__)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Message limits sized for the largest allowed request; responses may be larger."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]


def build_model_manager(settings: Settings) -> ModelManager:
    registry = ModelRegistry.from_settings(settings.model_dir, settings.models_file)
    return ModelManager(
        registry,
        device=settings.device,
        verify_checksums=settings.verify_checksums,
        auto_download=settings.auto_download,
    )


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthService
    models: ModelManager
    executor: ThreadPoolExecutor

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None, drain_delay: float = 0.0) -> None:
        """Report NOT_SERVING, wait `drain_delay`, then stop with `grace` seconds for in-flight calls."""
        await self.health.begin_shutdown()
        if drain_delay > 0:
            await asyncio.sleep(drain_delay)
        await self.server.stop(grace)
        self.executor.shutdown(wait=False, cancel_futures=True)


async def start_server(settings: Settings, models: ModelManager | None = None) -> RunningServer:
    models = models or build_model_manager(settings)
    server = grpc.aio.server(options=server_options(settings))
    health = HealthService()
    executor = ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix="samsvc-inference")
    admission = AdmissionControl(settings.max_workers, settings.max_queue)
    servicer = SegmentationServicer(settings, models, admission, executor, health)
    segmentation_service_pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    running = RunningServer(server=server, port=port, health=health, models=models, executor=executor)
    if settings.preload:
        log.info("preloading models: %s", ", ".join(settings.preload))
        await asyncio.get_running_loop().run_in_executor(executor, models.preload, settings.preload)
    await health.set_serving(True)
    log.info("serving %s on %s:%d", SERVICE_NAME, settings.grpc_host, port)
    return running


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"samsvc: gRPC on {settings.grpc_host}:{running.port} (grpcurl -plaintext 127.0.0.1:{running.port} list)",
        flush=True,
    )
    await stop.wait()
    log.info("shutting down: draining for %.1f s, then %.1f s grace", settings.drain_delay, settings.shutdown_grace)
    await running.stop(settings.shutdown_grace, settings.drain_delay)
    log.info("stopped")
