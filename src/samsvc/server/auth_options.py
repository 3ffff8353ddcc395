"""Who may call: the options samsvc.server.auth's Authenticator is built from (the settings' auth
section, samsvc.config.auth, hands them over; kept apart so the settings import no gRPC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class AuthOptions:
    """Who may call (the settings' auth section, samsvc.config.auth, hands it over)."""

    api_keys_file: Path | None = None
    #: NAME:SHA256 entries.
    api_keys: tuple[str, ...] = ()
    protect_health: bool = False
    allow_unauthenticated: bool = False
    #: An HMAC secret or a PEM public key; empty: admin operations off.
    admin_jwt_key: str = field(default="", repr=False)
    admin_jwt_algorithms: tuple[str, ...] = ("HS256",)
    admin_jwt_claim: str = "samsvc_admin"
    admin_jwt_audience: str = ""
    admin_jwt_issuer: str = ""
