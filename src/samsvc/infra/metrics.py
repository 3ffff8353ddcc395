"""Prometheus metrics of a samsvc process, served on an admin port (METRICS_HOST:METRICS_PORT,
loopback by default and never routed through Envoy).

The default registry also carries the client library's process metrics (CPU seconds, resident
memory, open files) and Python's garbage collector counts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

#: Seconds buckets for requests and images: SAM on a CPU takes seconds to minutes.
TIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)

REQUESTS = Counter("samsvc_requests_total", "gRPC calls by method and status code.", ["rpc", "code"])
REQUEST_SECONDS = Histogram("samsvc_request_seconds", "gRPC call duration by method.", ["rpc"], buckets=TIME_BUCKETS)
IMAGE_SECONDS = Histogram(
    "samsvc_image_seconds", "Seconds to segment one image, by model.", ["model"], buckets=TIME_BUCKETS
)
MODEL_LOAD_SECONDS = Gauge(
    "samsvc_model_load_seconds", "Seconds the last load of a model took.", ["model"], multiprocess_mode="max"
)
CACHE_REQUESTS = Counter("samsvc_cache_requests_total", "Cache lookups by cache and outcome.", ["cache", "outcome"])
JOBS_SUBMITTED = Counter("samsvc_jobs_submitted_total", "Jobs accepted, by type.", ["type"])
IMAGES = Counter("samsvc_images_total", "Batch images recorded by workers, by model and outcome.", ["model", "outcome"])
JOBS_ENDED = Counter("samsvc_jobs_ended_total", "Jobs that reached an end state, by state.", ["status"])
RECONCILER_SWEEPS = Counter(
    "samsvc_reconciler_sweeps_total", "Reconciler sweeps of the jobs that have not ended, by outcome.", ["outcome"]
)
RECONCILER_REPAIRS = Counter(
    "samsvc_reconciler_repairs_total",
    "What the reconciler did: image_requeued, image_failed, job_finished, retry_queued, ending_finished.",
    ["action"],
)


class _CallbackGauges(Collector):
    """Gauges computed at scrape time (queue depth, GPU memory)."""

    def __init__(self) -> None:
        self.queue_depth: Callable[[], dict[str, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.queue_depth is not None:
            family = GaugeMetricFamily(
                "samsvc_queue_depth", "Images waiting in the queue, by priority.", labels=["priority"]
            )
            try:
                for priority, depth in self.queue_depth().items():
                    family.add_metric([priority], depth)
            except Exception as exc:  # noqa: BLE001 (a scrape must not fail because Redis is away)
                log.warning("queue depth unavailable for metrics: %s", exc)
            yield family
        # torch as this process already has it: a process that never imported it (the worker's
        # webhook process) has no GPU memory to report, and a scrape must not load it.
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu = GaugeMetricFamily("samsvc_gpu_memory_allocated_bytes", "GPU memory allocated by this process.")
            gpu.add_metric([], torch.cuda.memory_allocated())
            yield gpu


CALLBACKS = _CallbackGauges()
REGISTRY.register(CALLBACKS)


def serve_metrics(host: str, port: int) -> int:
    """Start the metrics HTTP server in a background thread; returns its port (0 picks one)."""
    server, _thread = start_http_server(port, addr=host)
    bound = int(server.server_address[1])
    log.info("metrics on http://%s:%d/metrics", host, bound)
    return bound
