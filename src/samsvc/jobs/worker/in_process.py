"""The in-process mode's workers: without REDIS_URL, batch jobs run inside the server process
on Dramatiq's stub broker, with the same actors, store calls and reconciler as Redis mode."""

from __future__ import annotations

import logging

import dramatiq

from samsvc.jobs.queues import IMAGE_QUEUES, WEBHOOK_QUEUE
from samsvc.jobs.runtime import JobRuntime
from samsvc.jobs.worker.torch_threads import TorchThreads

log = logging.getLogger(__name__)


def start_in_process_workers(runtime: JobRuntime) -> list[dramatiq.Worker]:
    """Two in-process Dramatiq workers: one for images (WORKER_THREADS) and one for webhooks
    (WEBHOOK_THREADS), so deliveries never take an image's thread."""
    threads, hooks = runtime.options.worker, runtime.options.webhooks
    poll = threads.poll_ms
    images = dramatiq.Worker(
        runtime.broker, queues=set(IMAGE_QUEUES.values()), worker_threads=threads.threads, worker_timeout=poll
    )
    webhooks = dramatiq.Worker(
        runtime.broker, queues={WEBHOOK_QUEUE}, worker_threads=hooks.threads, worker_timeout=poll
    )
    images.queue_prefetch = threads.queue_prefetch
    # Images run the engine on the server's inference lanes (JobRuntime.compute); what torch
    # work remains on these threads makes no OpenMP team of its own (samsvc.engine.threads).
    runtime.broker.add_middleware(TorchThreads(1))
    # Time limits and other boot-time middleware only arm on this signal (the CLI sends it).
    runtime.broker.emit_after("process_boot")
    for worker in (images, webhooks):
        worker.start()
    runtime.local_worker_threads = threads.threads
    log.info(
        "in-process mode: batch jobs run in this process (%d image threads, %d webhook threads, memory store)",
        threads.threads,
        hooks.threads,
    )
    return [images, webhooks]
