"""Write the blocking client from the asyncio one, as httpcore does: one source of every client
behaviour (src/samsvc/client/aio.py), the sync module (src/samsvc/client/sync.py) made from it by
token rewrites, then ruff's import sorting and formatting so the result reads like written code.

    uv run python scripts/unasync.py            # rewrite sync.py
    uv run python scripts/unasync.py --check    # exit 1 when sync.py is stale

scripts/generate.py runs it too (and its --check), and the suite runs that check.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "samsvc" / "client" / "aio.py"
TARGET = ROOT / "src" / "samsvc" / "client" / "sync.py"

DOCSTRING = '''"""The blocking client. Written by scripts/unasync.py from samsvc/client/aio.py: edit that file,
then run `uv run python scripts/generate.py`.

from samsvc.client import Client

with Client("127.0.0.1:50051", api_key="sk_...") as client:
    result = client.segment("photo.jpg", points_per_side=16)
    masks = result.arrays()                     # N x H x W bool
    for outcome in client.segment_batch(["a.jpg", "b.jpg"]):
        print(outcome.index, len(outcome.result.masks) if outcome.ok else outcome.error)
"""'''

#: Whole-token rewrites, in order.
REWRITES = (
    (r"^import asyncio\n", ""),
    (r"\bAwaitable, ", ""),
    (r"Callable\[\.\.\., Awaitable\[T\]\]", "Callable[..., T]"),
    (r"\basync def\b", "def"),
    (r"\basync for\b", "for"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncClient\b", "Client"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\bgrpc\.aio\.", "grpc."),
    (r"\basyncio\.sleep\b", "time.sleep"),
)


def _ruff() -> str:
    found = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if found is None:
        raise SystemExit("ruff is not installed: run `uv sync` first")
    return found


def unasync(source: str) -> str:
    """The blocking module for the asyncio module `source`."""
    body = source.split('"""', 2)[2]  # drop the module docstring: the sync one says what it is
    for pattern, replacement in REWRITES:
        body = re.sub(pattern, replacement, body, flags=re.MULTILINE)
    if re.search(r"\basync\b|\bawait\b|\basyncio\b|Awaitable", body):
        raise SystemExit(f"{SOURCE.name} uses an async construct the rewrites do not cover")
    text = DOCSTRING + body
    name = str(TARGET.relative_to(ROOT))
    ruff = _ruff()
    # Imports the rewrites left unsorted or unused, `yield from` where a loop only re-yields.
    fix = [ruff, "check", "--fix", "--unsafe-fixes", "--select", "I,F401,UP028", "--quiet"]
    for command in (fix, [ruff, "format", "--quiet"]):
        text = subprocess.run(
            [*command, "--stdin-filename", name, "-"], input=text, capture_output=True, text=True, check=True, cwd=ROOT
        ).stdout
    return text


def is_fresh() -> bool:
    return TARGET.read_text(encoding="utf-8") == unasync(SOURCE.read_text(encoding="utf-8"))


def write() -> None:
    TARGET.write_text(unasync(SOURCE.read_text(encoding="utf-8")), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    if parser.parse_args(argv).check:
        if not is_fresh():
            print(f"{TARGET.relative_to(ROOT)} is stale: run `uv run python scripts/generate.py`", file=sys.stderr)
            return 1
        return 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
