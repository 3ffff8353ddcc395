"""Webhooks: their signing key, the hosts they may reach, retries and threads.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from samsvc.config.fields import split_commas


class WebhookSettings(BaseSettings):
    """Webhooks: their signing key, the hosts they may reach, retries and threads."""

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

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_webhooks_lists(cls, value: Any) -> Any:
        return split_commas(value)
