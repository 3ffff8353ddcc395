"""mkdocs hooks for the documentation site: the site serves mermaid itself (the diagrams of the
data flow), copied from the pinned npm package in scripts/docs_assets, so a reader offline or
behind a proxy sees them and no page loads a script from a CDN. mkdocs-material uses a mermaid
already on the page and fetches its own from unpkg.com only when there is none.

    npm ci --prefix scripts/docs_assets    # once, before `mkdocs build` or `mkdocs serve`
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
MERMAID = ROOT / "scripts" / "docs_assets" / "node_modules" / "mermaid" / "dist" / "mermaid.min.js"
#: Where the site serves it (mkdocs.yml's extra_javascript names the same path).
MERMAID_URL = "javascripts/mermaid.min.js"


def on_files(files: Files, config: Any) -> Files:
    if not MERMAID.is_file():
        raise PluginError(f"{MERMAID.relative_to(ROOT)} is missing: run `npm ci --prefix scripts/docs_assets`")
    files.append(File.generated(config, MERMAID_URL, abs_src_path=str(MERMAID)))
    return files
