"""The one typed settings object. Every field is an environment variable (upper case) and a
CLI flag (`--kebab-case`); flags win over the environment, which wins over the defaults."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from samsvc.config.gateway import GatewaySettings
from samsvc.errors import ConfigurationError
from samsvc.infra.object_storage import DEFAULT_S3_MAX_ATTEMPTS, DEFAULT_S3_TIMEOUT_S, S3Options, parse_location
from samsvc.validation.export import ExportRoots

#: 10 MiB: the design document's per-image limit.
DEFAULT_MAX_IMAGE_BYTES = 10 * 1024 * 1024
#: Longest image side accepted, read from the header before decoding.
DEFAULT_MAX_IMAGE_SIDE = 4096
#: 100 MiB: a batch request carries many images in one message.
DEFAULT_MAX_BATCH_BYTES = 100 * 1024 * 1024
#: The design document's batch size.
DEFAULT_MAX_BATCH_IMAGES = 50
#: Room for the protobuf fields around the image in one gRPC message.
MESSAGE_OVERHEAD_BYTES = 1024 * 1024


class Settings(GatewaySettings):
    """Configuration of a samsvc process."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server binds.")
    grpc_port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    model_dir: Path = Field(Path("./models"), description="Directory holding model checkpoints.")
    models_file: Path | None = Field(None, description="TOML file registering extra models.")
    default_model: str = Field("vit_h", description="Model used when a request names none.")
    preload: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Models loaded at start, comma separated; 'all' for every one present."
    )
    auto_download: bool = Field(
        False, description="Download absent built-in weights inside a request instead of failing."
    )
    verify_checksums: bool = Field(True, description="Check a checkpoint's SHA-256 before loading it.")
    model_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32",
        description="Inference precision for models whose MODELS_FILE entry names none (fp16/bf16 via autocast).",
    )
    torch_compile: bool = Field(
        False,
        description="torch.compile each model's encoder and decoder at load (pays on GPUs; the first call compiles).",
    )
    encoder_batch_size: int = Field(
        1,
        ge=1,
        le=64,
        description="Images encoded in one pass when threads encode at once (a worker backlog); 1: off.",
    )
    encoder_batch_wait_ms: float = Field(
        10.0, ge=0, le=1000, description="How long a batch's first image waits for others (ms)."
    )
    amg_engine: Literal["reference", "fast"] = Field(
        "fast",
        description=(
            "Mask generation: samsvc's engine (segment-anything's masks, faster; see the README's benchmarks) "
            "or segment-anything's own generator, bit for bit."
        ),
    )
    embedding_cache_bytes: int = Field(
        512 * 1024 * 1024, ge=0, description="Bytes of cached image embeddings, in memory or Redis; 0 turns it off."
    )
    embedding_cache_redis: bool = Field(
        False, description="Keep image embeddings in Redis (REDIS_URL) instead of memory, shared by replicas."
    )
    result_cache_ttl_s: int = Field(3600, ge=0, description="Seconds Segment results stay cached; 0 turns it off.")
    result_cache_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Bytes of cached Segment answers, in memory or Redis; 0 turns it off."
    )
    image_session_ttl_s: int = Field(
        3600, ge=1, description="Seconds an image session lives after its last use (CreateImageSession)."
    )
    image_session_bytes: int = Field(
        512 * 1024 * 1024,
        ge=0,
        description="Bytes all image sessions may hold, in memory or Redis (least recently used go first); 0: off.",
    )
    image_session_bytes_per_key: int = Field(
        128 * 1024 * 1024,
        ge=0,
        description="Bytes one API key's image sessions may hold (its own oldest go first); 0: only the total.",
    )
    decoder_dir: Path | None = Field(
        None, description="Where exported ONNX decoders are kept (by checkpoint digest); unset: MODEL_DIR/onnx."
    )
    max_workers: int = Field(
        2, ge=1, le=256, description="Inference slots per process; a request takes one per PROMPTS_PER_SLOT prompts."
    )
    max_prompts_per_image: int = Field(
        16_384,
        ge=1,
        description="Most point prompts one image may ask for (points_per_side squared over all crop layers).",
    )
    prompts_per_slot: int = Field(
        4_096, ge=1, description="Prompts one inference slot covers; heavier requests take more slots (at most all)."
    )
    max_queue: int = Field(16, ge=0, le=10_000, description="Requests allowed to wait for an inference slot.")
    single_job_results: bool = Field(
        False, description="Keep each Segment call's masks with its job record (otherwise its status only)."
    )
    max_inferences_per_key: int = Field(
        4,
        ge=0,
        description="Segment/SegmentPrompts calls one API key may have running or waiting per server; 0: no limit.",
    )
    max_queued_images_per_key: int = Field(
        1_000, ge=0, description="Batch images one API key may have waiting or running at once; 0: no limit."
    )
    max_streams_per_key: int = Field(
        32, ge=1, le=100_000, description="Job streams (WatchJob, SegmentBatch) one API key may hold open per server."
    )
    device: str = Field("auto", description="Torch device: auto (cuda when present, else cpu), cpu, cuda, cuda:N.")
    max_image_bytes: int = Field(DEFAULT_MAX_IMAGE_BYTES, ge=1, description="Largest image accepted, in bytes.")
    max_image_side: int = Field(DEFAULT_MAX_IMAGE_SIDE, ge=1, description="Longest image side accepted, in pixels.")
    shutdown_grace: float = Field(30.0, ge=0, description="Seconds in-flight requests get to finish on SIGTERM.")
    drain_delay: float = Field(
        0.0, ge=0, description="Seconds health reports NOT_SERVING before the server stops taking requests."
    )
    log_level: str = Field("INFO", description="Logging level.")
    log_format: Literal["json", "text"] = Field("json", description="Log lines as JSON objects, or as text.")
    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus metrics endpoint.")
    metrics_port: int = Field(
        9464, ge=-1, le=65535, description="Port of the Prometheus metrics endpoint; 0 picks one, -1 turns it off."
    )
    worker_metrics_port: int = Field(
        9465, ge=-1, le=65535, description="Metrics port of `samsvc worker` (all its processes); 0 picks one, -1: off."
    )

    # Authentication.
    api_keys_file: Path | None = Field(None, description="File of NAME:SHA256 API key entries (`samsvc keys create`).")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="NAME:SHA256 API key entries, comma separated; none: auth off."
    )
    auth_protect_health: bool = Field(False, description="Require a key for health and reflection too.")
    allow_unauthenticated: bool = Field(
        False, description="Allow serving on a non-loopback address without API keys (refused otherwise)."
    )
    admin_jwt_key: SecretStr = Field(
        SecretStr(""),
        description="Key verifying admin tokens: an HMAC secret or a PEM public key; empty: admin operations off.",
    )
    admin_jwt_key_file: Path | None = Field(
        None, description="File holding ADMIN_JWT_KEY (a compose or Kubernetes secret); wins over the variable."
    )
    admin_jwt_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["HS256"], description="JWT algorithms accepted for admin tokens, comma separated."
    )
    admin_jwt_claim: str = Field("samsvc_admin", description="Claim that must be true in an admin token.")
    admin_jwt_audience: str = Field("", description="Audience admin tokens must name; empty: not checked.")
    admin_jwt_issuer: str = Field("", description="Issuer admin tokens must name; empty: not checked.")
    rate_limit_requests_per_minute: int = Field(
        0, ge=0, description="Calls each API key may make per minute (Redis-shared when REDIS_URL); 0: no limit."
    )
    rate_limit_images_per_minute: int = Field(
        0, ge=0, description="Images each API key may send per minute (Segment: 1, batch: each); 0: no limit."
    )

    # Batch jobs.
    redis_url: str | None = Field(
        None,
        description="Redis for the job store and the Dramatiq broker; unset runs everything in-process.",
        repr=False,  # it may carry the password
    )
    redis_password_file: Path | None = Field(
        None, description="File holding Redis's password (a compose or Kubernetes secret), added to REDIS_URL."
    )
    data_dir: str = Field(
        "./data",
        description=(
            "Blob store for batch images, shared by servers and workers: a folder, or s3://bucket/prefix "
            "(S3_* settings; credentials from the standard AWS chain). Another URL scheme stops start-up."
        ),
    )
    export_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders a batch's export_url may write into (each key under its own subfolder), comma separated.",
    )
    export_buckets: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Buckets (`bucket` or `bucket/prefix`) a batch's export_url may write into, comma separated.",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 API endpoint (MinIO, another region's or a test server); unset uses AWS's."
    )
    s3_region: str | None = Field(None, description="S3 region; unset takes the AWS chain's (AWS_REGION, profile).")
    s3_timeout_s: float = Field(DEFAULT_S3_TIMEOUT_S, gt=0, description="Seconds an S3 connect or read may take.")
    s3_max_attempts: int = Field(DEFAULT_S3_MAX_ATTEMPTS, ge=1, le=20, description="Attempts per S3 request.")
    s3_sse: Literal["", "AES256", "aws:kms"] = Field(
        "", description="Server-side encryption of objects samsvc writes; empty leaves the bucket's default."
    )
    s3_sse_kms_key_id: str | None = Field(None, description="KMS key for S3_SSE=aws:kms; unset uses the default key.")
    s3_storage_class: str = Field(
        "", description="Storage class of objects samsvc writes (e.g. STANDARD_IA); empty for the bucket's default."
    )
    max_batch_images: int = Field(DEFAULT_MAX_BATCH_IMAGES, ge=1, le=10_000, description="Most images in one batch.")
    max_batch_bytes: int = Field(
        DEFAULT_MAX_BATCH_BYTES, ge=1, description="Largest batch request in bytes (all images together)."
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
        description="Torch CPU threads per worker thread and server lane 0; 0: CPUs / (processes x threads), all.",
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
    webhook_secret: SecretStr = Field(SecretStr(""), description="HMAC-SHA256 key signing webhook bodies.")
    webhook_secret_file: Path | None = Field(
        None, description="File holding WEBHOOK_SECRET (a compose or Kubernetes secret); wins over the variable."
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts, addresses or CIDR ranges webhooks may reach although not public, comma separated.",
    )
    webhook_max_retries: int = Field(8, ge=0, le=100, description="Retries of a failed webhook delivery.")
    webhook_min_backoff_ms: int = Field(2_000, ge=0, description="First webhook retry delay, doubling each time.")
    webhook_timeout_s: float = Field(
        10.0, gt=0, description="Seconds one webhook attempt may take in all (connect, send, answer)."
    )
    webhook_threads: int = Field(
        2, ge=1, le=256, description="Threads delivering webhooks, apart from the ones running images."
    )
    failpoints: str = Field(
        "", description="Fault injection for fault tests (JSON; see samsvc.jobs.failpoints); empty in production."
    )

    @field_validator(
        "preload",
        "webhook_allowed_hosts",
        "cors_origins",
        "api_keys",
        "admin_jwt_algorithms",
        "export_dirs",
        "export_buckets",
        mode="before",
    )
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _check_data_dir(cls, value: Any) -> Any:
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, str):
            try:
                parse_location(value, "DATA_DIR")
            except ConfigurationError as exc:
                raise ValueError(exc.message) from None
        return value

    @field_validator("export_buckets")
    @classmethod
    def _check_export_buckets(cls, value: list[str]) -> list[str]:
        try:
            ExportRoots.parse([], value)
        except ConfigurationError as exc:
            raise ValueError(exc.message) from None
        return value

    def export_roots(self) -> ExportRoots:
        """Where batch exports may be written (samsvc.validation.export)."""
        return ExportRoots.parse(self.export_dirs, self.export_buckets)

    def s3_options(self) -> S3Options:
        return S3Options(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            timeout_s=self.s3_timeout_s,
            max_attempts=self.s3_max_attempts,
            sse=self.s3_sse,
            sse_kms_key_id=self.s3_sse_kms_key_id,
            storage_class=self.s3_storage_class,
        )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value in {"auto", "cpu", "cuda", "mps"} or value.startswith("cuda:"):
            return value
        raise ValueError("must be auto, cpu, cuda, cuda:N or mps")

    @model_validator(mode="after")
    def _redis_password(self) -> Settings:
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

    def secret(self, name: Literal["admin_jwt_key", "label_studio_api_key", "webhook_secret"]) -> str:
        """A secret's value: the content of its *_FILE when set (without the final newline),
        else its variable's. Secrets are SecretStr: never in a repr, a log line or an error."""
        file: Path | None = getattr(self, f"{name}_file")
        if file is None:
            value: SecretStr = getattr(self, name)
            return value.get_secret_value()
        try:
            return file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            raise ConfigurationError(f"{name.upper()}_FILE {file} cannot be read: {exc.strerror}") from exc

    @property
    def max_message_bytes(self) -> int:
        """gRPC receive limit: the largest allowed request (one image or a batch) plus its envelope."""
        return max(self.max_image_bytes, self.max_batch_bytes) + MESSAGE_OVERHEAD_BYTES
