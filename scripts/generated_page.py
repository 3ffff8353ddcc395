"""The command line of a script that writes a documentation page from the code: write it, or with
`--check` exit 1 when the committed page differs (the suite runs the check)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(page: Path, render: Callable[[], str], script: str, description: str | None) -> int:
    """Write `render()` to `page`, or check it is what is committed; `script` names the command."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="fail if the committed page is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not page.exists() or page.read_text(encoding="utf-8") != text:
            print(f"{page.relative_to(ROOT)} is stale: run uv run python scripts/{script}", file=sys.stderr)
            return 1
        return 0
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
    return 0
