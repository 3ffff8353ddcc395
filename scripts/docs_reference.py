"""Write the configuration reference of the documentation site from the settings object itself
(docs/operations/configuration.md): one table per section, each setting's environment variable,
default and description, so the page cannot drift from the code. `--check` fails when the
committed page differs (the suite runs it).

    uv run python scripts/docs_reference.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed page is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE.relative_to(ROOT)} is stale: run uv run python scripts/docs_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    PAGE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
