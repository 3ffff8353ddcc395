"""Batch jobs: Redis, retries, leases, recovery, and the worker processes.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings


class JobSettings(BaseSettings):
    """Batch jobs: Redis, retries, leases, recovery, and the worker processes."""

    redis_url: str | None = Field(
        None,
        description="Redis for the job store and the Dramatiq broker; unset runs everything in-process.",
        repr=False,  # it may carry the password
    )
    redis_password_file: Path | None = Field(
        None, description="File holding Redis's password (a compose or Kubernetes secret), added to REDIS_URL."
    )
    single_job_results: bool = Field(
        False, description="Keep each Segment call's masks with its job record (otherwise its status only)."
    )
    job_retention_s: int = Field(86_400, ge=60, description="Seconds jobs, results and events are kept.")
    job_max_retries: int = Field(5, ge=0, le=100, description="Retries of an image after a transient failure.")
    job_min_backoff_ms: int = Field(1_000, ge=0, description="First retry delay of an image, doubling each time.")
    job_max_backoff_ms: int = Field(60_000, ge=0, description="Longest retry delay of an image.")
    job_time_limit_s: int = Field(
        3_600, ge=1, description="Longest one image may run; past it the image fails (IMAGE_TIME_LIMIT)."
    )
    job_lease_s: float = Field(
        30.0,
        gt=0,
        le=3_600,
        description="How long a worker's hold on an image lasts unless renewed (every third of it).",
    )
    job_store_retry_s: float = Field(
        300.0, ge=0, description="How long a worker retries recording an image while the job store is unreachable."
    )
    reconcile_interval_s: float = Field(
        30.0, gt=0, description="Seconds between the reconciler's sweeps of the jobs that have not ended."
    )
    reconcile_grace_s: float = Field(
        60.0,
        ge=0,
        description="How long an image may have no result, no holder and no queued message before it is queued again.",
    )
    worker_processes: int = Field(1, ge=1, le=256, description="Worker processes started by `samsvc worker`.")
    worker_threads: int = Field(1, ge=1, le=256, description="Threads per worker process (images at once).")
    torch_threads: int = Field(
        0,
        ge=0,
        le=1024,
        description=(
            "Torch CPU threads of each worker thread and of the server's inference lane 0; 0: CPUs / "
            "(processes x threads) for workers, all the CPUs for the server's lane 0."
        ),
    )
    worker_poll_ms: int = Field(
        200, ge=10, le=10_000, description="Longest pause of an idle worker between looks at its queues (ms)."
    )
    queue_prefetch: int = Field(
        1, ge=1, le=1000, description="Messages a worker takes ahead per queue; 1 keeps priorities strict."
    )
    broker_heartbeat_timeout_ms: int = Field(
        60_000, ge=1_000, description="A worker silent this long is dead and its images are requeued."
    )
    broker_maintenance_chance: int = Field(
        10_000, ge=1, le=1_000_000, description="Broker calls per million that requeue dead workers' images."
    )
    cancel_poll_interval_s: float = Field(
        0.5, gt=0, description="How often a running image checks whether its job was cancelled."
    )
    failpoints: str = Field(
        "", description="Fault injection for fault tests (JSON; see samsvc.jobs.failpoints); empty in production."
    )

    @model_validator(mode="after")
    def _redis_password(self) -> JobSettings:
        """REDIS_URL with the password of REDIS_PASSWORD_FILE (unless the URL carries one)."""
        if self.redis_password_file is None or not self.redis_url:
            return self
        parts = urlsplit(self.redis_url)
        if parts.password:
            return self
        try:
            password = self.redis_password_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(f"REDIS_PASSWORD_FILE {self.redis_password_file} cannot be read: {exc.strerror}") from None
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        self.redis_url = urlunsplit(parts._replace(netloc=netloc))
        return self
