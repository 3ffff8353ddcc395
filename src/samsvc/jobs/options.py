"""How a process's job machinery is configured, handed over by the settings (the jobs, webhooks
and storage sections, samsvc.config): the store and broker, retries and leases, recovery, the
worker threads, webhooks, and where images and exports are written."""

from __future__ import annotations

from dataclasses import dataclass, field

from samsvc.infra.object_storage import S3Options
from samsvc.validation.export import ExportRoots
from samsvc.validation.image import ImageLimits


@dataclass(frozen=True)
class WebhookOptions:
    """Webhook deliveries: signing key, hosts allowed although not public, retries, threads."""

    #: HMAC-SHA256 key signing the bodies; empty: unsigned.
    secret: str = field(default="", repr=False)
    allowed_hosts: tuple[str, ...] = ()
    max_retries: int = 8
    min_backoff_ms: int = 2_000
    timeout_s: float = 10.0
    threads: int = 2

    @property
    def max_backoff_ms(self) -> int:
        """The longest pause between attempts: six doublings of the first."""
        return self.min_backoff_ms * 64


@dataclass(frozen=True)
class WorkerOptions:
    """The threads that run images, and how the broker notices dead workers."""

    threads: int = 1
    poll_ms: int = 200
    queue_prefetch: int = 1
    heartbeat_timeout_ms: int = 60_000
    maintenance_chance: int = 10_000


@dataclass(frozen=True)
class JobOptions:
    """Everything the job machinery of a process reads from the settings."""

    #: Redis for the store and the broker; None: everything in this process (memory store,
    #: Dramatiq's stub broker).
    redis_url: str | None
    #: Blob store: a folder or an s3://bucket/prefix.
    data_dir: str
    s3: S3Options
    export_roots: ExportRoots
    #: What a batch image may be (checked again when it runs: its blob may be replaced).
    image_limits: ImageLimits
    #: samsvc's mask generator (True) or segment-anything's own.
    fast_engine: bool = True
    webhooks: WebhookOptions = WebhookOptions()
    worker: WorkerOptions = WorkerOptions()
    retention_s: int = 86_400
    max_retries: int = 5
    min_backoff_ms: int = 1_000
    max_backoff_ms: int = 60_000
    time_limit_s: int = 3_600
    lease_s: float = 30.0
    store_retry_s: float = 300.0
    reconcile_interval_s: float = 30.0
    reconcile_grace_s: float = 60.0
    cancel_poll_interval_s: float = 0.5
    #: Keep each Segment call's masks with its job record.
    single_job_results: bool = False
    #: Batch images one key may have waiting or running; 0: no limit.
    max_queued_images_per_key: int = 1_000
    #: Fault injection (samsvc.jobs.failpoints); empty in production.
    failpoints: str = ""

    @property
    def in_process(self) -> bool:
        """Without Redis, jobs run inside this process (the in-process mode)."""
        return not self.redis_url

    def backoff_ms(self, failures: int) -> int:
        """Pause before an image's next attempt after `failures` failures (doubling, capped)."""
        return int(min(self.min_backoff_ms * 2 ** max(failures - 1, 0), self.max_backoff_ms))
