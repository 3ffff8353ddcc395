"""Write the configuration reference of the documentation site from the settings object itself
(docs/operations/configuration.md): one table per section, each setting's environment variable,
default and description, so the page cannot drift from the code. `--check` fails when the
committed page differs (the suite runs it).

    uv run python scripts/docs_reference.py [--check]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from generated_page import run
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "operations" / "configuration.md"

INTRO = """# Configuration reference

Every setting is an environment variable (the names below) and a flag of every `samsvc` command
(`--grpc-port 50051`: lower case, dashes); a flag wins over the environment, which wins over the
defaults. Lists are comma separated. The settings are one typed object in sections
(`src/samsvc/config/`, a module per section); this page is generated from it
(`uv run python scripts/docs_reference.py`), so the names, defaults and descriptions here are the
code's. Secrets (`ADMIN_JWT_KEY`, `LABEL_STUDIO_API_KEY`, `WEBHOOK_SECRET`, Redis's password) can
be given as files instead (`*_FILE`, for compose and Kubernetes secrets), and never appear in a log
line or an error.

The command-line client has settings of its own (`SAMSVC_SERVER`, `SAMSVC_API_KEY`, ...): see
[the client guide](../guides/client.md).
"""


#: Each section's heading on the page (its class docstring follows it).
TITLES = {
    "ProcessSettings": "Process",
    "ModelSettings": "Models",
    "LimitSettings": "Limits",
    "CacheSettings": "Caches and image sessions",
    "AuthSettings": "Authentication",
    "StorageSettings": "Storage and exports",
    "JobSettings": "Batch jobs and workers",
    "WebhookSettings": "Webhooks",
    "GatewaySettings": "Gateway (Envoy) and label tools",
}


def shown_default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if isinstance(value, SecretStr):
        return "(empty)" if not value.get_secret_value() else "(set)"
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value) if value else "(none)"
    if value == "":
        return "(empty)"
    if isinstance(value, int) and value >= 1 << 20 and value % (1 << 20) == 0:
        return f"{value} ({value >> 20} MiB)"
    return str(value)


def render() -> str:
    from samsvc.config import Settings
    from samsvc.config.settings import SECTIONS

    parts = [INTRO]
    listed: set[str] = set()
    for section in SECTIONS:
        parts.append(f"\n## {TITLES[section.__name__]}\n\n{' '.join((section.__doc__ or '').split())}\n")
        parts.append("\n| variable | default | meaning |\n|---|---|---|\n")
        for name, field in section.model_fields.items():
            listed.add(name)
            description = (field.description or "").replace("|", "\\|")
            parts.append(f"| `{name.upper()}` | {shown_default(field)} | {description} |\n")
    missing = set(Settings.model_fields) - listed
    if missing:
        raise SystemExit(f"settings in no section: {sorted(missing)}")
    return "".join(parts)


def main() -> int:
    return run(PAGE, render, "docs_reference.py", __doc__)


if __name__ == "__main__":
    raise SystemExit(main())
