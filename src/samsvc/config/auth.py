"""Who may call: API keys and admin tokens.
Fields of samsvc.config.settings.Settings (each an environment variable in upper case)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode

from samsvc.config.fields import split_commas


class AuthSettings(BaseSettings):
    """Who may call: API keys and admin tokens."""

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

    @field_validator("api_keys", "admin_jwt_algorithms", mode="before")
    @classmethod
    def _split_auth_lists(cls, value: Any) -> Any:
        return split_commas(value)
