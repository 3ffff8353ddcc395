"""The module Dramatiq's CLI imports in each worker process (`samsvc worker` runs that CLI):
it wires the runtime from the environment and makes its broker Dramatiq's global one."""

from __future__ import annotations

import logging
import os

import dramatiq
import torch

from samsvc.config import load_settings, worker_torch_threads
from samsvc.engine.loader import ModelManager
from samsvc.jobs.runtime import build_runtime

settings = load_settings()
if not settings.redis_url:
    raise SystemExit("samsvc worker needs REDIS_URL: without it, `samsvc serve` runs the jobs in-process")
threads = worker_torch_threads(settings, len(os.sched_getaffinity(0)))
torch.set_num_threads(threads)
logging.getLogger(__name__).info("worker process %d: %d torch threads", os.getpid(), threads)
runtime = build_runtime(settings, lambda: ModelManager.from_settings(settings), worker=True)
broker = runtime.broker
dramatiq.set_broker(broker)
