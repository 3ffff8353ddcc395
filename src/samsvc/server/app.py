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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import grpc
from envoy.service.auth.v3 import external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from samsvc.config import Settings, server_torch_threads
from samsvc.engine.costs import probe_costs
from samsvc.engine.loader import ModelManager
from samsvc.engine.sam.decoder_export import DecoderExports
from samsvc.engine.threads import ComputeLanes, cpu_count, use_torch_threads
from samsvc.infra import metrics
from samsvc.infra.metrics import serve_metrics
from samsvc.jobs.service import JobService
from samsvc.server.admin_servicer import AdminServicer
from samsvc.server.admission import AdmissionControl
from samsvc.server.auth import Authenticator, AuthInterceptor, check_exposure
from samsvc.server.backends import build_caches, build_rate_limiter, build_sessions
from samsvc.server.calls import Calls
from samsvc.server.gateway_auth import GatewayAuthServicer
from samsvc.server.health import SERVICE_NAME, HealthService
from samsvc.server.servicer import SegmentationServicer
from samsvc.v1 import admin_service_pb2, admin_service_pb2_grpc, segmentation_service_pb2, segmentation_service_pb2_grpc

log = logging.getLogger(__name__)


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """Message limits sized for the largest allowed request; responses may be larger."""
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),
    ]


#: Threads for blocking store I/O (short calls: job streams wait for events without one).
DEFAULT_IO_THREADS = 64
#: Seconds between sweeps of the blob store for images of expired jobs.
DEFAULT_SWEEP_INTERVAL_S = 600.0


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: HealthService
    models: ModelManager
    executor: ComputeLanes
    io_executor: ThreadPoolExecutor
    jobs: JobService
    sweeper: asyncio.Task[None]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self, grace: float | None, drain_delay: float = 0.0) -> None:
        """Report NOT_SERVING, wait `drain_delay`, then stop with `grace` seconds for in-flight calls."""
        await self.health.begin_shutdown()
        if drain_delay > 0:
            await asyncio.sleep(drain_delay)
        await self.server.stop(grace)
        await self.jobs.close_feed()
        self.sweeper.cancel()
        await asyncio.get_running_loop().run_in_executor(None, self.jobs.stop, int((grace or 0) * 1000))
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.io_executor.shutdown(wait=False, cancel_futures=True)


async def start_server(settings: Settings, models: ModelManager | None = None) -> RunningServer:
    models = models or ModelManager.from_options(settings.model_options())
    models.audit()  # a checkpoint of the wrong size is named in the log before anyone asks
    auth = settings.auth_options()
    authenticator = Authenticator.from_options(auth)
    check_exposure(auth, authenticator, exposed_hosts(settings))
    server = grpc.aio.server(options=server_options(settings), interceptors=[AuthInterceptor(authenticator)])
    health = HealthService()
    # Torch runs wide on the first inference lane only (samsvc.engine.threads): the event loop's
    # thread and the I/O pool (model loading, embedding bytes) make no OpenMP team of their own.
    use_torch_threads(1)
    # In-process batch images run on the lanes too, each worker thread with a lane of its own.
    lanes = settings.max_workers + (0 if settings.redis_url else settings.worker_threads)
    executor = ComputeLanes(lanes, server_torch_threads(settings, cpu_count()))
    io_executor = ThreadPoolExecutor(
        max_workers=DEFAULT_IO_THREADS, thread_name_prefix="samsvc-io", initializer=use_torch_threads, initargs=(1,)
    )
    admission = AdmissionControl(settings.max_workers, settings.max_queue)
    shared_models = models
    jobs = JobService.start(settings.job_options(), lambda: shared_models, executor)
    result_cache, embedding_cache = build_caches(settings)
    calls = Calls(
        authenticator,
        build_rate_limiter(settings),
        io_executor,
        executor,
        admission,
        settings.max_inferences_per_key,
    )
    decoders = DecoderExports(settings.decoder_dir or settings.model_dir / "onnx")
    sessions = build_sessions(settings, models)
    servicer = SegmentationServicer(
        settings.service_options(), models, health, jobs, calls, decoders, result_cache, embedding_cache, sessions
    )
    segmentation_service_pb2_grpc.add_SegmentationServiceServicer_to_server(servicer, server)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(AdminServicer(servicer, models), server)
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(GatewayAuthServicer(authenticator), server)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection(
        (
            segmentation_service_pb2.DESCRIPTOR.services_by_name["SegmentationService"].full_name,
            admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ),
        server,
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"cannot bind {settings.grpc_host}:{settings.grpc_port}")
    await server.start()
    metrics.CALLBACKS.queue_depth = jobs.queue_depths
    sweeper = asyncio.create_task(_sweep_images(jobs, io_executor), name="samsvc-blob-sweeper")
    running = RunningServer(
        server=server,
        port=port,
        health=health,
        models=models,
        executor=executor,
        io_executor=io_executor,
        jobs=jobs,
        sweeper=sweeper,
    )
    if settings.preload:
        log.info("preloading models: %s", ", ".join(settings.preload))
        loaded = await asyncio.get_running_loop().run_in_executor(executor, models.preload, settings.preload)
        if settings.model_cost_probe:
            fast = settings.amg_engine == "fast"
            await asyncio.get_running_loop().run_in_executor(executor, probe_costs, models, loaded, fast)
    await health.set_serving(True)
    log.info("serving %s on %s:%d", SERVICE_NAME, settings.grpc_host, port)
    return running


def exposed_hosts(settings: Settings) -> list[str]:
    """Addresses this process serves callers on: gRPC, and Envoy's listeners when it runs the gateway."""
    hosts = [settings.grpc_host]
    if settings.gateway:
        hosts.append(settings.rest_host)
    return hosts


async def _sweep_images(jobs: JobService, io_executor: ThreadPoolExecutor) -> None:
    """Remove stored images of jobs older than the retention time, every DEFAULT_SWEEP_INTERVAL_S."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(DEFAULT_SWEEP_INTERVAL_S)
        removed = await loop.run_in_executor(io_executor, jobs.sweep_images)
        if removed:
            log.info("removed the stored images of %d expired jobs", removed)


class Companion(Protocol):
    """Something started next to the gRPC server and stopped before it (the gateway)."""

    def stop(self) -> None: ...


async def serve(
    settings: Settings,
    companion: Callable[[RunningServer], Companion] | None = None,
    banner: Callable[[RunningServer, Companion | None], str] | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully (the companion first)."""
    running = await start_server(settings)
    loop = asyncio.get_running_loop()
    extra: Companion | None = None
    try:
        if companion is not None:
            extra = await loop.run_in_executor(None, companion, running)
    except BaseException:
        await running.stop(0)
        raise
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_port = serve_metrics(settings.metrics_host, settings.metrics_port) if settings.metrics_port >= 0 else None
    default = f"samsvc: gRPC on {settings.grpc_host}:{running.port} (grpcurl -plaintext 127.0.0.1:{running.port} list)"
    print(banner(running, extra) if banner else default, flush=True)
    if metrics_port is not None:
        print(f"samsvc: Prometheus metrics on http://{settings.metrics_host}:{metrics_port}/metrics", flush=True)
    await stop.wait()
    log.info("shutting down: draining for %.1f s, then %.1f s grace", settings.drain_delay, settings.shutdown_grace)
    if extra is not None:
        await loop.run_in_executor(None, extra.stop)
    await running.stop(settings.shutdown_grace, settings.drain_delay)
    log.info("stopped")
