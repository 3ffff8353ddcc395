"""The module Dramatiq's CLI imports in each worker process (`samsvc worker` runs that CLI):
it wires the runtime from the environment and makes its broker Dramatiq's global one."""

from __future__ import annotations

import dramatiq

from samsvc.config import load_settings
from samsvc.engine.loader import ModelManager
from samsvc.jobs.runtime import build_runtime

settings = load_settings()
if not settings.redis_url:
    raise SystemExit("samsvc worker needs REDIS_URL: without it, `samsvc serve` runs the jobs in-process")
runtime = build_runtime(settings, lambda: ModelManager.from_settings(settings), worker=True)
broker = runtime.broker
dramatiq.set_broker(broker)
