"""Where batch images and exports are written: DATA_DIR, export folders and buckets, S3.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

from samsvc.config.fields import split_commas
from samsvc.errors import ConfigurationError
from samsvc.infra.object_storage import DEFAULT_S3_MAX_ATTEMPTS, DEFAULT_S3_TIMEOUT_S, S3Options, parse_location
from samsvc.validation.export import ExportRoots


class StorageSettings(BaseSettings):
    """Where batch images and exports are written: DATA_DIR, export folders and buckets, S3."""

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

    @field_validator("export_dirs", "export_buckets", mode="before")
    @classmethod
    def _split_storage_lists(cls, value: Any) -> Any:
        return split_commas(value)

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
        """How every S3 client of the process connects (blob store, exports, s3:// weights)."""
        return S3Options(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            timeout_s=self.s3_timeout_s,
            max_attempts=self.s3_max_attempts,
            sse=self.s3_sse,
            sse_kms_key_id=self.s3_sse_kms_key_id,
            storage_class=self.s3_storage_class,
        )
