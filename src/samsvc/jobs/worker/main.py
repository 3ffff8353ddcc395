"""The module Dramatiq's CLI imports in each worker process (`samsvc worker` runs that CLI):
it wires the runtime from the environment, makes its broker Dramatiq's global one, and runs
the process's reconciler while the worker runs.

The image processes set torch's threads and load models when their first image asks; the
webhook process (SAMSVC_WORKER_ROLE=webhooks) imports nothing of the engine: it delivers
webhooks and reconciles, and stays a small process."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import dramatiq

from samsvc.config import load_settings, worker_torch_threads
from samsvc.jobs.recovery.reconciler import Reconciler, build_reconciler
from samsvc.jobs.wiring import build_runtime
from samsvc.jobs.worker.supervisor import WORKER_ROLE_ENV

if TYPE_CHECKING:
    from samsvc.engine.loader import ModelManager

settings = load_settings()
if not settings.redis_url:
    raise SystemExit("samsvc worker needs REDIS_URL: without it, `samsvc serve` runs the jobs in-process")
# The webhook process runs no images: it does not announce itself to the image estimates.
images = os.environ.get(WORKER_ROLE_ENV, "images") != "webhooks"


def _models() -> ModelManager:
    from samsvc.engine.loader import ModelManager

    return ModelManager.from_options(settings.model_options())


runtime = build_runtime(settings.job_options(), _models, worker=images)
broker = runtime.broker


class _Reconciling(dramatiq.Middleware):
    """Runs the reconciler (and stops the lease renewals) with the worker."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def after_worker_boot(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.reconciler.start()

    def before_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.reconciler.stop()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        runtime.leases.stop()


broker.add_middleware(_Reconciling(build_reconciler(runtime)))
if images:
    import samsvc.engine.loader  # noqa: F401 (the engine's modules load at boot, not with the first image)
    from samsvc.engine.threads import cpu_count, use_torch_threads
    from samsvc.jobs.worker.torch_threads import TorchThreads

    threads = worker_torch_threads(settings, cpu_count())
    use_torch_threads(threads)
    logging.getLogger(__name__).info("worker process %d: %d torch threads per worker thread", os.getpid(), threads)
    broker.add_middleware(TorchThreads(threads))
dramatiq.set_broker(broker)
