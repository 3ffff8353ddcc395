"""Flags every client command shares: the connection (from ClientSettings, each also an
environment variable) and the mask generation options (from SegmentOptions' descriptor)."""

from __future__ import annotations

import argparse
from typing import Any

from samsvc.client.channel import OPTION_TYPES
from samsvc.client.sync import Client
from samsvc.config import ClientSettings, add_settings_flags


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, ClientSettings, "connection (each also an environment variable)", "SAMSVC_")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mask generation (server defaults when absent)")
    for name, kind in OPTION_TYPES.items():
        parse = _boolean if kind is bool else kind
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=parse, default=None)
    group.add_argument("--model", default=None, help="model name (server default when absent)")


def _boolean(text: str) -> bool:
    """A true/false option's value (true, false, 1, 0, yes, no)."""
    lowered = text.strip().lower()
    if lowered in {"true", "1", "yes", "on"}:
        return True
    if lowered in {"false", "0", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def connect(args: argparse.Namespace) -> Client:
    """A client for the connection flags (and their environment variables)."""
    overrides = {
        name: getattr(args, name) for name in ClientSettings.model_fields if getattr(args, name, None) is not None
    }
    settings = ClientSettings(**overrides)
    return Client(
        settings.server,
        api_key=settings.api_key,
        tls=settings.tls,
        ca_file=settings.ca_file,
        timeout_s=settings.timeout_s,
    )


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    """The mask generation options given on the command line."""
    return {name: getattr(args, name) for name in OPTION_TYPES if getattr(args, name, None) is not None}
