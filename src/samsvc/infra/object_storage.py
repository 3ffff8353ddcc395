"""Where bytes live outside the process: a local folder or an S3-compatible bucket, and the one
S3 client factory (timeouts, retries, endpoint, credentials from the standard AWS chain: the
environment, a profile, an instance or pod role; never from a request) every S3 user goes
through: the blob store, result exports and checkpoint downloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from samsvc.errors import ConfigurationError, Unavailable

#: Seconds a connect or a read to object storage may take.
DEFAULT_S3_TIMEOUT_S = 10.0
#: Attempts per S3 request (botocore's standard retry mode: backoff with jitter).
DEFAULT_S3_MAX_ATTEMPTS = 3
#: URL schemes a storage setting accepts besides a plain path.
SCHEMES = ("s3", "file")


@dataclass(frozen=True)
class StorageLocation:
    """A parsed location: `path` for a folder, or `bucket` and `prefix` (no trailing slash)."""

    path: Path | None = None
    bucket: str = ""
    prefix: str = ""

    @property
    def is_s3(self) -> bool:
        return self.path is None

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def parse_location(value: str | Path, setting: str) -> StorageLocation:
    """A folder path, `file://` URL or `s3://bucket[/prefix]`; anything else with a scheme is a
    ConfigurationError naming `setting` (a typo must not become a folder called `s3x:`)."""
    if isinstance(value, Path):
        return StorageLocation(path=value)
    parsed = urlparse(value)
    # One letter before ':' is a Windows drive, not a scheme.
    if not parsed.scheme or len(parsed.scheme) == 1:
        return StorageLocation(path=Path(value))
    if parsed.scheme not in SCHEMES:
        raise ConfigurationError(
            f"{setting}: unknown scheme {parsed.scheme!r} in {value!r}; use a path, file:// or s3://bucket/prefix"
        )
    if parsed.scheme == "file":
        return StorageLocation(path=Path(parsed.path))
    if not parsed.netloc:
        raise ConfigurationError(f"{setting}: {value!r} names no bucket (s3://bucket/prefix)")
    return StorageLocation(bucket=parsed.netloc, prefix=parsed.path.strip("/"))


@dataclass(frozen=True)
class S3Options:
    """How to reach object storage and write to it (Settings' S3_* fields)."""

    endpoint_url: str | None = None
    region: str | None = None
    timeout_s: float = DEFAULT_S3_TIMEOUT_S
    max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS
    #: Server-side encryption of written objects: "" (bucket default), "AES256" or "aws:kms".
    sse: str = ""
    sse_kms_key_id: str | None = None
    #: Storage class of written objects ("" for the bucket's default, e.g. STANDARD_IA).
    storage_class: str = ""

    def put_args(self) -> dict[str, str]:
        """Extra put_object arguments for encryption and storage class."""
        args: dict[str, str] = {}
        if self.sse:
            args["ServerSideEncryption"] = self.sse
            if self.sse == "aws:kms" and self.sse_kms_key_id:
                args["SSEKMSKeyId"] = self.sse_kms_key_id
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        return args


def s3_client(options: S3Options) -> Any:
    """A boto3 S3 client with the options' endpoint, timeouts and retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=options.timeout_s,
        read_timeout=options.timeout_s,
        retries={"max_attempts": options.max_attempts, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=options.endpoint_url or None, region_name=options.region, config=config)


def is_missing(exc: Exception) -> bool:
    """Whether a botocore error says the object (or bucket) does not exist."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return code in {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


def unavailable(what: str) -> Unavailable:
    """The error for object storage that did not answer (or refused us): retry later."""
    return Unavailable(f"{what} is unreachable; retry shortly", reason="STORE_UNAVAILABLE")
