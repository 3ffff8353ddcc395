"""Prometheus metrics of `samsvc worker`.

Dramatiq runs several worker processes, so each process writes its samples (images by outcome,
per-image seconds, model load time, jobs ended) to files in PROMETHEUS_MULTIPROC_DIR, which the
CLI points at a fresh directory before any process starts (prometheus_client's multiprocess
mode). One Dramatiq fork process (`serve`) sums them on METRICS_HOST:WORKER_METRICS_PORT, with the queue
depth per priority (what an autoscaler watches) and the worker processes' CPU and memory.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from samsvc.config import load_settings
from samsvc.infra.redis_connection import connect
from samsvc.jobs.queues import BROKER_NAMESPACE, IMAGE_QUEUES

log = logging.getLogger(__name__)

#: The environment variable prometheus_client reads at import to switch to multiprocess mode.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_directory() -> Path:
    """A fresh, empty directory for this worker run's sample files."""
    return Path(tempfile.mkdtemp(prefix="samsvc-worker-metrics-"))


class WorkerCollector(Collector):
    """Queue depth from Redis and the sibling worker processes' resources, read at scrape time."""

    def __init__(self, redis_url: str) -> None:
        self.client = connect(redis_url)
        self.parent = psutil.Process(os.getppid())

    def _workers(self) -> list[psutil.Process]:
        me = os.getpid()
        try:
            return [child for child in self.parent.children() if child.pid != me]
        except psutil.NoSuchProcess:
            return []

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        depth = GaugeMetricFamily(
            "samsvc_queue_depth", "Images waiting in the queue, by priority.", labels=["priority"]
        )
        try:
            for priority, queue in IMAGE_QUEUES.items():
                depth.add_metric([priority.value], int(self.client.llen(f"{BROKER_NAMESPACE}:{queue}")))
        except Exception as exc:  # noqa: BLE001 (a scrape must not fail because Redis is away)
            log.warning("queue depth unavailable for metrics: %s", exc)
        yield depth
        workers = self._workers()
        count = GaugeMetricFamily("samsvc_worker_processes", "Worker processes of this `samsvc worker`.")
        count.add_metric([], len(workers))
        yield count
        cpu = CounterMetricFamily("samsvc_worker_cpu_seconds", "CPU seconds of each worker process.", labels=["pid"])
        memory = GaugeMetricFamily(
            "samsvc_worker_resident_memory_bytes", "Resident memory of each worker process.", labels=["pid"]
        )
        for worker in workers:
            try:
                times = worker.cpu_times()
                rss = worker.memory_info().rss
            except psutil.NoSuchProcess:
                continue
            cpu.add_metric([str(worker.pid)], times.user + times.system)
            memory.add_metric([str(worker.pid)], rss)
        yield cpu
        yield memory


def registry(redis_url: str, directory: str) -> CollectorRegistry:
    collected = CollectorRegistry()
    MultiProcessCollector(collected, path=directory)  # type: ignore[no-untyped-call]
    collected.register(WorkerCollector(redis_url))
    return collected


def serve() -> None:
    """Dramatiq fork function: serve the workers' metrics until Dramatiq stops this process."""
    settings = load_settings()
    directory = os.environ[MULTIPROC_ENV]
    if not settings.redis_url:
        raise SystemExit("samsvc worker needs REDIS_URL")
    server, _thread = start_http_server(
        settings.worker_metrics_port, addr=settings.metrics_host, registry=registry(settings.redis_url, directory)
    )
    log.info("worker metrics on http://%s:%d/metrics", settings.metrics_host, server.server_address[1])
    while True:
        time.sleep(3600)
