"""The client commands' settings (SAMSVC_* variables) and the `--kebab-case` flags every settings
object gets on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args, get_origin

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ClientSettings(BaseSettings):
    """How the client commands (`samsvc segment`, `batch`, `jobs`) reach a server. Environment
    variables carry the SAMSVC_ prefix (SAMSVC_SERVER, SAMSVC_API_KEY, ...); flags win."""

    model_config = SettingsConfigDict(env_prefix="SAMSVC_", case_sensitive=False, extra="ignore")

    server: str = Field("127.0.0.1:50051", description="gRPC address of the server (or of Envoy).")
    api_key: str = Field("", description="API key sent as `authorization: Bearer <key>`.")
    tls: bool = Field(False, description="Connect with TLS.")
    ca_file: Path | None = Field(None, description="PEM root certificates for TLS; none: the system's.")
    timeout_s: float = Field(600.0, gt=0, description="Deadline of each unary call, in seconds.")


def add_settings_flags(
    parser: argparse.ArgumentParser, model: type[BaseSettings], title: str, env_prefix: str = ""
) -> None:
    """A `--kebab-case` flag for every field of `model` (default None: the environment decides)."""
    group = parser.add_argument_group(title)
    for name, info in model.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{info.description} [env {env_prefix}{name.upper()}]"
        annotation = info.annotation
        if annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(annotation) is list or list in get_args(annotation):
            group.add_argument(flag, dest=name, default=None, metavar="A,B", help=help_text)
        else:
            group.add_argument(flag, dest=name, default=None, metavar=name.upper(), help=help_text)
